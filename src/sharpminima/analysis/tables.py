"""Tables 2, 3 and 4: our mean ± std over trials beside the paper's values, as CSV and Markdown.

The paper's numbers live in `paper_values.csv` (package data), one row per cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import pandas as pd
from scipy import stats

from ..atomic import atomic_path, read_json
from ..errors import UserError, refuse_duplicates
from ..models import NETWORKS
from ..store import open_runs

TITLES = {
    2: "Table 2: accuracy (%)",
    3: "Table 3: sharpness φ, full space",
    4: "Table 4: sharpness φ, random subspace",
}
KEYS = ["network", "regime", "metric", "eps"]


def paper_values() -> pd.DataFrame:
    with resources.files(__package__).joinpath("paper_values.csv").open() as f:
        df = pd.read_csv(f, dtype={"eps": str})
    return df.fillna({"eps": ""})


def _eps(value: object) -> str:
    return "" if value in ("", None) else f"{float(value):g}"


def run_cells(run_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run and accuracy: the final train and test accuracy (Table 2)."""
    rows = []
    runs = open_runs(run_files)
    trials = [((r.attrs["network"], r.label, "trial", r.attrs["seed"]), r.path) for r in runs]
    refuse_duplicates(trials, "trial")
    for run in runs:
        last = run.history.iloc[-1]
        for metric in ("train_acc", "test_acc"):
            rows.append(
                {
                    "table": 2,
                    "network": run.attrs["network"],
                    "regime": run.label,
                    "metric": metric,
                    "eps": "",
                    "seed": run.attrs["seed"],
                    "value": last[metric],
                    "epochs": run.attrs["epochs"],
                    "dataset": run.attrs["dataset"],
                }
            )
    return pd.DataFrame(rows)


PHI_KEYS = ("network", "regime", "space", "eps", "run_seed", "phi", "dataset")


def sharpness_cells(json_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per sharpness result (Tables 3 and 4), with the solver's statistics."""
    rows, keys = [], []
    for path in json_files:
        r = read_json(path, PHI_KEYS, "sharpness")
        keys.append(((r["network"], r["regime"], r["space"], f"eps {r['eps']}",
                      r.get("bn"), r.get("start"), "trial", r["run_seed"]), path))  # fmt: skip
        rows.append(
            {
                "table": 3 if r["space"] == "full" else 4,
                "network": r["network"],
                "regime": r["regime"],
                "metric": f"phi_{r['space']}",
                "eps": _eps(r["eps"]),
                "seed": r["run_seed"],
                "value": r["phi"],
                "nit": r.get("nit", 0),  # none where φ is undefined (a diverged run)
                "nfev": r.get("nfev", 0),
                "dataset": r["dataset"],
            }
        )
    refuse_duplicates(keys, "φ")
    return pd.DataFrame(rows)


def summarise(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (sample std, as the paper's ±) over trials, beside the paper's cell: with the
    ratio ours/paper where the network was trained on the paper's dataset for it; labelled with
    the paper's dataset (`paper_dataset`) and no ratio where it was trained on other real data
    (C1 on Fashion-MNIST beside C1 on CIFAR-10); none for a synthetic stand-in."""
    agg = {"n_trials": ("value", "size"), "mean": ("value", "mean"), "std": ("value", "std")}
    for stat in ("nit", "nfev"):
        if stat in cells:
            agg[f"{stat}_min"], agg[f"{stat}_max"] = (stat, "min"), (stat, "max")
    ours = cells.groupby(["table", *KEYS, "dataset"], sort=False).agg(**agg).reset_index()
    ours["std"] = ours["std"].fillna(0.0)
    paper = paper_values().rename(columns={"mean": "paper_mean", "std": "paper_std"})
    out = ours.merge(paper, on=["table", *KEYS], how="left")
    out["paper_dataset"] = out.network.map(lambda n: NETWORKS[n].dataset)
    out.loc[out.dataset == "synthetic", ["paper_mean", "paper_std", "paper_dataset"]] = None
    out["ratio"] = (out["mean"] / out["paper_mean"]).where(out.dataset == out.paper_dataset)
    return out


def markdown(summary: pd.DataFrame, table: int) -> str:
    """The paper's layout: one row per network, one column per regime (× ε), ours (paper)."""
    part = summary[summary.table == table]
    label = part.metric.str.replace("_acc", "") if table == 2 else "ε=" + part.eps
    part = part.assign(column=part.regime + " " + label)
    columns = list(dict.fromkeys(part.column))
    lines = [
        f"### {TITLES[table]}",
        "",
        "| network | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for network, rows in part.groupby("network", sort=False):
        cells = []
        for column in columns:
            row = rows[rows.column == column]
            if row.empty:
                cells.append("")
                continue
            r = row.iloc[0]
            cell = f"{r['mean']:.4g} ± {r['std']:.2g}"
            if pd.notna(r.paper_mean) and pd.notna(r.ratio):
                cell += f" ({r.paper_mean:g} ± {r.paper_std:g}; ×{r.ratio:.3g})"
            elif pd.notna(r.paper_mean):  # the paper's value on another dataset: no ratio
                cell += f" (paper on {r.paper_dataset}: {r.paper_mean:g} ± {r.paper_std:g})"
            if "nit_min" in r and pd.notna(r.nit_min):
                cell += f" [nit {int(r.nit_min)}–{int(r.nit_max)}]"
            cells.append(cell)
        lines.append(f"| {network} | " + " | ".join(cells) + " |")
    pairs = part[["network", "dataset"]].drop_duplicates().itertuples(index=False)
    datasets = ", ".join(f"{n} on {d}" for n, d in pairs)
    brackets = "; in brackets the L-BFGS-B iterations taken" if table != 2 else ""
    lines += [
        "",
        f"Ours ({datasets}): mean ± std over trials; in parentheses the paper's value and "
        f"ours/paper where the network was trained on the paper's dataset, the paper's value "
        f"labelled with its dataset (and no ratio) where it was trained on another{brackets}.",
    ]
    return "\n".join(lines) + "\n"


def gap_markdown(cells: pd.DataFrame) -> str:
    """The first regime's test accuracy minus the second's (SB − LB), per network, paired by
    trial (a seed's runs share their initial point): the mean, its 95% t-interval, each
    regime's range over trials, and whether the ranges are apart (every SB trial above every
    LB trial): a gap smaller than the trials' own spread is not one. Empty without a pair."""
    acc = cells[(cells.table == 2) & (cells.metric == "test_acc")]
    regimes = list(dict.fromkeys(acc.regime))[:2]
    if len(regimes) < 2:
        return ""
    a, b = regimes
    lines = [
        f"#### {a} − {b} test accuracy (points), paired by trial",
        "",
        f"| network | trials | gap | 95% interval (t) | {a} range | {b} range "
        f"| every {a} trial above every {b} |",
        "|---|---|---|---|---|---|---|",
    ]
    for network, part in acc.groupby("network", sort=False):
        wide = part.pivot_table(index="seed", columns="regime", values="value")
        if a not in wide or b not in wide:
            continue
        d = (wide[a] - wide[b]).dropna()
        half = stats.t.ppf(0.975, len(d) - 1) * d.std() / math.sqrt(len(d)) if len(d) > 1 else 0
        interval = f"[{d.mean() - half:.2f}, {d.mean() + half:.2f}]" if len(d) > 1 else "—"
        x, y = wide[a].dropna(), wide[b].dropna()
        apart = "yes" if x.min() > y.max() else "no"
        lines.append(
            f"| {network} | {len(d)} | {d.mean():.2f} | {interval} | {x.min():.2f}–{x.max():.2f} "
            f"| {y.min():.2f}–{y.max():.2f} | {apart} |"
        )
    return "\n".join(lines) + "\n" if len(lines) > 4 else ""


def write_tables(cells: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """tableN.csv and tableN.md for every table present in `cells` (table2.md also gives the
    SB − LB test-accuracy gap with its interval)."""
    if cells.empty:
        raise UserError("no runs and no sharpness results: give --runs and/or --sharpness")
    out_dir = Path(out_dir)
    summary = summarise(cells)
    written = []
    for table in sorted(summary.table.unique()):
        csv, md = out_dir / f"table{table}.csv", out_dir / f"table{table}.md"
        with atomic_path(csv) as tmp:
            summary[summary.table == table].to_csv(tmp, index=False)
        gap = "\n" + gap_markdown(cells) if table == 2 else ""
        with atomic_path(md) as tmp:
            tmp.write_text(markdown(summary, table) + gap)
        written += [csv, md]
    return written
