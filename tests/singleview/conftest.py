"Fixtures of the single-view tests: their object set (the default one, tests/conftest.py) and one batch renderer of it."
import pytest


@pytest.fixture(scope="session")
def objects(default_objects):
    return default_objects


@pytest.fixture(scope="session")
def renderer(objects):
    from cosypose_nb.rendering.batch import BatchRenderer
    with BatchRenderer(objects, n_workers=1, backend="tiny") as r:
        yield r
