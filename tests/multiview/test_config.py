"The settings of the multi-view stages: one name and one default each, self-checking, JSON, the command's options."
import argparse, dataclasses, json

import pytest

from cosypose_nb.core import InputError, config_to_dict, config_from_dict, add_config_arguments, config_from_args
from cosypose_nb.multiview.config import MatchingConfig, BundleAdjustConfig, PoseRefineConfig, MultiviewConfig, MAX_CONTINUOUS

CLASSES = (MatchingConfig, BundleAdjustConfig, PoseRefineConfig, MultiviewConfig)


def test_one_name_per_setting_and_json_round_trip():
    names = [f.name for c in CLASSES for f in dataclasses.fields(c)]
    assert len(names) == len(set(names))
    cfg = MultiviewConfig(score_threshold=0.5, matching=MatchingConfig(ransac_iters=10), ba=BundleAdjustConfig(robust="cap"),
                          refine=PoseRefineConfig(join=False), threads=2)
    assert config_from_dict(MultiviewConfig, json.loads(json.dumps(config_to_dict(cfg)))) == cfg


@pytest.mark.parametrize("cls, kw", [(MatchingConfig, dict(ransac_threshold=-0.1)), (MatchingConfig, dict(n_continuous=MAX_CONTINUOUS + 1)),
                                     (MatchingConfig, dict(max_pairs=0)), (BundleAdjustConfig, dict(ba_iters=-3)),
                                     (BundleAdjustConfig, dict(robust="l1")), (PoseRefineConfig, dict(reject=float("inf"))),
                                     (MultiviewConfig, dict(rematch="yes")), (MultiviewConfig, dict(matching=BundleAdjustConfig()))])
def test_bad_values_name_their_field(cls, kw):
    with pytest.raises(InputError, match=next(iter(kw))):
        cls(**kw)


def test_command_options_from_the_fields():
    ap = argparse.ArgumentParser()
    for c in CLASSES: add_config_arguments(ap, c)
    a = ap.parse_args(["--ransac-threshold", "0.02", "--no-rematch", "--no-join", "--ba-iters", "5", "--threads", "1"])
    cfg = config_from_args(MultiviewConfig, a, **{n: config_from_args(c, a) for n, c in
                                                  (("matching", MatchingConfig), ("ba", BundleAdjustConfig), ("refine", PoseRefineConfig))})
    assert (cfg.matching.ransac_threshold, cfg.rematch, cfg.refine.join, cfg.ba.ba_iters, cfg.threads) == (0.02, False, False, 5, 1)
    assert config_from_args(MultiviewConfig, ap.parse_args([])) == MultiviewConfig()
    with pytest.raises(InputError, match="^--ba-iters: must be an integer >= 0, got -3$"):
        config_from_args(BundleAdjustConfig, ap.parse_args(["--ba-iters", "-3"]))
