"""Numbers the paper reads off finished runs, with no further training: accuracy per epoch
(Figure 2), distances travelled from the initial point, and the iterations of Appendix C's
performance model. Each returns a DataFrame that the workflow writes as CSV and draws.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import read_json
from ..errors import UserError, refuse_duplicates
from ..store import Run, open_runs


def _runs(paths: Iterable[str | Path]) -> list[Run]:
    runs = open_runs(paths)
    networks = {r.attrs["network"] for r in runs}
    if len(networks) != 1:
        raise UserError(f"runs of {len(networks)} networks ({networks}): pass one network's runs")
    return runs


def accuracy_curves(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Figure 2: train and test accuracy per epoch, mean ± std over the trials of each regime.

    Runs stop at different epochs; an epoch's row averages the trials that reached it, and
    `trials` says how many did.
    """
    runs = _runs(paths)
    columns = ["regime", "seed", "epoch", "train_acc", "test_acc"]
    long = pd.concat(
        [r.history.assign(regime=r.label, seed=r.attrs["seed"])[columns] for r in runs],
        ignore_index=True,
    )
    curves = (
        long.groupby(["regime", "epoch"], sort=False)
        .agg(
            trials=("seed", "size"),
            train_mean=("train_acc", "mean"),
            train_std=("train_acc", "std"),
            test_mean=("test_acc", "mean"),
            test_std=("test_acc", "std"),
        )
        .reset_index()
        .fillna({"train_std": 0.0, "test_std": 0.0})
    )
    curves.insert(0, "network", runs[0].attrs["network"])
    curves.insert(1, "dataset", runs[0].attrs["dataset"])
    return curves


def _pairs(sb_paths: Iterable[str | Path], lb_paths: Iterable[str | Path]) -> list[tuple[Run, Run]]:
    """(SB, LB) runs of each trial, matched by seed; a trial missing its LB run is refused."""
    lb = {r.attrs["seed"]: r for r in _runs(lb_paths)}
    pairs = []
    for sb in _runs(sb_paths):
        seed = sb.attrs["seed"]
        if seed not in lb:
            raise UserError(f"no LB run of trial {seed} beside {sb.path}: pass both of a trial")
        pairs.append((sb, lb[seed]))
    return pairs


def _parameters(run: Run, which: str, names: list[str]) -> torch.Tensor:
    """The parameters `names` of an iterate as one vector."""
    state = run.state(which)
    return torch.cat([state[k].flatten().double() for k in names])


def distances(sb_paths: Iterable[str | Path], lb_paths: Iterable[str | Path]) -> pd.DataFrame:
    """‖x_SB − x₀‖, ‖x_LB − x₀‖ and their ratio per trial (paper: a ratio of 3–10), over the
    trainable parameters (BatchNorm buffers are statistics, not the point the optimizer moved).

    SB and LB of a trial start from one x₀ (the trial's seed), which is checked.
    """
    pairs = _pairs(sb_paths, lb_paths)
    names = sorted(k for k, _ in pairs[0][0].architecture().named_parameters())
    rows = []
    for sb, lb in pairs:
        x0 = _parameters(sb, "init", names)
        if not torch.equal(x0, _parameters(lb, "init", names)):
            raise UserError(f"{sb.path} and {lb.path} start from different points")
        d_sb = float((_parameters(sb, "final", names) - x0).norm())
        d_lb = float((_parameters(lb, "final", names) - x0).norm())
        rows.append(
            {
                "network": sb.attrs["network"],
                "seed": sb.attrs["seed"],
                "sb": sb.label,
                "lb": lb.label,
                "sb_distance": d_sb,
                "lb_distance": d_lb,
                "ratio": d_sb / d_lb,
                "x0_norm": float(x0.norm()),
            }
        )
    return pd.DataFrame(rows).sort_values("seed", ignore_index=True)


def lb_bound(fs: np.ndarray | float, batch_ratio: float) -> np.ndarray | float:
    """Appendix C: LB is faster iff I_ℓ/I_s < B_s / (f_s(P) B_ℓ); this is that bound, for a
    small-batch parallel efficiency f_s(P) and batch_ratio = B_s/B_ℓ (LB efficiency taken as 1).
    """
    return batch_ratio / np.asarray(fs, dtype=float)


def iterations(sb_paths: Iterable[str | Path], lb_paths: Iterable[str | Path]) -> pd.DataFrame:
    """Measured I_s, I_ℓ (optimizer steps to the stopping epoch) per trial, their ratio, and the
    parallel efficiency f_s below which LB would have been faster: B_s / (B_ℓ · I_ℓ/I_s)."""
    rows = []
    for sb, other in _pairs(sb_paths, lb_paths):
        i_s = sb.attrs["epochs"] * sb.attrs["steps_per_epoch"]
        i_l = other.attrs["epochs"] * other.attrs["steps_per_epoch"]
        ratio = sb.attrs["batch_size"] / other.attrs["batch_size"]
        rows.append(
            {
                "network": sb.attrs["network"],
                "seed": sb.attrs["seed"],
                "batch_s": sb.attrs["batch_size"],
                "batch_l": other.attrs["batch_size"],
                "iters_s": i_s,
                "iters_l": i_l,
                "iter_ratio": i_l / i_s,
                "fs_break_even": ratio / (i_l / i_s),
            }
        )
    return pd.DataFrame(rows).sort_values("seed", ignore_index=True)


def _phis(paths: Iterable[str | Path]) -> dict[tuple[str, int], dict]:
    """Full-space φ JSONs keyed by (regime, trial)."""
    phis, keys = {}, []
    for path in paths:
        phi = read_json(path, ("regime", "run_seed", "phi", "eps"), "sharpness")
        phis[(phi["regime"], phi["run_seed"])] = phi
        keys.append(((phi["regime"], "trial", phi["run_seed"]), path))
    refuse_duplicates(keys, "φ")
    return phis


def _phi_of(run: Run, phis: dict[tuple[str, int], dict]) -> dict[str, float]:
    """The run's φ and its ε, from the --phi files."""
    phi = phis.get((run.label, run.attrs["seed"]))
    if phi is None:
        raise UserError(f"no φ of {run.path} among the --phi files: pass one per run")
    return {"phi": phi["phi"], "eps": phi["eps"]}


def _final(run: Run) -> dict[str, float]:
    """What the run recorded at its last epoch."""
    last = run.history.iloc[-1]
    return {
        "epochs": int(last.epoch),
        "train_loss": last.train_loss,
        "train_acc": last.train_acc,
        "test_acc": last.test_acc,
    }


def sweep(run_paths: Iterable[str | Path], phi_paths: Iterable[str | Path]) -> pd.DataFrame:
    """Figure 4: final test accuracy and φ against the batch size, mean ± std over trials."""
    phis = _phis(phi_paths)
    rows = [
        {
            "network": r.attrs["network"],
            "regime": r.label,
            "batch_size": r.attrs["batch_size"],
            "seed": r.attrs["seed"],
            "stop": r.attrs["stop"],
            **_final(r),
            **_phi_of(r, phis),
        }
        for r in _runs(run_paths)
    ]
    table = (
        pd.DataFrame(rows)
        .groupby(["network", "batch_size", "regime", "eps"])
        .agg(
            trials=("seed", "size"),
            stop=("stop", "first"),
            epochs=("epochs", "max"),
            test_mean=("test_acc", "mean"),
            test_std=("test_acc", "std"),
            phi_mean=("phi", "mean"),
            phi_std=("phi", "std"),
            train_loss_mean=("train_loss", "mean"),
        )
        .reset_index()
    )
    return table.fillna({"test_std": 0.0, "phi_std": 0.0})


def warmstart(
    sb_paths: Iterable[str | Path],
    lb_paths: Iterable[str | Path],
    phi_paths: Iterable[str | Path],
) -> pd.DataFrame:
    """Figure 5: per trial and warm-start epoch e, the test accuracy of the SB iterate at e and
    the test accuracy, train loss and φ of the LB run started from it."""
    phis = _phis(phi_paths)
    sb = {r.attrs["seed"]: r for r in _runs(sb_paths)}
    rows = []
    for lb in _runs(lb_paths):
        seed, epoch = lb.attrs["seed"], lb.attrs.get("warm_epoch")
        source = sb.get(seed)
        mine = source is not None and lb.attrs.get("warm_run_finished") == source.attrs["finished"]
        if epoch is None or not mine:
            raise UserError(f"{lb.path} is not warm-started from one of the --sb runs")
        sb_row = source.history.set_index("epoch").loc[epoch]
        final, phi = _final(lb), _phi_of(lb, phis)
        rows.append(
            {
                "network": lb.attrs["network"],
                "seed": seed,
                "warm_epoch": epoch,
                "sb_batch": source.attrs["batch_size"],
                "lb_batch": lb.attrs["batch_size"],
                "sb_test_acc": sb_row.test_acc,
                "lb_epochs": final["epochs"],
                "lb_test_acc": final["test_acc"],
                "lb_train_loss": final["train_loss"],
                "lb_phi": phi["phi"],
                "eps": phi["eps"],
            }
        )
    return pd.DataFrame(rows).sort_values(["seed", "warm_epoch"], ignore_index=True)


# Appendix E's reported numbers (PAPER.md; Table 6 itself was lost from the paper's text).
PAPER_REMEDIES = {
    ("C2", "augmentation"): "SB 89.82%, LB 90.26%, LB φ 468",
    ("C4", "augmentation"): "SB 63.05%, LB 65.88%",
    ("F2", "conservative"): "LB 61.94% (plain SB 64.02%)",
    ("C3", "conservative"): "LB 45.98% (plain SB 49.58%)",
}


def remedy(attrs: dict) -> str:
    """What a run was trained with beyond the protocol: Appendix E's remedies and the methods
    since the paper (docs/modern.md), e.g. 'conservative λ=0.001 × 3' or 'ASAM ρ=0.5'."""
    parts = []
    if attrs.get("augment"):
        parts.append("augmentation")
    if attrs.get("proximal", 0) > 0:
        parts.append(f"conservative λ={attrs['proximal']:g} × {attrs['proximal_steps']}")
    if attrs.get("fgsm", 0) > 0:
        parts.append(f"FGSM ε={attrs['fgsm']:g} (share {attrs['fgsm_weight']:g})")
    if attrs.get("stability", 0) > 0:
        parts.append(f"stability α={attrs['stability']:g} σ={attrs['stability_sigma']:g}")
    if attrs.get("sam", 0) > 0:
        parts.append(f"{'ASAM' if attrs.get('sam_adaptive') else 'SAM'} ρ={attrs['sam']:g}")
    if attrs.get("ghost_batch", 0) > 0:
        parts.append(f"ghost BN {attrs['ghost_batch']}")
    if attrs.get("lr_scaling", "none") != "none":
        parts.append(f"{attrs['lr_scaling']} lr scaling")
    if attrs.get("warmup_epochs", 0) > 0:
        parts.append(f"warm-up {attrs['warmup_epochs']:g} ep")
    if attrs.get("ramp_start", 0) > 0:
        parts.append(f"ramp from {attrs['ramp_start']:g} over {attrs['ramp_epochs']} ep")
    if attrs.get("optimizer", "adam") != "adam":
        parts.append(attrs["optimizer"].upper())
    return " + ".join(parts) or "none"


def remedies(run_paths: Iterable[str | Path], phi_paths: Iterable[str | Path]) -> pd.DataFrame:
    """Table 6 and E.2/E.3: per remedy and batch size, train and test accuracy and φ, mean ± std
    over trials; the runs without a remedy are the baseline ('none')."""
    phis = _phis(phi_paths)
    rows = []
    for r in _runs(run_paths):
        method = remedy(r.attrs)
        rows.append(
            {
                "network": r.attrs["network"],
                "remedy": method,
                "regime": r.label if method == "none" else r.label.rsplit("_", 1)[0],
                "batch_size": r.attrs["batch_size"],
                "seed": r.attrs["seed"],
                **_final(r),
                **_phi_of(r, phis),
            }
        )
    table = (
        pd.DataFrame(rows)
        .groupby(["network", "remedy", "regime", "batch_size", "eps"], sort=False)
        .agg(
            trials=("seed", "size"),
            train_mean=("train_acc", "mean"),
            test_mean=("test_acc", "mean"),
            test_std=("test_acc", "std"),
            phi_mean=("phi", "mean"),
            phi_std=("phi", "std"),
        )
        .reset_index()
        .fillna({"test_std": 0.0, "phi_std": 0.0})
    )
    return table.sort_values(["remedy", "batch_size"], key=_none_first, ignore_index=True)


def _none_first(column: pd.Series) -> pd.Series:
    return column.map(lambda v: "" if v == "none" else v) if column.name == "remedy" else column


def remedies_markdown(table: pd.DataFrame) -> str:
    """Table 6 in Markdown: per remedy, each regime's test accuracy and φ, beside the paper."""
    network = table.network.iloc[0]
    regimes = list(dict.fromkeys(table.sort_values("batch_size").regime))
    head = [f"{r} test %" for r in regimes] + [f"{r} φ" for r in regimes]
    lines = [
        f"Table 6 and Appendix E for {network}: test accuracy and φ (ε = {table.eps.iloc[0]:g}), "
        "mean ± std over trials.",
        "",
        "| remedy | " + " | ".join(head) + " | paper |",
        "|---" * (len(head) + 2) + "|",
    ]
    for method, rows in table.groupby("remedy", sort=False):
        by = rows.set_index("regime")
        cells = [f"{by.test_mean[r]:.2f} ± {by.test_std[r]:.2f}" if r in by.index else "–"
                 for r in regimes]  # fmt: skip
        cells += [f"{by.phi_mean[r]:.4g} ± {by.phi_std[r]:.2g}" if r in by.index else "–"
                  for r in regimes]  # fmt: skip
        name = method.split(" ")[0]
        paper = PAPER_REMEDIES.get((network, name), "")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {paper} |")
    return "\n".join(lines) + "\n"


def markdown(table: pd.DataFrame, what: str) -> str:
    """A measurement's table in Markdown beside its CSV; Table 6 (remedies) in the paper's
    layout, the others column for column as in the CSV."""
    if what == "remedies":
        return remedies_markdown(table)

    def cell(value) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|---" * len(table.columns) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
