"""Filter-normalised loss surfaces around one minimizer (Li et al., 2018).

Directions: d ~ N(0, I) shaped like the parameters, drawn on the CPU from a seed (the same on
every device and in every part); for each filter (an output unit: a row of a Linear weight, an
output channel of a Conv weight) d_filter ← d_filter / ‖d_filter‖ · ‖w_filter‖. Biases and
BatchNorm's γ and β get d = 0 (Li et al.'s default, `--ignore biasbn`): they are not filters, and
a direction scaled to a zero bias would be zero anyway. BatchNorm's running buffers stay as
stored. 1-D: f(w + α d₁); 2-D: f(w + α d₁ + β d₂) on a grid, with d₁, d₂ independent.

Like the authors' code, every point is kept in HDF5 as it is computed (`<out>.partial`, flushed
after each point) and a restarted job computes only the missing ones. A grid is split into
`parts`: part i computes grid points i, i + parts, …, so a cluster fills one grid with
`parts` jobs at once; `merge` joins the parts into one file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path, open_h5, open_point_cache
from ..errors import UserError
from ..guard import writes
from ..runtime import device_name, evaluate, pick_device, versions
from ..settings import setting
from ..store import Run
from .objective import Evaluation

COLUMNS = ("train_loss", "train_acc")


@dataclass(frozen=True)
class SurfaceConfig(Evaluation):
    """A filter-normalised surface: its dimension, extent and resolution."""

    dims: int = setting(2, "1 (f along one direction) or 2 (f on a plane)")
    span: float = setting(1.0, "α (and β) run over [-span, span]")
    points: int = setting(21, "points per axis")

    def check(self) -> None:
        super().check()
        if self.dims not in (1, 2) or self.span <= 0 or self.points < 2:
            raise UserError("need dims 1 or 2, span > 0 and at least 2 points per axis")

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """α, and β (just 0 for a line)."""
        axis = np.linspace(-self.span, self.span, self.points)
        return axis, (axis if self.dims == 2 else np.zeros(1))


def filter_normalised(model: nn.Module, gen: torch.Generator) -> list[torch.Tensor]:
    """One random direction, a tensor per trainable parameter, filter-normalised."""
    direction = []
    for p in (p for p in model.parameters() if p.requires_grad):
        d = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        if p.dim() <= 1:  # a bias, or BatchNorm's γ or β
            d.zero_()
        else:
            w = p.detach().double().cpu().reshape(len(p), -1)
            rows = d.reshape(len(d), -1)
            rows *= (w.norm(dim=1) / rows.norm(dim=1).clamp_min(1e-30))[:, None]
        direction.append(d.to(p))
    return direction


def directions(model: nn.Module, cfg: SurfaceConfig) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(cfg.seed)
    return [filter_normalised(model, gen) for _ in range(cfg.dims)]


def _identity(run: Run, cfg: SurfaceConfig, part: int, parts: int) -> str:
    return json.dumps(
        {"run": str(run.path), "finished": run.attrs["finished"], "config": asdict(cfg),
         "part": part, "parts": parts}, sort_keys=True,
    )  # fmt: skip


@writes()
def surface(
    run_path: str | Path,
    out: str | Path,
    cfg: SurfaceConfig,
    part: int = 0,
    parts: int = 1,
    which: str | int = "final",
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> Path:
    """Compute part `part` of `parts` of the surface around iterate `which` into `out`."""
    cfg.check()
    if parts < 1 or not 0 <= part < parts:
        raise UserError(f"--part must be in 0..{parts - 1} (of --parts {parts}), got {part}")
    run = Run(run_path)
    data = run.data()
    dev = pick_device(device)
    model = run.model(which).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    w = [p.detach().clone() for p in params]
    dirs = directions(model, cfg)
    alphas, betas = cfg.axes()
    shape = (len(alphas), len(betas))
    mine = [k for k in range(shape[0] * shape[1]) if k % parts == part]
    x, y = data.x_train.to(dev), data.y_train.to(dev)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    start = time.perf_counter()
    identity = _identity(run, cfg, part, parts)
    with open_point_cache(partial, identity, {"alpha": alphas, "beta": betas}, COLUMNS) as f:
        todo = [k for k in mine if np.isnan(f["train_loss"][np.unravel_index(k, shape)])]
        log(f"surface of {run_path} ({which}), part {part + 1}/{parts}: {len(todo)} of "
            f"{len(mine)} points to do")  # fmt: skip
        for n, k in enumerate(todo):
            i, j = np.unravel_index(k, shape)
            steps = (alphas[i], betas[j])
            with torch.no_grad():
                for p, w0, *ds in zip(params, w, *dirs, strict=True):
                    p.copy_(w0 + sum(s * d for s, d in zip(steps, ds, strict=False)))
            loss, acc = evaluate(model, x, y, cfg.chunk, cfg.bn)
            f["train_loss"][i, j], f["train_acc"][i, j] = loss, acc
            f.flush()
            log(f"point {n + 1}/{len(todo)}: α = {alphas[i]:+.3f}, β = {betas[j]:+.3f}: "
                f"train loss {loss:.4g}")  # fmt: skip
        f.attrs.update(
            asdict(cfg), part=part, parts=parts, run=str(run_path), iterate=str(which),
            network=run.attrs["network"], regime=run.label, run_seed=run.attrs["seed"],
            dataset=run.attrs["dataset"], device=device_name(dev), threads=torch.get_num_threads(),
            versions=json.dumps(versions()), seconds=time.perf_counter() - start,
        )  # fmt: skip
    partial.replace(out)
    return out


def merge(part_paths: Iterable[str | Path], out: str | Path) -> Path:
    """Join the parts of one surface: every point must come from exactly one of them."""
    parts = [read_surface(p) for p in part_paths]
    if not parts:
        raise UserError("no parts to merge: pass the files of `sharpminima surface --part`")
    attrs, first = parts[0]
    mine = ("identity", "part", "seconds", "device", "threads")  # what each part has its own
    same = {k: v for k, v in attrs.items() if k not in mine}
    for path, (a, _) in zip(part_paths, parts, strict=True):
        if {k: v for k, v in a.items() if k in same} != same:
            raise UserError(f"{path} is a part of another surface: merge the parts of one")
    filled = sum((~np.isnan(d["train_loss"])).astype(int) for _, d in parts)
    if (filled != 1).any() or len({a["part"] for a, _ in parts}) != attrs["parts"]:
        raise UserError(f"the {len(parts)} parts given do not cover the grid once each: pass "
                        f"all {attrs['parts']} parts of it")  # fmt: skip
    with atomic_path(out) as tmp, open_h5(tmp, "w") as f:
        for column in COLUMNS:
            f[column] = np.nansum([d[column] for _, d in parts], axis=0)
        f["alpha"], f["beta"] = first["alpha"], first["beta"]
        f.attrs.update(same, seconds=sum(a["seconds"] for a, _ in parts))
    return Path(out)


def read_surface(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Attributes and arrays (alpha, beta, train_loss, train_acc) of a surface file."""
    try:
        with open_h5(path, "r") as f:
            return dict(f.attrs), {k: f[k][()] for k in ("alpha", "beta", *COLUMNS)}
    except (OSError, KeyError) as e:
        raise UserError(f"{path} is not a finished surface file ({e}): compute it again") from None
