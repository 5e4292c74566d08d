"""SB vs LB at matched training loss: which iterates are compared, every measure there, f over
all training images, resume after a kill, and the verdict the panel draws from it."""

import json
import math

import pandas as pd
import pytest

from sharpminima.analysis.matched import closest, matched, points, read_settings
from sharpminima.analysis.panel import matched_verdict
from sharpminima.errors import UserError
from sharpminima.store import Run
from sharpminima.train.trainer import TrainConfig, train

from .conftest import assert_one_line_error, cli

SETTINGS = json.dumps(
    {"phi": {"iters": 2, "chunk": 250}, "eigenvalues": {"k": 1, "max_steps": 4, "tol": 0.1},
     "linf": {"steps": 2}}
)  # fmt: skip


@pytest.fixture(scope="module")
def pair(tmp_path_factory, mnist_like):
    """One trial's SB and LB, each with a 100-example validation split held out."""
    folder = tmp_path_factory.mktemp("pair")
    runs = []
    for label, batch in (("SB", 32), ("LB", 0.1)):
        cfg = TrainConfig("F1", batch_size=batch, seed=3, max_epochs=3, stop="val_loss",
                          val_size=100, eval_chunk=250)  # fmt: skip
        runs.append(train(cfg, mnist_like, folder / f"{label}.h5", label=label, log=lambda m: 0))
    return runs


def test_the_closest_iterate_on_a_log_scale():
    losses = {0: 2.3, 1: 0.5, 2: 0.09, 3: 0.011, 4: 0.004}
    assert closest(losses, 0.1) == 2 and closest(losses, 0.01) == 3
    assert closest(losses, 0.006) == 4  # |log 0.004/0.006| < |log 0.011/0.006|


def test_only_levels_both_runs_reach_are_compared(pair):
    sb, lb = (Run(p) for p in pair)
    lowest = max(min(sb.history.train_loss), min(lb.history.train_loss))
    levels = [10.0, lowest * 1.01, lowest / 2]
    chosen = points(sb, lb, levels)
    assert [lv for lv, _ in chosen] == levels[:2]
    for _, epochs in chosen:
        assert set(epochs) == {"SB", "LB"} and all(0 <= e <= 3 for e in epochs.values())
    assert chosen[0][1] == {"SB": 0, "LB": 0}  # 10 is nearest to x₀'s loss (about 2.3)


def test_every_measure_at_every_point_and_phi_over_all_images(pair, tmp_path):
    out = tmp_path / "m.csv"
    table = matched(*pair, read_settings(SETTINGS), [0.5], out, "cpu", lambda m: 0)
    trained = table[table.examples == "trained"]
    assert list(trained.level.dropna().unique()) == [0.5]  # both runs reach it
    assert set(trained.measure) == {"phi", "eigenvalues", "linf"}
    assert len(trained.dropna(subset=["level"])) == 3 * 2  # measures × regimes
    final = table[table.level.isna()]
    assert set(final.examples) == {"trained", "all"} and (final.measure == "phi").all()
    assert set(final[final.examples == "all"].n_examples) == {600}  # the 100 held out included
    assert set(final[final.examples == "trained"].n_examples) == {500}
    assert (final.epoch == 3).all()
    assert (out.with_name("m.csv.partial") / "settings.json").exists()


def test_a_killed_job_resumes_with_the_points_it_had(pair, tmp_path):
    out, quiet = tmp_path / "m.csv", lambda m: 0
    first = matched(*pair, read_settings(SETTINGS), [10.0], out, "cpu", quiet)
    work = out.with_name("m.csv.partial")
    (work / "0002.json").unlink()  # as if killed before this point was written
    (work / "0003.json").write_text("{trunc")  # and while writing this one
    lines = []
    again = matched(*pair, read_settings(SETTINGS), [10.0], out, "cpu", lines.append)
    pd.testing.assert_frame_equal(first, again)
    assert sum(line.startswith("point ") for line in lines) == 2, lines
    assert any("damaged" in line for line in lines)


def test_bad_settings_are_one_line(pair, tmp_path):
    for text, words in (
        ("{nope", "--settings is not JSON"),
        ('{"phi": {"epsilon": 1}}', "--settings: phi:"),
        ('{"hessian": {}}', "unknown measure 'hessian'"),
        ('{"trace": {"rel_se": -1}}', "rel-se > 0"),
    ):
        proc = cli("matched", "--sb", pair[0], "--lb", pair[1], "--settings", text,
                   "--out", tmp_path / "x.csv", check=False)  # fmt: skip
        assert_one_line_error(proc, words)
    with pytest.raises(UserError, match="not one trial"):
        matched(pair[0], pair[0], read_settings(SETTINGS), [1.0], tmp_path / "y.csv", "cpu")
    assert not (tmp_path / "x.csv").exists()


def test_the_verdict_pairs_trials_at_each_level():
    rows = [
        {"level": lv, "examples": "trained", "measure": "phi", "regime": r, "seed": s,
         "epoch": 1, "value": v}
        for lv in (0.1, math.nan)
        for s in range(4)
        for r, v in (("SB", 1.0 + s), ("LB", 2.0 + s if lv == 0.1 else 0.5))
    ]  # fmt: skip
    verdict = matched_verdict([pd.DataFrame(rows)], "SB", "LB")
    at_level = verdict[verdict.level == 0.1].iloc[0]
    assert at_level.lb_larger == 4 and at_level.trials == 4 and at_level.sign_p == 0.125
    final = verdict[verdict.level.isna()].iloc[0]
    assert final.lb_larger == 0 and final.lb_mean == 0.5 and final.sb_mean == 2.5
