"""Regimes derived from a config: a pure function, independent of the order experiments are on."""

import copy

from sharpminima.regimes import Regime, derive

PROTOCOL = {"stop": "val_loss", "max_epochs": 100}


def config(**experiments) -> dict:
    return {
        "regimes": {"SB": 256, "LB": 0.1},
        "landscape_regimes": ["SB", "LB"],
        "experiments": experiments,
        "sweep": {"batch_sizes": [256, 1024], "epochs": None},
        "warmstart": {"sb_epochs": 4, "every": 2, "lb_epochs": 3},
        "remedies": {"methods": {"augment": {"augment": True}, "adversarial": {"fgsm": 0.01}}},
        "modern": {
            "methods": {"sam": {"sam": 0.05}, "ghost": {"ghost_batch": 256}},
            "lb_only": ["ghost"],
        },
    }


def test_without_experiments_the_study_regimes_only():
    r = derive(config(), {"F1": PROTOCOL})
    assert r.all == {"SB": Regime(256), "LB": Regime(0.1)}
    assert (r.sweep, r.warm_source, r.warm, r.remedies, r.modern) == ({}, None, {}, {}, {})


def test_the_sweep_reuses_a_study_regime_whose_batch_and_settings_agree():
    r = derive(config(sweep=True), {"F1": PROTOCOL})
    assert r.sweep == {256: "SB", 1024: "b1024"}
    assert r.all["b1024"] == Regime(1024, {})
    # a sweep that fixes the epochs differs from the protocol: every point is its own regime
    fixed = config(sweep=True)
    fixed["sweep"]["epochs"] = 20
    r = derive(fixed, {"F1": PROTOCOL})
    assert r.sweep == {256: "b256_20ep", 1024: "b1024_20ep"}
    assert r.all["b256_20ep"] == Regime(256, {"stop": "fixed", "max_epochs": 20})
    # ...unless every network's protocol already trains exactly so
    same = derive(fixed, {"F1": {"stop": "fixed", "max_epochs": 20}})
    assert same.sweep == {256: "SB", 1024: "b1024"}


def test_warm_starts_start_lb_runs_from_every_kth_sb_epoch():
    r = derive(config(warmstart=True), {"F1": PROTOCOL})
    assert r.warm_source == "warm_SB" and r.warm == {0: "warm_LB0", 2: "warm_LB2", 4: "warm_LB4"}
    assert r.all["warm_SB"] == Regime(256, {"stop": "fixed", "max_epochs": 4, "save_every": 1})
    lb = {"stop": "fixed", "max_epochs": 3, "save_every": 3}
    assert r.all["warm_LB2"] == Regime(0.1, lb, ("warm_SB", 2))


def test_each_remedy_trains_both_regimes_of_the_pair():
    r = derive(config(remedies=True), {"F1": PROTOCOL})
    assert r.remedies == {"augment": ["SB_augment", "LB_augment"],
                          "adversarial": ["SB_adversarial", "LB_adversarial"]}  # fmt: skip
    assert r.all["LB_adversarial"] == Regime(0.1, {"fgsm": 0.01})


def test_modern_methods_train_lb_and_sb_unless_lb_only():
    r = derive(config(modern=True), {"F1": PROTOCOL})
    assert r.modern == {"sam": ["SB_sam", "LB_sam"], "ghost": ["LB_ghost"]}
    assert r.all["LB_ghost"] == Regime(0.1, {"ghost_batch": 256})
    assert r.all["SB_sam"] == Regime(256, {"sam": 0.05})


def test_derive_is_pure_and_the_same_whichever_experiments_are_on():
    everything = config(sweep=True, warmstart=True, remedies=True, modern=True)
    before = copy.deepcopy(everything)
    r = derive(everything, {"F1": PROTOCOL})
    assert everything == before and derive(everything, {"F1": PROTOCOL}) == r
    for alone in ("sweep", "warmstart", "remedies", "modern"):
        part = derive(config(**{alone: True}), {"F1": PROTOCOL})
        assert all(r.all[name] == regime for name, regime in part.all.items())
