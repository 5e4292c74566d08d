"""How much φ depends on the choices the paper leaves open: BatchNorm mode × start × ε, and
the random subspace's A (entries Gaussian or uniform, columns scaled to unit norm or not).

One table and one figure per network, from sharpness results computed every way on the same
minimizers (the workflow's `sensitivity_report` target).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path, read_json
from .figures import DEFAULT_STYLE, Style, plt, save

VARIANT = ["bn", "start"]
ROW = ["regime", "space", "eps"]
SHORT = {"zero": "y₀ = 0", "random": "random", "multistart": "multi"}


def collect(json_files: Iterable[str | Path]) -> pd.DataFrame:
    keys = (
        "network",
        "regime",
        "run_seed",
        "space",
        "eps",
        "bn",
        "start",
        "phi",
        "f_x",
        "f_max",
        "nit",
        "nfev",
        "message",
    )
    results = (read_json(p, keys, "sharpness") for p in json_files)
    rows = [{k: r[k] for k in keys} for r in results]
    df = pd.DataFrame(rows).rename(columns={"run_seed": "seed"})
    order = {"bn": ["batch", "running"], "start": list(SHORT)}
    rank = {c: df[c].map({v: i for i, v in enumerate(order[c])}) for c in VARIANT}
    return (
        df.assign(_bn=rank["bn"], _start=rank["start"])
        .sort_values(["_bn", "_start"], kind="stable")
        .drop(columns=["_bn", "_start"])
    )


def table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean φ over trials (and the smallest nit) for each regime × space × ε × bn × start."""
    return (
        results.groupby(ROW + VARIANT, sort=False)
        .agg(
            phi=("phi", "mean"),
            phi_std=("phi", "std"),
            trials=("phi", "size"),
            nit_min=("nit", "min"),
            nfev_max=("nfev", "max"),
        )
        .reset_index()
    )


def markdown(summary: pd.DataFrame, network: str) -> str:
    wide = summary.pivot_table(index=ROW, columns=VARIANT, values="phi", sort=False)
    columns = [f"{bn} BN, {start}" for bn, start in wide.columns]
    lines = [
        f"### Sharpness sensitivity, {network}: φ by BatchNorm mode, start point and A",
        "",
        "| regime | space | ε | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for (regime, space, eps), row in wide.iterrows():
        cells = " | ".join(f"{v:.4g}" if np.isfinite(v) else "" for v in row.to_numpy())
        lines.append(f"| {regime} | {space} | {eps:g} | {cells} |")
    trials = int(summary.trials.max())
    lines += [
        "",
        f"Mean over {trials} trial(s). BN: statistics inside f (batch = per chunk, "
        "as the authors' Keras code; running = eval mode). Start: L-BFGS-B's y₀ (zero = "
        "the paper; random = uniform in C_ε; multistart = zero and random starts, best "
        "kept). Space: full (A = I); random (A's entries N(0, 1), unit-norm columns), "
        "random-uniform (entries uniform in [0, 1), unit-norm columns, as the public SmoothOut "
        "reimplementation), -raw (columns not scaled). An empty cell was not measured.",
    ]
    return "\n".join(lines) + "\n"


def figure(
    summary: pd.DataFrame, network: str, out: str | Path, style: Style = DEFAULT_STYLE
) -> list[Path]:
    """φ on a log axis: one panel per space × ε, bars per bn × start, SB beside LB."""
    panels = list(summary[["space", "eps"]].drop_duplicates().itertuples(index=False))
    variants = list(summary[VARIANT].drop_duplicates().itertuples(index=False))
    regimes = list(dict.fromkeys(summary.regime))
    with plt.rc_context(style.rc()):
        fig, axes = plt.subplots(
            1,
            len(panels),
            figsize=(1.3 * style.width * len(panels), style.height + 0.2),
            squeeze=False,
            sharey=True,
        )
        width = 0.8 / len(regimes)
        for ax, (space, eps) in zip(axes[0], panels, strict=True):
            part = summary[(summary.space == space) & (summary.eps == eps)]
            for j, regime in enumerate(regimes):
                values = [
                    part[(part.regime == regime) & (part.bn == bn) & (part.start == st)].phi
                    for bn, st in variants
                ]
                heights = [v.iloc[0] if len(v) else np.nan for v in values]
                x = np.arange(len(variants)) + (j - (len(regimes) - 1) / 2) * width
                ax.bar(x, np.maximum(heights, 1e-12), width, label=regime)
            ax.set_yscale("log")
            ax.set_xticks(range(len(variants)))
            ax.set_xticklabels([f"{bn}\n{SHORT.get(st, st)}" for bn, st in variants])
            ax.set_title(f"{space} space, ε = {eps:g}")
            ax.grid(True, axis="y", lw=0.3, alpha=0.5)
        axes[0][0].set_ylabel("sharpness φ")
        axes[0][0].legend(frameon=False)
        fig.suptitle(f"{network}: sharpness by BatchNorm mode, L-BFGS-B start and A", y=1.02)
        return save(fig, out)


def report(
    json_files: Iterable[str | Path], out_dir: str | Path, style: Style = DEFAULT_STYLE
) -> list[Path]:
    """sensitivity.{csv,md,png,pdf} in `out_dir`."""
    out_dir = Path(out_dir)
    results = collect(json_files)
    network = ", ".join(dict.fromkeys(results.network))
    summary = table(results)
    with atomic_path(out_dir / "sensitivity.csv") as tmp:
        summary.to_csv(tmp, index=False)
    with atomic_path(out_dir / "sensitivity.md") as tmp:
        tmp.write_text(markdown(summary, network))
    return [
        out_dir / "sensitivity.csv",
        out_dir / "sensitivity.md",
        *figure(summary, network, out_dir / "sensitivity.png", style),
    ]
