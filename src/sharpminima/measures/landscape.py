"""1-D loss landscapes between an SB and an LB minimizer (Figures 3 and 7).

linear (Fig. 3):       f(α x_LB + (1 − α) x_SB)
curvilinear (Fig. 7):  f(sin(απ/2) x_LB + cos(απ/2) x_SB)

Each α is one evaluation on the training and test sets. Points are cached in `<out>.partial`
(HDF5, flushed after every α) as in Goldstein et al.'s loss-landscape code, so an interrupted job
recomputes only the missing α; the finished file is renamed onto `out`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import open_h5, open_point_cache
from ..errors import UserError, require_finite
from ..guard import writes
from ..runtime import device_name, evaluate, pick_device, versions
from ..settings import setting
from ..store import Run

KINDS = ("linear", "curvilinear")
COLUMNS = ("train_loss", "train_acc", "test_loss", "test_acc")


@dataclass(frozen=True)
class LandscapeConfig:
    kind: str = setting("linear", "linear (Fig. 3) or curvilinear (Fig. 7)")
    start: float = setting(-1.0, "first α")
    stop: float = setting(2.0, "last α")
    points: int = setting(25, "number of α (the authors' code: 25 on [-1, 2])")
    bn: str = setting("batch", "BatchNorm statistics: batch or running")
    chunk: int = setting(5000, "examples per evaluation chunk")
    buffers: bool = setting(True, "interpolate BatchNorm running statistics too (else SB's)")

    def alphas(self) -> np.ndarray:
        require_finite(self)
        if self.kind not in KINDS:
            raise UserError(f"unknown landscape kind {self.kind!r}: use 'linear' or 'curvilinear'")
        if self.points < 2 or self.stop <= self.start:
            raise UserError("landscape needs at least 2 points and stop > start")
        return np.linspace(self.start, self.stop, self.points)


def coefficients(kind: str, alpha: float) -> tuple[float, float]:
    """Weights (on x_SB, on x_LB) of the point at α."""
    if kind == "linear":
        return 1.0 - alpha, alpha
    return math.cos(alpha * math.pi / 2), math.sin(alpha * math.pi / 2)


def interpolate(sb: dict, lb: dict, weights: tuple[float, float], keys: set[str]) -> dict:
    """a·x_SB + b·x_LB on `keys` (floating tensors); every other entry is x_SB's."""
    a, b = weights
    return {k: a * v + b * lb[k] if k in keys else v for k, v in sb.items()}


def _identity(cfg: LandscapeConfig, sb: Run, lb: Run) -> str:
    return json.dumps(
        {
            "config": asdict(cfg),
            "data": sb.attrs["dataset_sha256"],
            "sb_run": str(sb.path),
            "lb_run": str(lb.path),
        },
        sort_keys=True,
    )


@writes()
def landscape(
    sb_path: str | Path,
    lb_path: str | Path,
    out: str | Path,
    cfg: LandscapeConfig,
    device: str = "auto",
    log: Callable[[str], None] = print,
    other_starts: bool = False,
) -> Path:
    """Evaluate the curve between two runs of one trial and write it to `out` (HDF5).

    The runs must share x₀ (the paper's curves join minimizers reached from one start) unless
    `other_starts` is set."""
    alphas = cfg.alphas()
    sb, lb = Run(sb_path), Run(lb_path)
    if sb.attrs["network"] != lb.attrs["network"]:
        raise UserError(f"{sb_path} and {lb_path} are different networks: pair runs of one network")
    same = ("dataset_sha256", "n_train")
    if any(sb.attrs[k] != lb.attrs[k] for k in same):
        raise UserError(f"{sb_path} and {lb_path} were trained on different data: pair one trial")
    x0_sb, x0_lb = sb.state("init"), lb.state("init")
    if not other_starts and any(not torch.equal(v, x0_lb[k]) for k, v in x0_sb.items()):
        raise UserError(
            f"{sb_path} and {lb_path} start from different initial points (seeds "
            f"{sb.attrs['seed']} and {lb.attrs['seed']}): pair the SB and LB runs of one "
            "trial, or pass --other-starts to compare them anyway"
        )
    data = sb.data()
    dev = pick_device(device)
    model = sb.architecture().to(dev)
    params = {k for k, _ in model.named_parameters()}
    x_sb = {k: v.to(dev) for k, v in sb.state().items()}
    floating = {k for k, v in x_sb.items() if v.is_floating_point()}
    keys = floating if cfg.buffers else params
    x_lb = {k: v.to(dev) for k, v in lb.state().items()}
    sets = {
        "train": (data.x_train.to(dev), data.y_train.to(dev)),
        "test": (data.x_test.to(dev), data.y_test.to(dev)),
    }
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    start = time.perf_counter()
    with open_point_cache(partial, _identity(cfg, sb, lb), {"alpha": alphas}, COLUMNS) as f:
        todo = [i for i in range(len(alphas)) if np.isnan(f["train_loss"][i])]
        log(f"{cfg.kind} landscape {sb_path} ↔ {lb_path}: {len(todo)} of {len(alphas)} α to do")
        for i in todo:
            model.load_state_dict(interpolate(x_sb, x_lb, coefficients(cfg.kind, alphas[i]), keys))
            for name, (x, y) in sets.items():
                loss, acc = evaluate(model, x, y, cfg.chunk, cfg.bn)
                f[f"{name}_loss"][i], f[f"{name}_acc"][i] = loss, acc
            f.flush()
            log(
                f"α = {alphas[i]:+.3f}: train loss {f['train_loss'][i]:.4g}, "
                f"test acc {f['test_acc'][i]:.2f}%"
            )
        f.attrs.update(
            asdict(cfg),
            network=sb.attrs["network"],
            sb_run=str(sb_path),
            lb_run=str(lb_path),
            seed=sb.attrs["seed"],
            dataset=sb.attrs["dataset"],
            device=device_name(dev),
            versions=json.dumps(versions()),
            seconds=time.perf_counter() - start,
        )
    partial.replace(out)
    return out


def read_landscape(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Attributes and columns (alpha, train/test loss/acc) of a landscape file."""
    try:
        with open_h5(path, "r") as f:
            return dict(f.attrs), {k: f[k][()] for k in ("alpha", *COLUMNS)}
    except (OSError, KeyError) as e:
        raise UserError(
            f"{path} is not a finished landscape file ({e}): compute it again"
        ) from None
