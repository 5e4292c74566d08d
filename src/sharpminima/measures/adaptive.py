"""Scale-invariant sharpness (../shared/docs/MEASURES.md): Kwon et al. (2021), Andriushchenko
et al. (2023).

Perturbations are relative to each weight, δ = |w| ⊙ u, so scaling a ReLU layer by c and the
next by 1/c (which leaves f unchanged) leaves these measures unchanged too. Metric 2.1's box
ε(|w| + 1) is the ℓ∞ case plus the absolute "+1", which is what breaks the invariance.

- worst case: max over ‖u‖_p ≤ ρ of f(w + |w| ⊙ u) − f(w), p = ∞ or 2, by projected gradient
  ascent (∇_u = |w| ⊙ ∇f) from several starts: ± the top eigenvector of the relative Hessian
  |w| ⊙ H ⊙ |w| (power iteration), where a quadratic rises fastest, then seeded random points
  halfway inside. One start stops at a local maximum, and the maxima of a small ReLU network
  are many and far apart: 4 fixed starts reached 0.66 of the largest rise that 40 long ones
  found. So the starts adapt: random starts are added until the best rise is within
  `tolerance` of a bound on the largest that random starts reach (`upper_bound`), up to
  `max_starts`; where the cap stops the search the result says `converged: false`
  (docs/panel.md). Each ascent is monotone, its step halved (from ρ/2) when it fails to
  raise f. The rises are f's over the whole set (Andriushchenko et al.'s m-sharpness with
  m = n); with `sample`, each start ascends on f over its own random subset, its first-order
  term at w corrected to f's (and the power iteration runs on one subset), a tenth of the
  cost at a tenth of the examples, and its rise is then f's over all examples at the point it
  found: a true rise, never above the maximum.
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
    LossFn,
    Measures,
    Objective,
    Sampled,
    cross_entropy_sum,
    measure,
    resampled,
    standard_error,
)

Log = Callable[[str], None] | None


@dataclass(frozen=True)
class WorstConfig(Sampled):
    """Adaptive worst-case sharpness, ℓ∞: the largest rise of f with |δ_i| ≤ ρ |w_i|."""

    norm: ClassVar[str] = "linf"
    sample: int = setting(
        0, "examples each start ascends on, its own random subset (0: all); rises are over all"
    )
    rho: float = setting(1e-3, "ρ, the radius of the relative perturbation")
    steps: int = setting(100, "ascent steps per start at most (each one gradient of f)")
    starts: int = setting(
        6, "starts at least: ± the top eigenvector of the relative Hessian, then random"
    )
    max_starts: int = setting(32, "starts at most (the search is then marked not converged)")
    tolerance: float = setting(
        0.05, "done when the best rise is within this fraction of the bound on the largest"
    )
    confidence: float = setting(0.99, "the confidence of that bound (see docs/panel.md)")
    power_steps: int = setting(20, "power iterations for that eigenvector (each one H·v)")

    def check(self) -> None:
        super().check()
        if self.rho <= 0 or self.steps < 1 or self.starts < 1 or self.power_steps < 1:
            raise UserError("need rho > 0, steps ≥ 1, starts ≥ 1 and power-steps ≥ 1")
        if self.max_starts < self.starts:
            raise UserError("need max-starts ≥ starts")
        if not 0 < self.tolerance < 1 or not 0 < self.confidence < 1:
            raise UserError("need 0 < tolerance < 1 and 0 < confidence < 1")


@dataclass(frozen=True)
class WorstL2Config(WorstConfig):
    """Adaptive worst-case sharpness, ℓ2: the largest rise of f with ‖δ ⊘ |w|‖₂ ≤ ρ."""

    norm: ClassVar[str] = "l2"
    rho: float = setting(0.5, "ρ, the radius of the relative perturbation")


@dataclass(frozen=True)
class AverageConfig(Sampled):
    """Adaptive average-case sharpness: the mean rise of f under δ ~ N(0, σ² diag(w²)), each
    draw's rise over all the examples or over its own random subset of `sample` of them."""

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


STALL = (20, 1e-3)  # a start has settled when its last 20 steps raised its best by ≤ 0.1%
TOP = 4  # the bound on the largest rise is taken from the random starts' four best


Fun = Callable[[torch.Tensor], tuple[float, torch.Tensor]]  # θ ↦ (value, gradient)


def _surrogate(f_s: Objective, g_w: torch.Tensor) -> tuple[Fun, float]:
    """f over a subset S with its first-order term at w replaced by f's, and its value at w:
    θ ↦ f_S(θ) − (∇f_S(w) − ∇f(w))·(θ − w). Over random subsets its mean is f, its gradient
    at w is f's, and its Hessian H_S. Without the correction a subset's own gradient, zero only
    over all examples at a minimum, steers the ascent toward where that subset rises: on F1
    (subsets of 5,000) a start then reached about 0.6 of the whole set's rise."""
    w = f_s.theta0
    value_w, grad_w = f_s(w, grad=True)
    shift = grad_w - g_w

    def fun(theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        value, grad = f_s(theta, grad=True)
        return value - float(shift @ (theta - w)), grad - shift

    return fun, value_w


def _ascend(
    fun: Fun, w: torch.Tensor, u: torch.Tensor, f_w: float, cfg: WorstConfig, log: Log, name: str
) -> tuple[dict[str, object], torch.Tensor]:
    """Monotone projected gradient ascent of `fun` (f, or a subset's surrogate of it) on u from
    one start: a step that raises it is taken and the next one tried at the same size; one that
    does not is refused and the size halved. The start has settled when no step of ρ/64 raises
    it, or when its best stalled (`STALL`: at f's rounding floor every step is a coin toss),
    and not when `steps` ran out first. Also returns the best point."""
    scale = w.abs()
    value, g = fun(w + scale * u)
    bests, eta, settled = [value - f_w], cfg.rho / 2, False
    for step in range(1, cfg.steps + 1):
        ascent = scale * g
        direction = ascent.sign() if cfg.norm == "linf" else ascent / ascent.norm().clamp_min(1e-30)
        trial = _project(u + eta * direction, cfg.norm, cfg.rho)
        value, trial_g = fun(w + scale * trial)
        if value - f_w > bests[-1]:
            u, g = trial, trial_g
        else:
            eta /= 2
        bests.append(max(bests[-1], value - f_w))
        if log is not None:
            rise = f"rise {value - f_w:.6g} (best {bests[-1]:.6g})"
            log(f"{name}: ascent step {step}/{cfg.steps}: {rise}")
        window, gain = STALL
        stalled = step >= window and bests[-1] - bests[-1 - window] <= gain * abs(bests[-1])
        if eta < cfg.rho / 64 or stalled:
            settled = True
            break
    return {"start": name, "sharpness": bests[-1], "best_step": bests.index(bests[-1]),
            "steps": len(bests) - 1, "settled": settled}, u  # fmt: skip


def upper_bound(values: list[float], confidence: float) -> float:
    """A bound on the largest rise that random starts can reach, from the four best (x1 ≥ … ≥
    x4) of them: x1 + t (x1 − x4), which it exceeds with probability 1 − `confidence`,
    t = (1 − confidence)^(−1/3) − 1, where the starts' rises have a density near their top
    (the ratio (top − x1)/(x1 − x4) is then distributed as E/Gamma(3), E exponential;
    Robson and Whitlock's 1964 endpoint bound, from three spacings instead of one).
    Infinite with fewer than four random starts."""
    random_starts = sorted(values[2:], reverse=True)
    if len(random_starts) < TOP:
        return math.inf
    x1, x4 = random_starts[0], random_starts[TOP - 1]
    return x1 + ((1 - confidence) ** (-1 / (TOP - 1)) - 1) * (x1 - x4)


def worst_case(f: Objective, cfg: WorstConfig, log: Log = None) -> dict[str, object]:
    """max f(w + |w| ⊙ u) − f(w) over ‖u‖_p ≤ ρ, by projected gradient ascent on u from at
    least `starts` points, more until the best rise is within `tolerance` of `upper_bound`,
    at most `max_starts`; the largest rise any start reached, and each start's. Sampled, a
    start's `subset_sharpness` is the rise its ascent reached on its own examples."""
    w = f.theta0
    f_w, g_w = f(w, grad=bool(cfg.sample))  # the gradient for the subsets' surrogates
    draw = resampled(f, cfg.sample, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    top = _top_direction(draw(), w.abs(), cfg, gen, log)
    runs, values = [], []

    def done() -> bool:
        return max(values) >= (1 - cfg.tolerance) * upper_bound(values, cfg.confidence)

    while len(runs) < cfg.starts or (not done() and len(runs) < cfg.max_starts):
        i = len(runs)
        if i < 2:
            u, name = (top if i == 0 else -top), f"start {i + 1} ({'+-'[i]}eigenvector)"
        else:
            u, name = _random_start(w.numel(), cfg, w, gen), f"start {i + 1} (random)"
        g = draw()
        fun, base = (lambda t: f(t, grad=True), f_w) if g is f else _surrogate(g, g_w)
        run, found = _ascend(fun, w, u, base, cfg, log, name)
        if g is not f:
            run["subset_sharpness"] = run["sharpness"]
            run["sharpness"] = f(w + w.abs() * found, grad=False)[0] - f_w
            if log is not None:
                log(f"{name}: rise over all examples {run['sharpness']:.6g} at the point found")
        runs.append(run)
        values.append(run["sharpness"])
    best = runs[int(np.argmax(values))]
    bound, settled = upper_bound(values, cfg.confidence), bool(best["settled"])
    if log is not None:
        climbing = "" if settled else "; the best start was still climbing"
        log(f"{len(runs)} starts: best rise {max(values):.6g}, bound {bound:.6g}{climbing}")
    return {
        "sharpness": best["sharpness"],
        "converged": done() and settled,
        "upper_bound": bound if math.isfinite(bound) else None,
        "starts_run": len(runs),
        "best_settled": settled,
        "gradients": sum(r["steps"] + 1 for r in runs),
        "f_w": f_w,
        "best_start": best["start"],
        "best_step": best["best_step"],
        "spread": float(max(values) - min(values)),
        "start_sharpness": values,
        "per_start": runs,
    }


def average_case(f: Objective, cfg: AverageConfig, log: Log = None) -> dict[str, object]:
    """E f(w + δ) − f(w) over δ ~ N(0, σ² diag(w²)), with its standard error. Sampled, a draw's
    rise is f_S(w + δ) − f_S(w) over its own subset S: both terms over the same examples, so
    the subset's own level cancels and only its effect on the rise adds to the spread."""
    w = f.theta0
    f_w, _ = f(w, grad=False)
    draw = resampled(f, cfg.sample, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rises = []
    for i in range(cfg.draws):
        z = torch.randn(w.numel(), generator=gen, dtype=torch.float64).to(w)
        g = draw()
        base = f_w if g is f else g(w, grad=False)[0]
        rises.append(g(w + cfg.sigma * w.abs() * z, grad=False)[0] - base)
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
