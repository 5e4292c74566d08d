"""SB against LB at matched training loss, and with f over all training images.

Where a run stopped decides much of its sharpness: the same seed trained on two CPU models
stopped 8 epochs apart, and LB φ over five F1 trials ranged 0.1-240 (docs/results-f1.md). For
one trial's SB and LB runs this takes each training-loss level both runs reach and, in each run,
the stored iterate whose recorded training loss is closest to it (on a log scale), and measures
both there with every measure of the panel. It also measures φ of both final iterates on all
training images, the held-out validation split included, beside φ on the examples each run
trained on (on F1 the 5,000 held-out images raised LB φ from 0.15 to 268).

Every finished point is kept in `<out>.partial/`, so a killed job resumes with the rest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from .. import workdir
from ..errors import UserError
from ..guard import writes
from ..measures import adaptive, curvature
from ..measures.sharpness import SharpnessConfig, sharpness
from ..runtime import pick_device
from ..store import Run, non_finite
from .panel import VALUE


def _value(name: str, measure: Callable) -> Callable:
    return lambda model, data, cfg: measure(model, data, cfg)[VALUE[name]]


# Measure -> its settings class and its value of (model, (x, y), settings).
MEASURES: dict[str, tuple[type, Callable]] = {
    "phi": (SharpnessConfig, lambda model, data, cfg: sharpness(model, *data, cfg)["phi"]),
    **{n: (c, _value(n, curvature.curvature)) for n, (c, _) in curvature.MEASURES.items()
       if n in VALUE},
    **{n: (c, _value(n, adaptive.adaptive)) for n, (c, _) in adaptive.MEASURES.items()},
}  # fmt: skip


def read_settings(text: str) -> dict[str, object]:
    """`--settings`: a JSON object, measure -> its settings (measures left out are not taken)."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise UserError(f"--settings is not JSON ({e}): give an object such as "
                        '\'{"phi": {"eps": 0.001}, "trace": {}}\'') from None  # fmt: skip
    if not isinstance(raw, dict) or not raw:
        raise UserError("--settings must be a JSON object naming at least one measure")
    settings = {}
    for name, values in raw.items():
        if name not in MEASURES:
            raise UserError(f"--settings: unknown measure {name!r}: use {', '.join(MEASURES)}")
        try:
            settings[name] = MEASURES[name][0](**values)
        except TypeError as e:
            raise UserError(f"--settings: {name}: {e}") from None
        settings[name].check()
    return settings


def candidates(run: Run) -> dict[int, float]:
    """Each epoch whose iterate is stored (x₀ and the final one included) -> its recorded
    training loss, where that is a number (a diverged run's last one is not)."""
    loss = run.history.set_index("epoch").train_loss
    last = int(run.attrs["epochs"])
    stored = sorted({0, *run.epochs, last})
    return {int(e): float(loss[e]) for e in stored if e in loss.index and math.isfinite(loss[e])}


def closest(losses: dict[int, float], level: float) -> int:
    """The epoch whose loss is closest to `level` on a log scale."""
    return min(losses, key=lambda e: abs(math.log(max(losses[e], 1e-300)) - math.log(level)))


def points(sb: Run, lb: Run, levels: Iterable[float]) -> list[tuple[float, dict[str, int]]]:
    """(level, {regime: epoch}) for each level both runs reach, in the order given."""
    losses = {run.label: candidates(run) for run in (sb, lb)}
    both = [lv for lv in levels if all(min(x.values()) <= lv for x in losses.values())]
    return [(lv, {regime: closest(x, lv) for regime, x in losses.items()}) for lv in both]


def _iterate(run: Run, epoch: int) -> str | int:
    if epoch == 0:
        return "init"
    return epoch if epoch in run.epochs else "final"


@writes()
def matched(
    sb_path: str | Path,
    lb_path: str | Path,
    settings: dict[str, object],
    levels: Iterable[float],
    out: str | Path,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """One row per regime, point and measure: the level (NaN for the final iterates), epoch,
    recorded training loss, the examples f is taken over (`trained` or `all`), the value."""
    levels = sorted(set(levels), reverse=True)
    if not levels or min(levels) <= 0 or not all(np.isfinite(levels)):
        raise UserError(f"--levels must be positive finite numbers, got {levels}")
    sb, lb = Run(sb_path), Run(lb_path)
    same = all(sb.attrs[k] == lb.attrs[k] for k in ("seed", "network", "dataset_sha256"))
    if not same or sb.label == lb.label:
        raise UserError(f"{sb_path} and {lb_path} are not one trial's SB and LB: give two "
                        "regimes of one network, dataset and seed")  # fmt: skip
    plan = [(lv, epochs, "trained", name) for lv, epochs in points(sb, lb, levels)
            for name in settings]  # fmt: skip
    final = {r.label: int(r.attrs["epochs"]) for r in (sb, lb)}
    if "phi" in settings:
        plan += [(math.nan, final, examples, "phi") for examples in ("trained", "all")]
    work = workdir.folder(out)
    identity = {
        "runs": [[str(r.path), r.attrs["finished"]] for r in (sb, lb)],
        "levels": levels,
        "settings": {name: asdict(cfg) for name, cfg in settings.items()},
    }
    workdir.prepare(work, identity, log)
    dev = pick_device(device)
    rows, i, total = [], 0, 2 * len(plan)
    for run in (sb, lb):
        data = {}  # loaded once per run and examples, only if a point of it is missing
        losses = candidates(run)
        for level, epochs, examples, name in plan:
            point, i = work / f"{i:04d}.json", i + 1
            row = workdir.cached(point, "value", log)
            if row is None:
                epoch = epochs[run.label]
                if examples not in data:
                    d = run.data(all_training=examples == "all")
                    data[examples] = (d.x_train.to(dev), d.y_train.to(dev))
                at = "final" if math.isnan(level) else f"level {level:g}"
                log(f"point {i}/{total}: {run.label} epoch {epoch} ({at}), {name} on the "
                    f"{examples} examples")  # fmt: skip
                model = run.model(_iterate(run, epoch)).to(dev)
                if non_finite(model):  # a diverged run's final iterate: no measure there
                    why = run.attrs.get("stop_reason", "unknown")  # as store.measure_iterate
                    log(f"{name}: not taken, the weights are not finite ({why})")
                    value = math.nan
                else:
                    value = MEASURES[name][1](model, data[examples], settings[name])
                row = {
                    "network": run.attrs["network"], "seed": run.attrs["seed"],
                    "regime": run.label, "batch_size": run.attrs["batch_size"], "level": level,
                    "epoch": epoch, "train_loss_recorded": losses.get(epoch, math.nan),
                    "examples": examples, "n_examples": len(data[examples][1]), "measure": name,
                    "value": float(value),
                }  # fmt: skip
                workdir.keep(point, row)
                log(f"{name} {row['value']:.6g}")
            rows.append(row)
    return pd.DataFrame(rows)
