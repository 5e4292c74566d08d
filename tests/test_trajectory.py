"""Figure 6: φ of stored iterates along a run, resumable point by point."""

import pandas as pd
import pytest

from sharpminima.errors import UserError
from sharpminima.measures.sharpness import SharpnessConfig, run_sharpness
from sharpminima.measures.trajectory import epochs, trajectory
from sharpminima.store import Run
from sharpminima.workdir import finish

from .conftest import assert_one_line_error, cli

CFG = SharpnessConfig(iters=2, chunk=200)


def quiet(message: str) -> None:
    pass


def test_epochs_are_x0_every_kth_and_the_last(trials):
    run = Run(trials["SB"][0])  # 3 epochs, all stored
    assert epochs(run, 1) == [0, 1, 2, 3]
    assert epochs(run, 2) == [0, 2, 3]
    assert epochs(run, 5) == [0, 3]
    with pytest.raises(UserError, match="at least 1"):
        epochs(run, 0)


def test_points_are_metric_2_1_of_each_iterate(trials, tmp_path):
    runs = [trials["SB"][0], trials["LB"][0]]
    out = tmp_path / "t.csv"
    table = trajectory(runs, ["batch", "running"], CFG, 3, out, log=quiet)
    assert len(table) == 2 * 2 * 2  # runs × modes × epochs 0 and 3
    assert table.groupby(["regime", "bn"]).epoch.apply(list).tolist() == [[0, 3]] * 4
    row = table[(table.regime == "LB") & (table.bn == "running") & (table.epoch == 3)].iloc[0]
    alone = run_sharpness(runs[1], SharpnessConfig(iters=2, chunk=200, bn="running"), 3, log=quiet)
    assert row.phi == pytest.approx(alone["phi"]) and row.f_x == pytest.approx(alone["f_x"])
    first = table[(table.regime == "SB") & (table.epoch == 0)]
    assert first.test_acc.iloc[0] == Run(runs[0]).history.test_acc[0]  # recorded at x₀
    assert (table.nit > 0).all() and (table.phi >= 0).all()


def test_a_restarted_trajectory_computes_only_missing_points(trials, tmp_path):
    runs, out = [trials["LB"][1]], tmp_path / "t.csv"
    first = trajectory(runs, ["batch"], CFG, 2, out, log=quiet)  # epochs 0, 2 and 3
    work = tmp_path / "t.csv.partial"
    (work / "0002.json").unlink()  # as if killed while computing the third point
    lines = []
    again = trajectory(runs, ["batch"], CFG, 2, out, log=lines.append)
    assert sum(line.startswith("point ") for line in lines) == 1
    pd.testing.assert_frame_equal(first.drop(columns=["seconds"]), again.drop(columns=["seconds"]))
    lines.clear()  # other settings: the cached points are not reused
    trajectory(runs, ["batch"], SharpnessConfig(iters=1, chunk=200), 2, out, log=lines.append)
    assert sum(line.startswith("point ") for line in lines) == len(first)
    finish(out)
    assert not work.exists()


def test_cli_writes_the_csv_and_figure_six(trials, tmp_path):
    csv = tmp_path / "trajectory.csv"
    runs = [trials["SB"][1], trials["LB"][1]]
    cli("trajectory", "--runs", *runs, "--bn", "batch", "running", "--iters", 1,
        "--chunk", 200, "--every", 2, "--out", csv)  # fmt: skip
    assert set(pd.read_csv(csv).bn) == {"batch", "running"}
    assert not (tmp_path / "trajectory.csv.partial").exists()
    cli("figure", "trajectory", csv, "--out", tmp_path / "fig6.png", "--dpi", 100)
    assert (tmp_path / "fig6.png").stat().st_size > 5000
    proc = cli("trajectory", "--runs", *runs, "--bn", "eval", "--out", tmp_path / "b.csv",
               check=False)  # fmt: skip
    assert_one_line_error(proc, "batch and/or running", "eval")
    assert not list(tmp_path.glob("b.csv*"))
