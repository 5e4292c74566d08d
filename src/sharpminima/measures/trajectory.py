"""Figure 6: Metric 2.1 of the stored iterates along a training run, against the loss.

A trajectory is tens of φ computations (each minutes on a CPU), so every finished point is
kept in `<out>.partial/` and a restarted job computes only the points still missing; the CSV
is written once all are done, and the work folder removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from .. import workdir
from ..errors import UserError
from ..guard import writes
from ..runtime import pick_device
from ..store import Run
from .sharpness import SharpnessConfig, sharpness


def epochs(run: Run, every: int) -> list[int]:
    """Epoch 0 (x₀), every `every`-th stored epoch, and the last epoch trained."""
    if every < 1:
        raise UserError(f"--every must be at least 1, got {every}")
    last = int(run.attrs["epochs"])
    chosen = [0, *(e for e in run.epochs if e % every == 0), last]
    return sorted(set(chosen))


def _iterate(run: Run, epoch: int) -> str | int:
    if epoch == 0:
        return "init"
    return epoch if epoch in run.epochs else "final"  # the last epoch need not be stored


@writes()
def trajectory(
    run_paths: Iterable[str | Path],
    bns: Iterable[str],
    cfg: SharpnessConfig,
    every: int,
    out: str | Path,
    device: str = "auto",
    cache_mb: float = 2048,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """φ (settings `cfg`, BatchNorm mode from `bns`) at `epochs(run, every)` of each run, with
    f(x) (the cross-entropy φ is relative to) and the run's recorded test accuracy there."""
    cfg.check()
    bns = list(bns)
    if not bns or set(bns) - {"batch", "running"}:
        raise UserError(f"BatchNorm modes must be batch and/or running, got {bns}")
    runs = [Run(p) for p in run_paths]
    for key in ("network", "dataset_sha256"):
        if len({r.attrs[key] for r in runs}) > 1:
            found = ", ".join(f"{r.path}: {str(r.attrs[key])[:12]}" for r in runs)
            raise UserError(f"the runs differ in {key} ({found}): give runs of one study")
    work = workdir.folder(out)
    identity = {
        "runs": [[str(r.path), r.attrs["finished"]] for r in runs],  # a retrained run differs
        "bns": bns,
        "every": every,
        "sharpness": asdict(cfg),
    }
    total = len(bns) * sum(len(epochs(r, every)) for r in runs)
    workdir.prepare(work, identity, log)
    dev = pick_device(device)
    rows, i = [], 0
    for run in runs:
        data = None  # loaded once per run, and only if a point of it is still missing
        for bn, epoch in ((bn, e) for bn in bns for e in epochs(run, every)):
            cached, i = work / f"{i:04d}.json", i + 1
            point = workdir.cached(cached, "phi", log)
            if point is not None:
                rows.append(point)
                continue
            log(f"point {i}/{total}: {run.path} epoch {epoch}, BatchNorm {bn}")
            if data is None:
                data = run.data()
                x, y = data.x_train.to(dev), data.y_train.to(dev)
            which = _iterate(run, epoch)
            point_cfg = SharpnessConfig(**{**asdict(cfg), "bn": bn})
            result = sharpness(run.model(which).to(dev), x, y, point_cfg, cache_mb)
            result.update(run.provenance(which, len(x), dev), epoch=epoch, **_recorded(run, epoch))
            workdir.keep(cached, result)
            log(f"phi {result['phi']:.4g} at f(x) {result['f_x']:.4g} ({result['seconds']:.0f}s)")
            rows.append(result)
    table = pd.DataFrame(rows).drop(columns="phi_path")  # a list per start: kept in the JSONs
    first = ["network", "regime", "run_seed", "bn", "epoch", "f_x", "phi", "test_acc"]
    return table[first + [c for c in table.columns if c not in first]]


def _recorded(run: Run, epoch: int) -> dict[str, float]:
    """The train loss and test accuracy training recorded at `epoch` (BatchNorm `eval_bn`)."""
    row = run.history.set_index("epoch").loc[epoch]
    return {
        "train_loss_recorded": float(row.train_loss),
        "test_acc": float(row.test_acc),
        "eval_bn": run.attrs["eval_bn"],
    }
