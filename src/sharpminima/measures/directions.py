"""Random directions (issue 6): how f rises along random unit directions around a minimizer.

Its own module, beside sharpness.py whose loss and box it reuses, so that its jobs rerun when the
solver or the box changes and never when the trainer does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import read_json
from ..errors import UserError
from ..runtime import pick_device
from ..store import Run
from .sharpness import Loss, SharpnessConfig, box, scaled


def random_directions(
    run_path: str | Path,
    phi_file: str | Path,
    count: int = 100,
    seed: int = 0,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """How f rises along random unit directions at the radius of Metric 2.1's box.

    The paper reads its full-space and random-subspace φ as: around an LB minimizer f rises
    steeply only along a small subspace. This samples the full space directly: for `count`
    Gaussian directions d (unit norm) the rise (f(x + ρd) − f(x)) / (1 + f(x)) × 100 on φ's
    scale, with ρ = ‖ε(|x| + 1)‖ the norm of the box's corners, and each rise's fraction of the
    run's own full-space φ (`phi_file`, which fixes ε and the BatchNorm mode).
    """
    phi = read_json(phi_file, ("network", "regime", "run_seed", "space"), "sharpness")
    run = Run(run_path)
    mine = (run.attrs["network"], run.label, run.attrs["seed"], "full")
    if tuple(phi.get(k) for k in ("network", "regime", "run_seed", "space")) != mine:
        raise UserError(f"{phi_file} is not the full-space φ of {run_path}: pass that one")
    data = run.data()
    dev = pick_device(device)
    cfg = SharpnessConfig(eps=phi["eps"], bn=phi["bn"], chunk=phi["chunk"])
    loss = Loss(run.model().to(dev), data.x_train.to(dev), data.y_train.to(dev), cfg)
    x = loss.theta0
    radius = float(box(cfg.eps, x).norm())
    f0, _ = loss(x, grad=False)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for i in range(count):
        d = torch.randn(x.numel(), generator=gen, dtype=x.dtype).to(dev)
        f, _ = loss(x + radius * d / d.norm(), grad=False)
        rise = scaled(f - f0, f0)
        rows.append({"direction": i, "rise": rise, "fraction_of_phi": rise / phi["phi"]})
        if (i + 1) % max(1, count // 10) == 0:
            median = np.median([r["rise"] for r in rows])
            log(f"{run_path}: {i + 1}/{count} directions, median rise so far {median:.4g}")
    loss.restore()
    table = pd.DataFrame(rows)
    table.insert(0, "network", run.attrs["network"])
    table.insert(1, "regime", run.label)
    table.insert(2, "seed", run.attrs["seed"])
    return table.assign(radius=radius, f_x=f0, phi=phi["phi"], eps=cfg.eps, bn=cfg.bn)
