"""Scale-invariant sharpness (../shared/docs/MEASURES.md): Kwon et al. (2021), Andriushchenko
et al. (2023).

Perturbations are relative to each weight, δ = |w| ⊙ u, so scaling a ReLU layer by c and the
next by 1/c (which leaves f unchanged) leaves these measures unchanged too. Metric 2.1's box
ε(|w| + 1) is the ℓ∞ case plus the absolute "+1", which is what breaks the invariance.

- worst case: max over ‖u‖_p ≤ ρ of f(w + |w| ⊙ u) − f(w), p = ∞ or 2, by projected gradient
  ascent (∇_u = |w| ⊙ ∇f) from several starts: ± the top eigenvector of the relative Hessian
  |w| ⊙ H ⊙ |w| (power iteration), where a quadratic rises fastest, then seeded random points
  halfway inside. One start stops at a local maximum (0.57-0.91 of the largest in 6 of 9 cases
  on small networks); the starts along ± the eigenvector reach other maxima, random ones still
  others.
  The step is halved each fifth of the steps (ρ/2 down to ρ/32), and the best point seen is
  kept. Evaluated on the whole set (Andriushchenko et al.'s m-sharpness with m = n).
- average case: E f(w + δ) − f(w), δ ~ N(0, σ² diag(w²)), over `draws` draws, with its
  standard error (widened as the trace's: the rises are skewed as vᵀHv is).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..settings import setting
from .objective import (
    Data,
    Evaluation,
    LossFn,
    Measures,
    Objective,
    cross_entropy_sum,
    measure,
    standard_error,
)

Log = Callable[[str], None] | None


@dataclass(frozen=True)
class WorstConfig(Evaluation):
    """Adaptive worst-case sharpness, ℓ∞: the largest rise of f with |δ_i| ≤ ρ |w_i|."""

    norm: ClassVar[str] = "linf"
    rho: float = setting(1e-3, "ρ, the radius of the relative perturbation")
    steps: int = setting(25, "projected gradient ascent steps per start (each one gradient of f)")
    starts: int = setting(8, "starts: ± the top eigenvector of the relative Hessian, then random")
    power_steps: int = setting(20, "power iterations for that eigenvector (each one H·v)")

    def check(self) -> None:
        super().check()
        if self.rho <= 0 or self.steps < 1 or self.starts < 1 or self.power_steps < 1:
            raise UserError("need rho > 0, steps ≥ 1, starts ≥ 1 and power-steps ≥ 1")


@dataclass(frozen=True)
class WorstL2Config(WorstConfig):
    """Adaptive worst-case sharpness, ℓ2: the largest rise of f with ‖δ ⊘ |w|‖₂ ≤ ρ."""

    norm: ClassVar[str] = "l2"
    rho: float = setting(0.5, "ρ, the radius of the relative perturbation")
    starts: int = setting(4, "starts: ± the top eigenvector of the relative Hessian, then random")


@dataclass(frozen=True)
class AverageConfig(Evaluation):
    """Adaptive average-case sharpness: the mean rise of f under δ ~ N(0, σ² diag(w²))."""

    sigma: float = setting(0.01, "σ, the relative standard deviation of the perturbation")
    draws: int = setting(50, "Monte Carlo draws (each one evaluation of f)")

    def check(self) -> None:
        super().check()
        if self.sigma <= 0 or self.draws < 2:
            raise UserError("need sigma > 0 and draws ≥ 2 (for a standard error)")


def _project(u: torch.Tensor, norm: str, rho: float) -> torch.Tensor:
    if norm == "linf":
        return u.clamp(-rho, rho)
    size = u.norm()
    return u if size <= rho else u * (rho / size)


def _random_start(
    n: int, cfg: WorstConfig, like: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """A seeded random point halfway inside the set (drawn on the CPU: the same on any device)."""
    if cfg.norm == "linf":
        u = (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * cfg.rho
    else:
        u = torch.randn(n, generator=gen, dtype=torch.float64)
        u *= 0.5 * cfg.rho / u.norm()
    return u.to(like)


def _top_direction(
    f: Objective, scale: torch.Tensor, cfg: WorstConfig, gen: torch.Generator, log: Log
) -> torch.Tensor:
    """The top eigenvector of |w| ⊙ H ⊙ |w| (u's Hessian) by power iteration, on the set's
    boundary: ℓ2 norm ρ, or ℓ∞ norm ρ."""
    v = torch.randn(scale.numel(), generator=gen, dtype=torch.float64).to(scale)
    v /= v.norm()
    for i in range(cfg.power_steps):
        hv = scale * f.hvp(scale * v)
        if log is not None:
            log(f"power iteration {i + 1}/{cfg.power_steps}: Rayleigh quotient {v @ hv:.6g}")
        v = hv / hv.norm().clamp_min(1e-30)
    size = v.abs().max() if cfg.norm == "linf" else v.norm()
    return v * (cfg.rho / size.clamp_min(1e-30))


def _ascend(
    f: Objective, u: torch.Tensor, f_w: float, cfg: WorstConfig, log: Log, name: str
) -> dict[str, object]:
    """Projected gradient ascent on u from one start: the best rise, its step, every rise."""
    w, scale = f.theta0, f.theta0.abs()
    best, best_step, path = -math.inf, 0, []
    for step in range(cfg.steps + 1):
        value, g = f(w + scale * u, grad=step < cfg.steps)
        path.append(value - f_w)
        if value - f_w > best:
            best, best_step = value - f_w, step
        if step == cfg.steps:
            break
        ascent = scale * g
        eta = cfg.rho / 2 ** (1 + 5 * step // cfg.steps)
        direction = ascent.sign() if cfg.norm == "linf" else ascent / ascent.norm().clamp_min(1e-30)
        u = _project(u + eta * direction, cfg.norm, cfg.rho)
        if log is not None:
            rise = f"rise {path[-1]:.6g} (best {best:.6g})"
            log(f"{name}: ascent step {step + 1}/{cfg.steps}: {rise}")
    return {"start": name, "sharpness": best, "best_step": best_step, "rises": path}


def worst_case(f: Objective, cfg: WorstConfig, log: Log = None) -> dict[str, object]:
    """max f(w + |w| ⊙ u) − f(w) over ‖u‖_p ≤ ρ, by projected gradient ascent on u from
    `starts` points; the largest rise any start reached, and each start's."""
    w = f.theta0
    f_w, _ = f(w, grad=False)
    gen = torch.Generator().manual_seed(cfg.seed)
    top = _top_direction(f, w.abs(), cfg, gen, log)
    runs = []
    for i in range(cfg.starts):
        if i < 2:
            u, name = (top if i == 0 else -top), f"start {i + 1} ({'+-'[i]}eigenvector)"
        else:
            u, name = _random_start(w.numel(), cfg, w, gen), f"start {i + 1} (random)"
        runs.append(_ascend(f, u, f_w, cfg, log, name))
    values = [r["sharpness"] for r in runs]
    best = runs[int(np.argmax(values))]
    return {
        "sharpness": best["sharpness"],
        "f_w": f_w,
        "best_start": best["start"],
        "best_step": best["best_step"],
        "spread": float(max(values) - min(values)),
        "start_sharpness": values,
        "per_start": runs,
    }


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
        "sharpness_se": standard_error(rises),
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
