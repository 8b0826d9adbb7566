"The scene explorer headless: its widgets build, their callbacks run stages 2 and 3 again and redraw the figures."
import numpy as np
import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.synthetic.mvproblems import make_object_set, make_problem
import cosypose_nb.viz.explorer as explorer_mod
from cosypose_nb.viz.explorer import ExplorerScene, SceneExplorer, group_views


@pytest.fixture(scope="module")
def objects():
    return make_object_set(n_points=128, n_surface_points=None)


@pytest.fixture(scope="module")
def problems(objects):
    return {"a": make_problem(4, 4, seed=11, objects=objects), "b": make_problem(5, 4, seed=12, objects=objects)}


@pytest.fixture
def spy(monkeypatch):
    "Records the settings of every predictor run of the explorer."
    calls = []
    real = explorer_mod.run_predictor
    def run(candidates, K, objects, **settings):
        calls.append(dict(settings, n_views=len(K), n_cand=len(candidates)))
        return real(candidates, K, objects, **settings)
    monkeypatch.setattr(explorer_mod, "run_predictor", run)
    return calls


def test_widgets_build(problems, objects, spy):
    ex = SceneExplorer.from_scenes(problems, objects, n_points=50)
    assert len(spy) == 1 and spy[0]["n_views"] == 4                      # the first scene with all its views
    assert list(ex.w_scene.options) == ["a", "b"] and ex.w_nviews.value == 4 and ex.w_first.max == 3
    assert [v for _, v in ex.w_view.options] == [0, 1, 2, 3]
    assert len(ex.w_object.options) == ex.group.prediction.n_objects + 1
    assert ex.fig_view is not None and ex.fig_3d is not None
    assert "objects" in ex.w_summary.value and "<table" in ex.w_summary.value
    bundle = ex.widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "Plotly.newPlot" in bundle["text/html"]
    assert ex._repr_mimebundle_().keys() == bundle.keys()


def test_callbacks_rerun_and_redraw(problems, objects, spy):
    ex = SceneExplorer.from_scenes(problems, objects, n_points=50)
    fig3d, figview = ex.fig_3d, ex.fig_view
    # the threshold slider re-runs stages 2 and 3 with the new threshold (cm on the slider, m to the predictor)
    ex.w_ransac_threshold.value = 1.0
    assert len(spy) == 2 and abs(spy[-1]["ransac_threshold"] - 0.01) < 1e-12
    assert spy[-1]["ransac_threshold_rel"] < spy[0]["ransac_threshold_rel"]   # the relative part follows
    assert ex.fig_3d is not fig3d and ex.fig_view is not figview
    assert "stage-2 threshold 1.0 cm" in ex.w_summary.value
    # the number of views and the first view: the group wraps around
    ex.w_nviews.value = 2
    assert spy[-1]["n_views"] == 2 and ex.group.views == [0, 1]
    ex.w_first.value = 3
    assert ex.group.views == [3, 0] and [v for _, v in ex.w_view.options] == [3, 0] and ex.view in (3, 0)
    n = len(spy)
    ex.w_first.value = 0                                                  # back: the kept result, no new run
    assert len(spy) == n and ex.group.views == [0, 1]
    # another scene: all of its views
    ex.w_scene.value = "b"
    assert ex.scene_name == "b" and ex.group.views == [0, 1, 2, 3, 4] and spy[-1]["n_views"] == 5
    assert ex.w_first.max == 4 and ex.w_nviews.value == 5


def test_layers_change_the_figures(problems, objects):
    ex = SceneExplorer.from_scenes(problems, objects, n_points=50)
    p = ex.group.prediction
    placed = int(p.view_ok.sum())
    base = len(ex.fig_3d.data)
    assert base == p.n_objects + placed + 1                                # objects, cameras, candidates
    ex.w_matched.value = True
    assert len(ex.fig_3d.data) == base + (1 if len(p.matching.edges) else 0)
    assert any(t.get_text().isdigit() for t in ex.fig_view.axes[0].texts)  # stage-2 object numbers in the view
    n = len(ex.fig_3d.data)
    ex.w_truth.value = True
    assert len(ex.fig_3d.data) == n + 4 and sum(d.name.startswith("truth") for d in ex.fig_3d.data) == 4
    ex.w_scene_objects.value = False
    assert not any(d.name.startswith("#") for d in ex.fig_3d.data)
    n_coll = len(ex.fig_view.axes[0].collections)
    ex.w_cand.value = False
    assert len(ex.fig_view.axes[0].collections) < n_coll
    ex.w_scene_objects.value = True
    ex.w_object.value = 1
    assert ex.fig_3d.data[1].marker.size == 4
    v = ex.group.views[-1]
    ex.w_view.value = v
    assert ex.fig_view.axes[0].get_title().startswith(f"view {v}")


def test_from_a_prediction_with_images(problems, objects):
    "The form the demo uses: a prediction made already, the scene's images."
    from cosypose_nb.experiments.multiview import run_predictor
    prob = problems["a"]
    pred = run_predictor(prob.candidates, prob.K, objects)
    images = np.full((4, 48, 64, 3), 128, np.uint8)
    ex = SceneExplorer(pred, prob.candidates, objects, images=images, truth=prob)
    assert ex.group.prediction is pred and ex.image_size == (48, 64)
    assert ex.fig_view.axes[0].images[0].get_array().shape[:2] == (48, 64)
    html = ex.static_html()
    assert html.count("<img") == 1 and "Plotly.newPlot" in html and "Jupyter" in html
    with pytest.raises(InputError):
        SceneExplorer(pred, prob.candidates[torch.arange(3)], objects)
    with pytest.raises(InputError):
        group_views(4, 0, 5)
    with pytest.raises(InputError):
        ExplorerScene(prob.candidates, prob.K, images=images[:2])
