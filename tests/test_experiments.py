"""Numbers read off finished runs: Figure 2's curves, distances from x0, Appendix C."""

import json

import pandas as pd
import pytest
import torch

from sharpminima.analysis import experiments
from sharpminima.errors import UserError
from sharpminima.store import Run

from .conftest import assert_one_line_error, cli


def test_accuracy_curves_average_the_trials_that_reached_each_epoch(trials):
    curves = experiments.accuracy_curves(trials["SB"] + trials["LB"])
    sb = curves[curves.regime == "SB"].set_index("epoch")
    assert sb.trials.tolist() == [2, 2, 2, 1]  # epochs 0-3; trial 1 stopped after epoch 2
    h0, h1 = (Run(p).history.set_index("epoch") for p in trials["SB"])
    assert sb.train_mean[1] == pytest.approx((h0.train_acc[1] + h1.train_acc[1]) / 2)
    assert sb.test_std[2] == pytest.approx(pd.Series([h0.test_acc[2], h1.test_acc[2]]).std())
    assert sb.test_mean[3] == pytest.approx(h0.test_acc[3]) and sb.test_std[3] == 0
    assert set(curves.network) == {"F1"} and set(curves.regime) == {"SB", "LB"}


def test_distances_count_parameters_from_the_shared_start(trials):
    d = experiments.distances(trials["SB"], trials["LB"])
    assert d.seed.tolist() == [0, 1]
    sb, lb = Run(trials["SB"][0]), Run(trials["LB"][0])
    names = [k for k, _ in sb.architecture().named_parameters()]
    init, final = sb.state("init"), sb.state("final")
    expected = torch.cat([(final[k] - init[k]).flatten().double() for k in names]).norm()
    assert d.sb_distance[0] == pytest.approx(float(expected))
    assert d.ratio[0] == pytest.approx(d.sb_distance[0] / d.lb_distance[0])
    # BatchNorm buffers move too, but they are not the optimizer's point: left out.
    assert "0.running_mean" not in names and any("running_mean" in k for k in init)
    assert lb.attrs["seed"] == 0
    with pytest.raises(UserError, match="no LB run of trial 0"):
        experiments.distances(trials["SB"][:1], trials["LB"][1:])


def test_performance_model_and_measured_iterations(trials):
    assert experiments.lb_bound(0.2, 0.1) == pytest.approx(0.5)  # the paper's example
    it = experiments.iterations(trials["SB"], trials["LB"])
    sb, lb = Run(trials["SB"][1]), Run(trials["LB"][1])
    assert it.iters_s[1] == 2 * sb.attrs["steps_per_epoch"]
    assert it.iters_l[1] == 3 * lb.attrs["steps_per_epoch"]
    ratio = sb.attrs["batch_size"] / lb.attrs["batch_size"]
    # At f_s = fs_break_even the bound equals the measured ratio: LB breaks even.
    bound = experiments.lb_bound(it.fs_break_even[1], ratio)
    assert bound == pytest.approx(it.iter_ratio[1])


def test_cli_measures_and_draws(trials, tmp_path):
    runs = ["--sb", *trials["SB"], "--lb", *trials["LB"]]
    for what, kind in (("curves", "curves"), ("iterations", "perfmodel"), ("distances", None)):
        csv = tmp_path / f"{what}.csv"
        cli("measure", what, *runs, "--out", csv)
        table = pd.read_csv(csv)
        assert len(table) > 0
        # beside it, the same table in Markdown: a header, a rule, one line per row
        md = csv.with_suffix(".md").read_text().splitlines()
        assert md[0] == "| " + " | ".join(table.columns) + " |" and len(md) == len(table) + 2
        if kind:
            cli("figure", kind, csv, "--out", tmp_path / f"{kind}.png", "--dpi", 100)
            for ext in ("png", "pdf"):
                assert (tmp_path / f"{kind}.{ext}").stat().st_size > 5000


def test_figure_refuses_the_wrong_csv(trials, tmp_path):
    csv = tmp_path / "iterations.csv"
    cli("measure", "iterations", "--sb", *trials["SB"], "--lb", *trials["LB"], "--out", csv)
    proc = cli("figure", "curves", csv, "--out", tmp_path / "f.png", check=False)
    assert_one_line_error(proc, "lacks", "sharpminima measure curves")
    assert not list(tmp_path.glob("f.*"))


def test_directions_cli_pairs_runs_with_phi(trials, tmp_path):
    proc = cli(
        "directions",
        "--runs",
        *trials["SB"],
        "--phi",
        tmp_path / "a.json",
        "--out",
        tmp_path / "d.csv",
        check=False,
    )
    assert_one_line_error(proc, "2 runs but 1 --phi files")
    assert not (tmp_path / "d.csv").exists()


def _phi_files(runs, folder):
    from sharpminima.measures.sharpness import SharpnessConfig, run_sharpness

    files = []
    for run in runs:
        phi = run_sharpness(run, SharpnessConfig(iters=1, chunk=200), log=lambda m: None)
        files.append(folder / f"phi{len(files)}.json")
        files[-1].write_text(json.dumps(phi))
    return files


def test_sweep_averages_accuracy_and_phi_per_batch_size(trials, tmp_path):
    runs = trials["SB"] + trials["LB"]
    phis = _phi_files(runs, tmp_path)
    table = experiments.sweep(runs, phis)
    assert table.batch_size.tolist() == [32, 60] and table.trials.tolist() == [2, 2]
    finals = [Run(p).history.test_acc.iloc[-1] for p in trials["LB"]]
    assert table.test_mean[1] == pytest.approx(sum(finals) / 2)
    lb_phi = [json.loads(p.read_text())["phi"] for p in phis[2:]]
    assert table.phi_std[1] == pytest.approx(pd.Series(lb_phi).std())
    with pytest.raises(UserError, match="no φ of"):
        experiments.sweep(runs, phis[:3])
    csv = tmp_path / "sweep.csv"
    cli("measure", "sweep", "--runs", *runs, "--phi", *phis, "--out", csv)
    cli("figure", "sweep", csv, "--out", tmp_path / "fig4.png", "--dpi", 100)
    assert (tmp_path / "fig4.pdf").stat().st_size > 5000
    proc = cli("measure", "sweep", "--runs", *runs, "--out", tmp_path / "x.csv", check=False)
    assert_one_line_error(proc, "measure sweep needs --phi")


def test_warm_started_runs_begin_at_the_stored_iterate(trials, mnist_like, tmp_path):
    from sharpminima.train.trainer import TrainConfig, WarmStart, train

    source = trials["SB"][0]
    warm = []
    for epoch in (0, 2):
        cfg = TrainConfig("F1", batch_size=0.1, seed=0, max_epochs=1, stop="fixed", eval_chunk=200)
        out = tmp_path / f"warm{epoch}.h5"
        train(cfg, mnist_like, out, label=f"LB{epoch}", log=lambda m: None,
              warm=WarmStart(str(source), epoch))  # fmt: skip
        warm.append(out)
    sb, lb = Run(source), Run(warm[1])
    for key, value in lb.state("init").items():
        assert torch.equal(value, sb.state(2)[key]), key
    assert lb.attrs["warm_epoch"] == 2 and lb.attrs["warm_run_finished"] == sb.attrs["finished"]
    x0 = sb.state("init")
    assert all(torch.equal(v, x0[k]) for k, v in Run(warm[0]).state("init").items())
    table = experiments.warmstart([source], warm, _phi_files(warm, tmp_path))
    assert table.warm_epoch.tolist() == [0, 2]
    assert table.sb_test_acc[1] == sb.history.set_index("epoch").test_acc[2]
    assert table.lb_test_acc[1] == lb.history.test_acc.iloc[-1] and table.lb_epochs[1] == 1
    with pytest.raises(UserError, match="not warm-started from one of the --sb runs"):
        experiments.warmstart(trials["SB"][1:], warm, [])
    csv = tmp_path / "warm.csv"
    table.to_csv(csv, index=False)
    cli("figure", "warmstart", csv, "--out", tmp_path / "fig5.png", "--dpi", 100)
    assert (tmp_path / "fig5.pdf").stat().st_size > 5000


def test_warm_start_options_are_checked(trials, mnist_like, tmp_path):
    out = tmp_path / "w.h5"
    base = ("train", "--network", "F1", "--data", mnist_like, "--out", out, "--stop", "fixed")
    proc = cli(*base, "--warm-run", trials["SB"][0], check=False)
    assert_one_line_error(proc, "--warm-run and --warm-epoch go together")
    proc = cli(*base, "--warm-run", trials["SB"][0], "--warm-epoch", 7, check=False)
    assert_one_line_error(proc, "stores no iterate for epoch 7")
    other = tmp_path / "other.h5"
    from sharpminima.data.dataset import make_synthetic

    make_synthetic(other, 300, 50, (1, 28, 28), 10, seed=3)
    proc = cli(*base[:4], other, *base[5:], "--warm-run", trials["SB"][0], "--warm-epoch", 1,
               check=False)  # fmt: skip
    assert_one_line_error(proc, "trained on other data")
    assert not out.exists() and not (tmp_path / "w.h5.partial").exists()


def test_remedies_table_groups_by_remedy_and_regime(trials, mnist_like, tmp_path):
    from sharpminima.train.trainer import TrainConfig, train

    cfg = TrainConfig("F1", batch_size=0.1, seed=0, max_epochs=1, stop="fixed", eval_chunk=200)
    prox = TrainConfig(**{**cfg.__dict__, "proximal": 1e-3})
    out = train(prox, mnist_like, tmp_path / "prox.h5", label="LB_conservative", log=print)
    runs = [*trials["SB"], *trials["LB"], out]
    table = experiments.remedies(runs, _phi_files(runs, tmp_path))
    assert table.remedy.tolist() == ["none", "none", "conservative λ=0.001 × 3"]
    assert table.regime.tolist() == ["SB", "LB", "LB"] and table.trials.tolist() == [2, 2, 1]
    assert table.test_mean[2] == Run(out).history.test_acc.iloc[-1]
    md = experiments.remedies_markdown(table.assign(network="F2"))  # F2: the paper has E.2's
    assert "| conservative λ=0.001 × 3 | – |" in md and "LB 61.94% (plain SB 64.02%)" in md
    csv = tmp_path / "remedies.csv"
    cli("measure", "remedies", "--runs", *runs, "--phi", *_phi_files(runs, tmp_path),
        "--out", csv)  # fmt: skip
    assert (tmp_path / "remedies.md").read_text().startswith("Table 6 and Appendix E for F1")
    cli("figure", "remedies", csv, "--out", tmp_path / "remedies.png", "--dpi", 100)
    assert (tmp_path / "remedies.pdf").stat().st_size > 5000
