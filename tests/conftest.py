"""Fixtures shared by the test files (tests/ mirrors the package tree: tests/<subpackage>/test_<module>.py); a part's
own shared fixtures are in tests/<part>/conftest.py. Session-scoped and read-only: a test that changes one of these
folders copies it into its `tmp_path` first. Assertions use pytest's and fastcore's vocabulary (`fastcore.test`:
`test_eq`, `test_close`, `test_fail`), as the notebooks do."""
import pytest


@pytest.fixture(scope="session")
def default_objects():
    "The embedded default object set (10 objects built from pybullet_data's meshes)."
    from cosypose_nb.datasets.objects import load_default_objects
    return load_default_objects()


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory):
    "A toy BOP dataset (`make_toy_dataset`: 3 scenes x 4 images, 3 objects, split 'train')."
    from cosypose_nb.datasets.bop import make_toy_dataset
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", n_scenes=3, n_images=4, n_objects=3, split="train")


@pytest.fixture(scope="session")
def recorded_dataset(tmp_path_factory):
    "A recorded mini-dataset: 3 scenes x 2 views at 120 x 160 of the default objects, seed 1, in process."
    from cosypose_nb.synthetic.recording import record
    out = tmp_path_factory.mktemp("rec") / "rec"
    record(out, n_scenes=3, n_views=2, resolution=(120, 160), seed=1, workers=0, progress=False)
    return out
