"""Scale-invariant sharpness (../shared/docs/MEASURES.md): Kwon et al. (2021), Andriushchenko
et al. (2023).

Perturbations are relative to each weight, δ = |w| ⊙ u, so scaling a ReLU layer by c and the
next by 1/c (which leaves f unchanged) leaves these measures unchanged too. Metric 2.1's box
ε(|w| + 1) is the ℓ∞ case plus the absolute "+1", which is what breaks the invariance.

- worst case: max over ‖u‖_p ≤ ρ of f(w + |w| ⊙ u) − f(w), p = ∞ or 2, by projected gradient
  ascent from a seeded random point (∇_u = |w| ⊙ ∇f); the step is halved each third of the
  steps (ρ/2, ρ/4, ρ/8 of the set's radius) and the best point seen is kept. Evaluated on the
  whole set (Andriushchenko et al.'s m-sharpness with m = n).
- average case: E f(w + δ) − f(w), δ ~ N(0, σ² diag(w²)), over `draws` draws, with its
  standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .objective import Data, Evaluation, LossFn, Measures, Objective, cross_entropy_sum, measure
from .settings import setting

Log = Callable[[str], None] | None


@dataclass(frozen=True)
class WorstConfig(Evaluation):
    """Adaptive worst-case sharpness, ℓ∞: the largest rise of f with |δ_i| ≤ ρ |w_i|."""

    norm: ClassVar[str] = "linf"
    rho: float = setting(1e-3, "ρ, the radius of the relative perturbation")
    steps: int = setting(20, "projected gradient ascent steps (each one gradient of f)")

    def check(self) -> None:
        super().check()
        if self.rho <= 0 or self.steps < 1:
            raise UserError("need rho > 0 and steps ≥ 1")


@dataclass(frozen=True)
class WorstL2Config(WorstConfig):
    """Adaptive worst-case sharpness, ℓ2: the largest rise of f with ‖δ ⊘ |w|‖₂ ≤ ρ."""

    norm: ClassVar[str] = "l2"
    rho: float = setting(0.5, "ρ, the radius of the relative perturbation")


@dataclass(frozen=True)
class AverageConfig(Evaluation):
    """Adaptive average-case sharpness: the mean rise of f under δ ~ N(0, σ² diag(w²))."""

    sigma: float = setting(0.01, "σ, the relative standard deviation of the perturbation")
    draws: int = setting(20, "Monte Carlo draws (each one evaluation of f)")

    def check(self) -> None:
        super().check()
        if self.sigma <= 0 or self.draws < 2:
            raise UserError("need sigma > 0 and draws ≥ 2 (for a standard error)")


def _project(u: torch.Tensor, norm: str, rho: float) -> torch.Tensor:
    if norm == "linf":
        return u.clamp(-rho, rho)
    size = u.norm()
    return u if size <= rho else u * (rho / size)


def _start(n: int, cfg: WorstConfig, like: torch.Tensor) -> torch.Tensor:
    """A seeded random point halfway inside the set (drawn on the CPU: the same on any device)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.norm == "linf":
        u = (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * cfg.rho
    else:
        u = torch.randn(n, generator=gen, dtype=torch.float64)
        u *= 0.5 * cfg.rho / u.norm()
    return u.to(like)


def worst_case(f: Objective, cfg: WorstConfig, log: Log = None) -> dict[str, object]:
    """max f(w + |w| ⊙ u) − f(w) over ‖u‖_p ≤ ρ, by projected gradient ascent on u."""
    w = f.theta0
    scale = w.abs()
    f_w, _ = f(w, grad=False)
    u = _start(w.numel(), cfg, w)
    best, best_step, path = -math.inf, 0, []
    for step in range(cfg.steps + 1):
        value, g = f(w + scale * u, grad=step < cfg.steps)
        path.append(value - f_w)
        if value - f_w > best:
            best, best_step = value - f_w, step
        if step == cfg.steps:
            break
        ascent = scale * g
        eta = cfg.rho / 2 ** (1 + 3 * step // cfg.steps)
        direction = ascent.sign() if cfg.norm == "linf" else ascent / ascent.norm().clamp_min(1e-30)
        u = _project(u + eta * direction, cfg.norm, cfg.rho)
        if log is not None:
            log(f"ascent step {step + 1}/{cfg.steps}: rise {path[-1]:.6g} (best {best:.6g})")
    return {"sharpness": best, "f_w": f_w, "best_step": best_step, "rises": path}


def average_case(f: Objective, cfg: AverageConfig, log: Log = None) -> dict[str, object]:
    """E f(w + δ) − f(w) over δ ~ N(0, σ² diag(w²)), with its standard error."""
    w = f.theta0
    f_w, _ = f(w, grad=False)
    gen = torch.Generator().manual_seed(cfg.seed)
    rises = []
    for i in range(cfg.draws):
        z = torch.randn(w.numel(), generator=gen, dtype=torch.float64).to(w)
        rises.append(f(w + cfg.sigma * w.abs() * z, grad=False)[0] - f_w)
        if log is not None and (i + 1) % max(1, cfg.draws // 5) == 0:
            log(f"draw {i + 1}/{cfg.draws}: mean rise {np.mean(rises):.6g}")
    return {
        "sharpness": float(np.mean(rises)),
        "sharpness_se": float(np.std(rises, ddof=1) / math.sqrt(len(rises))),
        "f_w": f_w,
        "rises": rises,
    }


# `sharpminima adaptive WHAT`: its settings class, and what it computes from f.
MEASURES: Measures = {
    "linf": (WorstConfig, worst_case),
    "l2": (WorstL2Config, worst_case),
    "average": (AverageConfig, average_case),
}


def adaptive(
    model: nn.Module,
    data: Data,
    cfg: WorstConfig | WorstL2Config | AverageConfig,
    loss: LossFn = cross_entropy_sum,
    log: Log = None,
) -> dict[str, object]:
    """Adaptive sharpness of `model`'s current parameters on `data` (a pair (x, y), a
    DataLoader that does not shuffle, or a list of batches); the model is left unchanged."""
    return measure(MEASURES, model, data, cfg, loss, log)
