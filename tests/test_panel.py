"""The panel's verdict: the sign test, Kendall's τ with its bootstrap interval, granulated τ; the
table built from real run files and measure results; its figures."""

import json

import numpy as np
import pandas as pd
import pytest

from sharpminima.analysis.figures import _power_of_ten, method_bars, panel_scatter, spectral_density
from sharpminima.analysis.panel import (
    bootstrap_tau,
    granulated_tau,
    methods_table,
    panel_table,
    permutation_p,
    sign_test,
    verdict,
)
from sharpminima.errors import UserError
from sharpminima.measures.adaptive import WorstConfig, adaptive
from sharpminima.measures.curvature import DensityConfig, EigenConfig, curvature
from sharpminima.measures.sharpness import SharpnessConfig, run_sharpness
from sharpminima.store import Run, measure_iterate
from sharpminima.train.trainer import TrainConfig, train

from .conftest import assert_one_line_error, cli
from .test_faults import small_fs


def population(measure, gap_acc, regimes, seeds, batch):
    return pd.DataFrame(
        {"regime": regimes, "seed": seeds, "batch_size": batch, "remedy": "none",
         "warm_epoch": -1, "m": measure, "gap_acc": gap_acc}
    )  # fmt: skip


def test_sign_test_counts_trials_where_lb_is_larger():
    t = population([1, 2, 3, 4, 5, 9, 9, 9, 9, 0], 0, ["SB"] * 5 + ["LB"] * 5, [*range(5)] * 2, 1)
    result = sign_test(t, "m", "SB", "LB")
    assert result == {"trials": 5, "lb_larger": 4, "sign_p": pytest.approx(0.375)}
    t.loc[t.regime == "LB", "m"] = 99.0
    assert sign_test(t, "m", "SB", "LB")["sign_p"] == pytest.approx(2 / 2**5)
    assert sign_test(t, "m", "SB", "XL")["trials"] == 0


def test_tau_interval_excludes_zero_only_for_a_measure_that_tracks_the_gap():
    rng = np.random.default_rng(0)
    gap = rng.uniform(0, 5, 40)
    low, high = bootstrap_tau(gap + rng.normal(0, 0.3, 40), gap, 500, seed=0)
    assert 0.5 < low <= high <= 1.0
    low, high = bootstrap_tau(rng.uniform(0, 5, 40), gap, 500, seed=0)
    assert low < 0 < high
    assert bootstrap_tau(np.ones(40), gap, 500, seed=0) == (pytest.approx(np.nan, nan_ok=True),) * 2
    # the same runs listed in another order (as another rule's inputs might be): the same interval
    x, shuffled = gap + rng.normal(0, 0.3, 40), rng.permutation(40)
    assert bootstrap_tau(x, gap, 500, 0) == bootstrap_tau(x[shuffled], gap[shuffled], 500, 0)


def test_the_cluster_bootstrap_draws_each_seeds_runs_together():
    """Runs of one seed share a seed effect in both the measure and the gap (their common
    start): resampling runs treats 8 runs of a seed as 8 observations, and its interval is
    narrower than the one that resamples the 5 seeds. With one run per seed the two agree."""
    rng = np.random.default_rng(1)
    seeds = np.repeat(np.arange(5), 8)
    effect = rng.normal(0, 1, 5)[seeds]
    x, y = effect + rng.normal(0, 0.3, 40), effect + rng.normal(0, 0.3, 40)
    runs = bootstrap_tau(x, y, 1000, 0)
    cluster = bootstrap_tau(x, y, 1000, 0, clusters=seeds)
    assert cluster[1] - cluster[0] > 1.5 * (runs[1] - runs[0])
    single = np.arange(40)
    assert bootstrap_tau(x, y, 1000, 0, clusters=single) == pytest.approx(runs, abs=1e-12)
    assert (
        bootstrap_tau(x, y, 1000, 0, clusters=np.zeros(40))
        == (pytest.approx(np.nan, nan_ok=True),) * 2
    )  # one seed: every resample alike, no interval


def test_the_permutation_test_counts_only_what_a_measure_says_within_seeds():
    rng = np.random.default_rng(2)
    seeds = np.repeat(np.arange(5), 4)
    gap = rng.uniform(0, 5, 20)
    within = gap + rng.normal(0, 0.2, 20)  # ranks each seed's runs as the gap does
    assert permutation_p(within, gap, seeds, 999, 0) <= 0.01
    # Constant within each seed, and following the seeds' mean gap: τ > 0 over all runs,
    # but nothing is said about any run beyond its seed.
    per_seed = pd.Series(gap).groupby(seeds).transform("mean").to_numpy()
    assert permutation_p(per_seed, gap, seeds, 999, 0) == 1.0
    assert permutation_p(rng.uniform(0, 5, 20), gap, seeds, 999, 0) > 0.05
    shuffled = rng.permutation(20)  # the order runs are listed in changes nothing
    assert permutation_p(within, gap, seeds, 999, 0) == permutation_p(
        within[shuffled], gap[shuffled], seeds[shuffled], 999, 0
    )


def test_the_permutation_test_holds_its_level_when_seeds_share_a_start():
    """Measure and gap independent, but each with an effect of the seed shared by its runs
    (sizes as the F1 panel's: 5, 5, 2, 2, 2): p ≤ 0.05 in at most 8% of 200 populations (a
    test at its level: 5%; measured 3.5% over 400). Resampling runs, or 5 clusters, gives an
    interval that excludes 0 in 9.5% and 6-10.5% (docs/panel.md)."""
    rng = np.random.default_rng(0)
    seeds = np.repeat(np.arange(5), [5, 5, 2, 2, 2])
    rejected = 0
    for r in range(200):
        x = rng.normal(size=5)[seeds] + rng.normal(size=16)
        y = rng.normal(size=5)[seeds] + rng.normal(size=16)
        rejected += permutation_p(x, y, seeds, 400, r) <= 0.05
    assert rejected <= 0.08 * 200, rejected


def test_granulated_tau_compares_only_runs_that_differ_in_batch_size():
    # Within each seed, the measure follows the gap across batch sizes (τ = 1), while across
    # seeds it runs against it: the overall τ is negative, the granulated one is 1.
    t = population([1, 2, 3, 11, 12, 13], [9, 10, 11, 1, 2, 3], ["a", "b", "c"] * 2,
                   [0, 0, 0, 1, 1, 1], [16, 32, 64] * 2)  # fmt: skip
    assert granulated_tau(t, "m", "gap_acc") == (pytest.approx(1.0), 2)
    judged = verdict(t.rename(columns={"m": "phi"}).assign(gap_loss=0.0), "a", "b", 200)
    row = judged[(judged.measure == "phi") & (judged.gap == "gap_acc")].iloc[0]
    assert row.tau < 0 and row.tau_batch == pytest.approx(1.0) and row.batch_groups == 2


def test_methods_table_gives_each_methods_accuracy_gap_and_measures():
    t = pd.DataFrame(
        {"remedy": ["none"] * 5 + ["SAM ρ=0.05"] * 2,
         "regime": ["SB", "SB", "LB", "LB", "LB", "LB_sam", "LB_sam"],
         "seed": [0, 1, 0, 1, 2, 0, 1],
         "batch_size": [256, 256, 5500, 5500, 5500, 5500, 5500],
         "train_acc": 100.0, "test_acc": [98.0, 98.2, 97.5, 97.7, 97.6, 97.9, 98.1],
         "phi": [1.0, 3.0, 0.1, 0.2, 240.0, 20.0, 40.0], "eigenvalues": [1, 1, 5, 7, 6, 2, 2.0],
         "diverged": False}
    )  # fmt: skip
    m = methods_table(t, "SB").set_index("regime")
    assert list(m.index) == ["SB", "LB", "LB_sam"] and m.trials.tolist() == [2, 3, 2]
    assert (m.diverged == 0).all()
    assert m.method.to_dict() == {"SB": "none", "LB": "none", "LB_sam": "SAM ρ=0.05"}
    assert m.below_sb.to_dict() == pytest.approx({"SB": 0, "LB": 0.5, "LB_sam": 0.1})
    # measures by median: LB's φ is its middle trial (0.2), not the mean (80.1) one trial sets
    assert m.phi.LB == pytest.approx(0.2) and m.phi.LB_sam == 30 and m.eigenvalues.LB == 6
    assert m.test_std.LB == pytest.approx(np.std([97.5, 97.7, 97.6], ddof=1))


@pytest.fixture(scope="module")
def measured(trials, tmp_path_factory):
    """φ, λ_max, ℓ∞ sharpness and the density of the four trial runs, as the stages write them."""
    folder = tmp_path_factory.mktemp("measured")
    runs = trials["SB"] + trials["LB"]
    results, densities = [], []
    quiet = {"device": "cpu", "log": lambda m: None}

    def on(run, measure, cfg):
        return measure_iterate(run, "final", lambda m, d: measure(m, d, cfg), cfg, **quiet)

    for i, run in enumerate(runs):
        for name, result in (
            ("phi", run_sharpness(run, SharpnessConfig(iters=2, chunk=300), **quiet)),
            ("eig", on(run, curvature, EigenConfig(k=1, max_steps=3, tol=0.1, chunk=300))),
            (
                "linf",
                on(
                    run,
                    adaptive,
                    WorstConfig(steps=2, starts=2, max_starts=2, power_steps=2, chunk=300),
                ),
            ),
            ("density", on(run, curvature, DensityConfig(steps=3, starts=2, deflate=2, chunk=300))),
        ):
            path = folder / f"{name}{i}.json"
            path.write_text(json.dumps(result))
            (densities if name == "density" else results).append(path)
    return runs, results, densities


def test_panel_table_holds_every_measure_of_every_run(measured):
    runs, results, _ = measured
    table = panel_table(runs, results)
    assert list(table.regime) == ["SB", "SB", "LB", "LB"] and list(table.seed) == [0, 1, 0, 1]
    for column in ("phi", "eigenvalues", "linf", "gap_acc", "gap_loss", "test_loss"):
        assert table[column].notna().all(), column
    assert (table.gap_acc == table.train_acc - table.test_acc).all()
    # two starts of two steps cannot settle: the worst case is named unconverged on every run
    assert all("linf" in names.split(", ") for names in table.unconverged), table.unconverged
    with pytest.raises(UserError, match="are the same run"):  # it would count as two trials
        panel_table(runs + runs[:1], results)
    with pytest.raises(UserError, match="are the same result"):
        panel_table(runs, results + results[:1])
    with pytest.raises(UserError, match="no eigenvalues for LB seed 1"):
        panel_table(runs, [r for r in results if r.name != "eig3.json"])


def test_cli_writes_the_panel_and_the_figures_draw_it(measured, tmp_path):
    runs, results, densities = measured
    out = tmp_path / "panel"
    cli("panel", "--runs", *runs, "--results", *results, "--density", *densities,
        "--bootstrap", "100", "--out-dir", out)  # fmt: skip
    judged = pd.read_csv(out / "verdict.csv")
    assert set(judged.measure) == {"phi", "eigenvalues", "linf"} and (judged.trials == 2).all()
    assert "| measure | gap |" in (out / "verdict.md").read_text()
    spectra = pd.read_csv(out / "density.csv")
    assert spectra.groupby(["regime", "seed"]).ngroups == 4 and (spectra.density >= 0).all()
    methods = pd.read_csv(out / "methods.csv")
    assert list(methods.regime) == ["SB", "LB"] and set(methods.method) == {"none"}
    matched = pd.read_csv(out / "matched.csv")  # none given: the table, without rows
    assert matched.empty and {"level", "measure", "sb_mean"} <= set(matched.columns)
    assert (out / "matched.md").read_text().startswith("| level | examples | measure |")
    figures = ((panel_scatter, "panel.csv"), (spectral_density, "density.csv"),
               (method_bars, "methods.csv"))  # fmt: skip
    bad = cli("figure", "methods", out / "density.csv", "--out", tmp_path / "m", check=False)
    assert_one_line_error(bad, "lacks method", "pass the methods.csv of `sharpminima panel`")
    for draw, csv in figures:
        written = draw(out / csv, tmp_path / csv.replace(".csv", ""))
        assert all(p.stat().st_size > 1000 for p in written)
    bad = cli("panel", "--runs", *runs, "--results", *results, "--bootstrap", "5",
              "--out-dir", tmp_path / "x", check=False)  # fmt: skip
    assert_one_line_error(bad, "--bootstrap must be at least 100")
    bad = cli("panel", "--runs", *runs, "--results", *results, "--density", results[0],
              "--out-dir", tmp_path / "x", check=False)  # fmt: skip
    assert_one_line_error(bad, "--density takes results of `sharpminima curvature density`")
    assert not (tmp_path / "x" / "panel.csv").exists()


def _no_nan_tokens(token: str) -> None:
    raise AssertionError(f"{token} is not JSON")


def test_a_diverged_run_stays_in_the_panel_with_no_measure(measured, mnist_like, tmp_path):
    """A run whose loss went to NaN: each measure job writes 'undefined' (with why) at once,
    instead of failing or measuring NaN; the panel keeps the run, and τ leaves it out."""
    runs, results, densities = measured
    cfg = TrainConfig("F1", batch_size=60, optimizer="sgd", lr=1e4, max_epochs=3, stop="fixed")
    run = train(cfg, mnist_like, tmp_path / "div.h5", label="LB_sgd", log=lambda m: None)
    assert Run(run).attrs["stop_reason"].startswith("diverged")
    mine = []
    for command, what in (("sharpness", None), ("curvature", "eigenvalues"),
                          ("curvature", "density"), ("adaptive", "linf")):  # fmt: skip
        out = tmp_path / f"{what or 'phi'}.json"
        cli(command, *([what] if what else []), run, "--out", out)
        result = json.loads(out.read_text(), parse_constant=_no_nan_tokens)  # strict JSON
        assert "non-finite weights" in result["undefined"] and "diverged" in result["undefined"]
        assert all(v == "nan" for v in result.get("non_finite", {}).values())
        assert "evaluations" not in result and result["run"] == str(run)
        mine.append(out)
    out = tmp_path / "panel"
    cli("panel", "--runs", *runs, run, "--results", *results, *mine[0:2], mine[3],
        "--density", *densities, mine[2], "--bootstrap", "100", "--out-dir", out)  # fmt: skip
    table = pd.read_csv(out / "panel.csv").set_index("regime")
    assert table.diverged.to_dict() == {"SB": False, "LB": False, "LB_sgd": True}
    assert table.loc["LB_sgd", ["phi", "eigenvalues", "linf"]].isna().all()
    judged = pd.read_csv(out / "verdict.csv")
    assert (judged[judged.gap == "gap_acc"].runs == 4).all()
    assert judged.tau.notna().all() and judged.tau_low.notna().all()
    methods = pd.read_csv(out / "methods.csv").set_index("regime")
    assert methods.diverged.to_dict() == {"SB": 0, "LB": 0, "LB_sgd": 1}
    assert pd.read_csv(out / "density.csv").groupby(["regime", "seed"]).ngroups == 4
    for draw, csv in ((panel_scatter, "panel.csv"), (method_bars, "methods.csv")):
        assert all(p.stat().st_size > 1000 for p in draw(out / csv, tmp_path / csv[:-4]))
    # At matched loss (the diverged run shares SB's seed): a level it reached before the NaN
    # is measured; its final iterate gets NaN, not a failed job
    settings = '{"phi": {"iters": 1, "chunk": 300}, "eigenvalues": {"k": 1, "max_steps": 3}}'
    proc = cli("matched", "--sb", runs[0], "--lb", run, "--settings", settings, "--levels", "3",
               "--out", tmp_path / "m.csv")  # fmt: skip
    assert proc.stderr.count("phi: not taken, the weights are not finite (diverged") == 2
    rows = pd.read_csv(tmp_path / "m.csv")
    broken = (rows.regime == "LB_sgd") & rows.level.isna()
    assert len(rows) == 2 * (2 + 2) and broken.sum() == 2  # regimes × (2 at 3, 2 final φ)
    assert rows.value[broken].isna().all() and rows.value[~broken].notna().all()


def test_a_read_only_or_full_disk_under_the_panel_is_one_line(measured, tmp_path):
    runs, results, densities = measured
    args = ("panel", "--runs", *runs, "--results", *results, "--density", *densities,
            "--bootstrap", "100", "--out-dir")  # fmt: skip
    with small_fs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert_one_line_error(cli(*args, ro / "out", check=False), "not writable")
        assert list(ro.iterdir()) == []
    with small_fs(tmp_path / "full", "16k") as full:  # density.csv alone is larger
        proc = cli(*args, full, check=False)
        assert_one_line_error(proc, "No space left on device", "free space there")
        assert not [p for p in full.iterdir() if ".tmp-" in p.name]  # no temporary left behind


@pytest.mark.parametrize(
    "values, power",
    [([1.8e-5, -1.5e-5], -5), ([0.5, 2.0], 0), ([0.004, 0.001], -3), ([2e4, 10.0], 4),
     ([np.nan], 0), ([], 0), ([0.0, 0.0], 0)],
)  # fmt: skip
def test_a_linear_panel_axis_is_scaled_into_its_label(values, power):
    """matplotlib's offset text ('×10⁻⁵' at the axis end) overlaps the axis label; the panel
    divides such a measure by a power of ten and names it in the label instead."""
    assert _power_of_ten(pd.Series(values, dtype=float)) == power
