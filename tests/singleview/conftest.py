"Fixtures of the single-view tests: the default object set and one batch renderer of it for the session."
import pytest


@pytest.fixture(scope="session")
def objects():
    from cosypose_nb.datasets.objects import load_default_objects
    return load_default_objects()


@pytest.fixture(scope="session")
def renderer(objects):
    from cosypose_nb.rendering.batch import BatchRenderer
    with BatchRenderer(objects, n_workers=1, backend="tiny") as r:
        yield r
