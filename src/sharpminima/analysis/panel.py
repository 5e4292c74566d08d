"""The sharpness panel and its verdict: does a measure separate SB from LB, and does it predict
the generalization gap? (Jiang et al., 2019; Andriushchenko et al., 2023; docs/panel.md)

Population: every run given (the study's trials, the sweep's batch sizes, warm starts,
remedies). For each measure:

- SB vs LB per trial (same x₀): how often LB exceeds SB, and a two-sided sign test;
- Kendall's τ (tau-b) between the measure and the gap over all runs, with a cluster bootstrap
  95% interval (trial seeds resampled, each with all its runs: they share their initial point)
  and a permutation test (measures shuffled within each seed); the measure "predicts" the gap
  where the interval excludes 0 and p ≤ 0.05. The permutation test holds its level with any
  number of seeds; the cluster interval is too narrow with few (10% false positives with 5
  seeds). The interval over resampled runs, which ignores the shared seeds, is kept beside it;
- τ granulated by batch size (Jiang et al.'s ψ for one hyperparameter): τ within each group of
  runs that differ only in batch size (same seed, remedy and warm start), averaged over groups.

Gaps: train − test accuracy (points), and test − train loss.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..atomic import atomic_path, read_json
from ..errors import UserError, refuse_duplicates
from ..guard import note_input
from ..measures.curvature import density
from ..store import open_runs
from .experiments import markdown, remedy

GAPS = {"gap_acc": "train − test accuracy (points)", "gap_loss": "test − train loss"}
# Each measure's file gives one number: the key it is read from.
VALUE = {"eigenvalues": "lambda_max", "trace": "trace", "linf": "sharpness",
         "l2": "sharpness", "average": "sharpness"}  # fmt: skip


def _read(path: str | Path, made_by: str) -> dict:
    return read_json(path, ("regime", "run_seed"), made_by)


def _read_csv(path: str | Path) -> pd.DataFrame:
    note_input(path)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}): compute it again") from None
    need = {"level", "examples", "measure", "regime", "seed", "epoch", "value"}
    if not need <= set(table.columns):
        raise UserError(f"{path} is not a CSV of `sharpminima matched`: pass those to --matched")
    return table


def _key(result: dict) -> tuple[str, int]:
    return result["regime"], int(result["run_seed"])


def runs_table(runs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: what identifies it and its final accuracies, losses and gaps."""
    rows = []
    runs = open_runs(runs)
    refuse_duplicates((((r.label, "trial", r.attrs["seed"]), r.path) for r in runs), "trial")
    for run in runs:
        last = run.history.iloc[-1]
        rows.append(
            {
                "network": run.attrs["network"],
                "regime": run.label,
                "seed": int(run.attrs["seed"]),
                "batch_size": int(run.attrs["batch_size"]),
                "remedy": remedy(run.attrs),
                "warm_epoch": run.attrs.get("warm_epoch", -1),
                "epochs": int(last.epoch),
                "diverged": not np.isfinite(last.train_loss),  # training's own criterion
                "train_acc": last.train_acc,
                "test_acc": last.test_acc,
                "train_loss": last.train_loss,
                "test_loss": last.test_loss,
            }
        )
    table = pd.DataFrame(rows)
    return table.assign(
        gap_acc=table.train_acc - table.test_acc, gap_loss=table.test_loss - table.train_loss
    )


def panel_table(runs: Iterable[str | Path], results: Iterable[str | Path]) -> pd.DataFrame:
    """Every run's measures beside its accuracy: φ (from sharpness JSONs) and each measure
    of `sharpminima curvature` / `adaptive` (one column per measure, in VALUE); and, per run,
    the measures whose search stopped at its cap (`converged: false`: Lanczos, Hutchinson, a
    worst case's starts), whose value is then a bound or a rougher estimate."""
    table = runs_table(runs)
    values: dict[str, dict[tuple[str, int], float]] = {}
    unconverged: dict[tuple[str, int], list[str]] = {}
    keys = []
    for path in results:
        r = _read(path, "sharpness, curvature or adaptive")
        name = "phi" if "phi" in r and "measure" not in r else r.get("measure")
        if name not in VALUE and name != "phi":
            raise UserError(f"{path} is not a result of sharpness, curvature or adaptive")
        if name == "phi" and r.get("space") != "full":
            raise UserError(f"{path} is a random-subspace φ: the panel takes the full space")
        value = np.nan if "undefined" in r else float(r["phi" if name == "phi" else VALUE[name]])
        values.setdefault(name, {})[_key(r)] = value
        if r.get("converged") is False:
            unconverged.setdefault(_key(r), []).append(name)
        keys.append(((name, r["regime"], "trial", r["run_seed"]), path))
    refuse_duplicates(keys, "result")
    for name, by_run in values.items():
        keys = list(zip(table.regime, table.seed, strict=True))
        missing = [f"{r} seed {s}" for r, s in keys if (r, s) not in by_run]
        if missing:
            raise UserError(f"no {name} for {', '.join(missing[:3])}: pass one per run")
        table[name] = [by_run[k] for k in keys]
    if values:
        runs_keys = zip(table.regime, table.seed, strict=True)
        table["unconverged"] = [", ".join(sorted(unconverged.get(k, []))) for k in runs_keys]
    return table


def measures_of(table: pd.DataFrame) -> list[str]:
    return [c for c in ("phi", *VALUE) if c in table]


def sign_test(table: pd.DataFrame, measure: str, sb: str, lb: str) -> dict[str, float]:
    """LB vs SB of the same trial: how many trials LB is larger, and the two-sided p-value."""
    pairs = table[table.regime.isin([sb, lb])].pivot(index="seed", columns="regime", values=measure)
    pairs = pairs.dropna()
    if sb not in pairs or lb not in pairs or pairs.empty:
        return {"trials": 0, "lb_larger": 0, "sign_p": np.nan}
    larger = int((pairs[lb] > pairs[sb]).sum())
    ties = int((pairs[lb] == pairs[sb]).sum())
    n = len(pairs) - ties
    p = stats.binomtest(larger, n, 0.5).pvalue if n else np.nan
    return {"trials": len(pairs), "lb_larger": larger, "sign_p": float(p)}


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ over the pairs where both are numbers (NaN where it is undefined)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    both = np.isfinite(x) & np.isfinite(y)
    x, y = x[both], y[both]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    return float(stats.kendalltau(x, y).statistic)


def _signs(v: np.ndarray) -> np.ndarray:
    """sign(v_i − v_j) for every pair: Kendall's τ-b as matrix products, for many resamples at
    once (scipy's kendalltau one resample at a time took seconds per measure)."""
    return np.sign(v[:, None] - v[None, :])


def _tau_b(sx: np.ndarray, sy: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """τ-b of each resample given as run multiplicities (rows of `weights`): a run drawn twice
    adds pairs tied in both, which count in neither the numerator nor the denominator."""
    num = np.einsum("bi,ij,bj->b", weights, sx * sy, weights)
    den = np.einsum("bi,ij,bj->b", weights, np.abs(sx), weights) * np.einsum(
        "bi,ij,bj->b", weights, np.abs(sy), weights
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / np.sqrt(den)


def _clusters(x: np.ndarray, y: np.ndarray, clusters: np.ndarray | None):
    """The pairs in one order (by measure, gap, cluster) and each cluster's run indices, the
    clusters in the order of their first run (one run each if `clusters` is None): a result
    depends on the runs, not on the order they were listed in, and with one run per cluster
    the cluster bootstrap is the run bootstrap."""
    groups = np.arange(len(x)) if clusters is None else np.asarray(clusters, float)
    order = np.lexsort((groups, y, x))
    x, y, groups = np.asarray(x, float)[order], np.asarray(y, float)[order], groups[order]
    _, first = np.unique(groups, return_index=True)
    return x, y, [np.flatnonzero(groups == groups[i]) for i in sorted(first)]


def bootstrap_tau(
    x: np.ndarray, y: np.ndarray, resamples: int, seed: int, clusters: np.ndarray | None = None
) -> tuple[float, float]:
    """The 95% percentile interval of τ over resampled runs, or, given `clusters` (each run's
    trial seed), over resampled clusters: the runs of a seed share their initial point, so they
    are drawn together (a cluster bootstrap; NaN from one cluster, whose resamples are all
    alike). Resamples with a constant measure or gap, where τ is undefined, are left out."""
    x, y, members = _clusters(x, y, clusters)
    if len(members) < 2:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(members), (resamples, len(members)))
    counts = np.zeros((resamples, len(members)))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    sizes = np.zeros((len(members), len(x)))
    for j, m in enumerate(members):
        sizes[j, m] = 1
    taus = _tau_b(_signs(x), _signs(y), counts @ sizes)
    taus = taus[np.isfinite(taus)]
    if len(taus) < resamples // 2:
        return np.nan, np.nan
    low, high = np.percentile(taus, [2.5, 97.5])
    return float(low), float(high)


def permutation_p(
    x: np.ndarray, y: np.ndarray, clusters: np.ndarray, resamples: int, seed: int
) -> float:
    """Two-sided p-value of τ against measures shuffled among the runs of each trial seed: the
    null keeps whatever a seed's shared start gives its runs in common, so only how the measure
    ranks the runs within seeds can make τ large. Exact (every such shuffle, the share with
    |τ*| ≥ |τ|) where there are at most `resamples` of them, else (1 + #{|τ*| ≥ |τ|}) /
    (1 + resamples) over random ones; NaN where τ is."""
    x, y, members = _clusters(x, y, clusters)
    sx, sy, ones = _signs(x), _signs(y), np.ones((1, len(x)))
    tau = _tau_b(sx, sy, ones)[0]
    if not np.isfinite(tau):
        return np.nan
    exact = math.prod(math.factorial(len(m)) for m in members) <= resamples
    if exact:
        shuffles = itertools.product(*(itertools.permutations(m) for m in members))
        orders = [np.concatenate(s) for s in shuffles]
        perms = np.tile(np.arange(len(x)), (len(orders), 1))
        perms[:, np.concatenate(members)] = orders
    else:
        rng = np.random.default_rng(seed)
        perms = np.tile(np.arange(len(x)), (resamples, 1))
        for m in members:
            perms[:, m] = m[rng.permuted(np.tile(np.arange(len(m)), (resamples, 1)), axis=1)]
    block = max(1, 4_000_000 // len(x) ** 2)  # shuffles at a time: 32 MB of pairs at most
    num = np.concatenate([
        np.einsum("bij,ij->b", sx[p[:, :, None], p[:, None, :]], sy)
        for p in np.array_split(perms, range(block, len(perms), block))
    ])  # fmt: skip
    taus = num / np.sqrt(np.abs(sx).sum() * np.abs(sy).sum())
    extreme = int((np.abs(taus) >= abs(tau) - 1e-12).sum())
    return extreme / len(perms) if exact else (1 + extreme) / (1 + resamples)


def granulated_tau(table: pd.DataFrame, measure: str, gap: str) -> tuple[float, int]:
    """Mean τ within groups that differ only in batch size, and the number of groups."""
    taus = []
    for _, group in table.groupby(["seed", "remedy", "warm_epoch"]):
        if group.batch_size.nunique() >= 2:
            tau = kendall(group[measure].to_numpy(), group[gap].to_numpy())
            if np.isfinite(tau):
                taus.append(tau)
    return (float(np.mean(taus)) if taus else np.nan), len(taus)


def verdict(
    table: pd.DataFrame, sb: str, lb: str, resamples: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """One row per measure and gap: the sign test, τ with its cluster-bootstrap interval and
    within-seed permutation p-value (and the run-bootstrap interval), granulated τ; over the
    runs where both are numbers (`runs`: a diverged run has neither a measure nor a loss gap)."""
    rows = []
    for measure in measures_of(table):
        for gap in GAPS:
            x, y = table[measure].to_numpy(float), table[gap].to_numpy(float)
            both = np.isfinite(x) & np.isfinite(y)
            x, y, seeds = x[both], y[both], table.seed.to_numpy(float)[both]
            low, high = bootstrap_tau(x, y, resamples, seed, clusters=seeds)
            runs_low, runs_high = bootstrap_tau(x, y, resamples, seed)
            p = permutation_p(x, y, seeds, resamples, seed)
            psi, groups = granulated_tau(table, measure, gap)
            rows.append(
                {
                    "measure": measure,
                    "gap": gap,
                    "runs": int(both.sum()),
                    **sign_test(table, measure, sb, lb),
                    "tau": kendall(x, y),
                    "tau_low": low,
                    "tau_high": high,
                    "perm_p": p,
                    "predicts": bool((low > 0 or high < 0) and p <= 0.05),
                    "tau_low_runs": runs_low,
                    "tau_high_runs": runs_high,
                    "tau_batch": psi,
                    "batch_groups": groups,
                }
            )
    return pd.DataFrame(rows)


def matched_verdict(frames: Iterable[pd.DataFrame], sb: str, lb: str) -> pd.DataFrame:
    """SB vs LB at each matched training-loss level (and on the final iterates, f over the
    examples trained on or over all training images): per measure, the mean of each regime and
    the sign test over trials (the rows of `sharpminima matched`); no rows without frames (a
    study that compares no trial at matched loss)."""
    frames = list(frames)
    if not frames:
        return pd.DataFrame(columns=["level", "examples", "measure", "sb_mean", "lb_mean"])
    table = pd.concat(frames, ignore_index=True)
    rows = []
    for (level, examples, measure), part in table.groupby(
        ["level", "examples", "measure"], dropna=False, sort=False
    ):
        part = part.rename(columns={"value": measure})
        mean = part.groupby("regime")[measure].mean()
        epochs = part.groupby("regime").epoch.mean()
        rows.append(
            {
                "level": level,
                "examples": examples,
                "measure": measure,
                "sb_epoch_mean": epochs.get(sb, np.nan),
                "lb_epoch_mean": epochs.get(lb, np.nan),
                "sb_mean": mean.get(sb, np.nan),
                "lb_mean": mean.get(lb, np.nan),
                **sign_test(part, measure, sb, lb),
            }
        )
    return pd.DataFrame(rows)


def methods_table(table: pd.DataFrame, sb: str) -> pd.DataFrame:
    """Per training method (Appendix E's remedies, the methods since the paper, 'none') and
    regime: the trials and how many of them diverged, train and test accuracy (mean; test also
    std), how many points the test accuracy is below the plain SB runs' (`below_sb`: the gap a
    method leaves), and each measure's median over the trials that have it (not diverged ones):
    a measure can span decades across trials (F1's LB φ: 0.1 to 240), where a mean is one trial."""
    measures = {m: (m, "median") for m in measures_of(table)}
    out = (
        table.groupby(["remedy", "regime"], sort=False)
        .agg(
            batch_size=("batch_size", "first"),
            trials=("seed", "size"),
            diverged=("diverged", "sum"),
            train_acc=("train_acc", "mean"),
            test_acc=("test_acc", "mean"),
            test_std=("test_acc", "std"),
            **measures,
        )
        .reset_index()
        .fillna({"test_std": 0.0})
        .rename(columns={"remedy": "method"})
    )
    baseline = table.test_acc[table.regime == sb].mean()
    out.insert(out.columns.get_loc("test_std") + 1, "below_sb", baseline - out.test_acc)
    return out


def density_table(paths: Iterable[str | Path], points: int = 400) -> pd.DataFrame:
    """Each run's smoothed spectral density (of `sharpminima curvature density`) on one λ grid
    over all of them; the Gaussian kernel's σ is 1% of the grid's span."""
    paths = list(paths)
    results = [_read(p, "curvature density") for p in paths]
    if any(r.get("measure") != "density" for r in results):
        raise UserError("--density takes results of `sharpminima curvature density` only")
    keys = [(r["regime"], "trial", r["run_seed"]) for r in results]
    refuse_duplicates(zip(keys, paths, strict=True), "density")
    results = [r for r in results if "undefined" not in r]  # diverged runs have no spectrum
    if not results:
        return pd.DataFrame(columns=["network", "regime", "seed", "eigenvalue", "density"])
    nodes = np.concatenate([np.ravel(r["nodes"]) for r in results])
    sigma = 0.01 * max(np.ptp(nodes), 1e-12)
    grid = np.linspace(nodes.min() - 5 * sigma, nodes.max() + 5 * sigma, points)
    frames = []
    for r in results:
        spectrum = density(r["nodes"], r["weights"], grid, sigma)
        run = {"network": r["network"], "regime": r["regime"], "seed": r["run_seed"]}
        frames.append(pd.DataFrame({**run, "eigenvalue": grid, "density": spectrum}))
    return pd.concat(frames, ignore_index=True).assign(sigma=sigma)


def write_panel(
    runs: Iterable[str | Path],
    results: Iterable[str | Path],
    densities: Iterable[str | Path],
    matched: Iterable[str | Path],
    out_dir: str | Path,
    sb: str,
    lb: str,
    resamples: int = 2000,
    seed: int = 0,
) -> list[Path]:
    """In `out_dir`: panel.csv/.md (every run, every measure), verdict.csv/.md, methods.csv/.md
    (per training method), density.csv and matched.csv/.md (from the CSVs of `sharpminima
    matched`; without rows where none are given)."""
    if resamples < 100:
        raise UserError(f"--bootstrap must be at least 100, got {resamples}")
    table = panel_table(runs, results)
    judged = verdict(table, sb, lb, resamples, seed)
    spectra = density_table(densities)
    tables = [
        ("panel", table),
        ("verdict", judged),
        ("methods", methods_table(table, sb)),
        ("matched", matched_verdict(map(_read_csv, matched), sb, lb)),
    ]
    out_dir = Path(out_dir)
    written = []
    with atomic_path(out_dir / "density.csv") as tmp:
        spectra.to_csv(tmp, index=False)
    for name, frame in tables:
        for suffix in (".csv", ".md"):
            path = out_dir / f"{name}{suffix}"
            with atomic_path(path) as tmp:
                if suffix == ".csv":
                    frame.to_csv(tmp, index=False)
                else:
                    tmp.write_text(markdown(frame, name))
            written.append(path)
    return [*written, out_dir / "density.csv"]
