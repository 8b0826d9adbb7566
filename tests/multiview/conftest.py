"Fixtures of the multi-view tests; their helpers (`helpers.py`) and the reference implementations (`reference.py`) sit next to them."
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))          # `import helpers`, `import reference` (importlib import mode)


@pytest.fixture(scope="module")
def objects():
    "The synthetic object set of the multi-view problems."
    from cosypose_nb.synthetic.mvproblems import make_object_set
    return make_object_set()


@pytest.fixture(scope="module")
def default_db():
    "The default (mesh) object set, 500 points per object."
    from cosypose_nb.datasets.objects import load_default_objects
    return load_default_objects(n_points=500)
