"""Curvature of f at a minimizer from Hessian-vector products (../shared/docs/MEASURES.md).

- top-k eigenvalues by Lanczos with full reorthogonalisation, stopped by the Ritz residuals:
  power iteration (PyHessian's `eigenvalues()`) converges at rate λ₂/λ₁, slowly when the top of
  the spectrum is clustered, which is the flat large-batch case;
- the trace by Hutchinson's estimator, with a standard error whose ±2 and ±3 intervals hold
  (checked against exact Hessians, docs/panel.md);
- the spectral density by stochastic Lanczos quadrature (nodes and weights; `density` smooths).

The Lanczos vectors are kept in the model's dtype on its device (F1: 1.2M parameters × 4 bytes
per step); the tridiagonal matrix is solved in float64. Random vectors are drawn on the CPU, so
a seed gives the same vectors on every device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

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
    Sampled,
    cross_entropy_sum,
    measure,
    resampled,
    standard_error,
)

MatVec = Callable[[torch.Tensor], torch.Tensor]
Log = Callable[[str], None] | None


@dataclass(frozen=True)
class HessianEvaluation(Evaluation):
    """How the curvature measures evaluate f, and how they multiply by its Hessian."""

    compile: bool = setting(
        False,
        "Hessian-vector products through torch.compile (for models hvp.py's rules do not cover)",
    )


def product(f: Objective, cfg: HessianEvaluation) -> MatVec:
    """v ↦ Hv at f's θ0: eager (hvp.py's rules), or forward-over-reverse under torch.compile."""
    return f.compiled_hvp() if cfg.compile else f.hvp


def sampled_product(f: Objective, cfg: TraceConfig) -> MatVec:
    """v ↦ H_S v for a fresh random subset S of `cfg.sample` examples at every call, so that
    each of Hutchinson's samples vᵀH_S v is drawn over its own v and S (all examples: Hv)."""
    if not cfg.sample:
        return product(f, cfg)
    draw = resampled(f, cfg.sample, cfg.seed)
    return lambda v: draw().hvp(v)


@dataclass(frozen=True)
class EigenConfig(Sampled, HessianEvaluation):
    """The k largest eigenvalues of H (Lanczos)."""

    sample: int = setting(
        0, "examples the Lanczos run uses, one fixed random subset (0: all; λ_max biased upward)"
    )
    k: int = setting(5, "eigenvalues wanted, the largest")
    tol: float = setting(1e-3, "stop when each wanted Ritz residual is at most tol × |eigenvalue|")
    max_steps: int = setting(100, "Lanczos steps at most (each one Hessian-vector product)")
    bottom: bool = setting(False, "also converge λ_min (about 3x the products on F1)")

    def check(self) -> None:
        super().check()
        if self.k < 1 or self.max_steps < self.k or not 0 < self.tol < 1:
            raise UserError("need k ≥ 1, max-steps ≥ k and 0 < tol < 1")


@dataclass(frozen=True)
class TraceConfig(Sampled, HessianEvaluation):
    """tr(H) by Hutchinson's estimator with Rademacher vectors, each over all the examples or
    over a random subset of `sample` of them (E over subsets of H_S is H)."""

    rel_se: float = setting(0.05, "stop when the standard error is at most this × |trace|")
    min_samples: int = setting(50, "samples at least (fewer make the standard error too narrow)")
    max_samples: int = setting(200, "samples at most (each one Hessian-vector product)")

    def check(self) -> None:
        super().check()
        if self.rel_se <= 0 or self.min_samples < 2 or self.max_samples < self.min_samples:
            raise UserError("need rel-se > 0, min-samples ≥ 2 and max-samples ≥ min-samples")
        if self.sample and self.compile:
            raise UserError("compile would recompile for every sampled subset: drop one of them")


@dataclass(frozen=True)
class DensityConfig(HessianEvaluation):
    """The spectral density by stochastic Lanczos quadrature."""

    starts: int = setting(12, "random start vectors (their average is the density; 2+ for SEs)")
    steps: int = setting(30, "Lanczos steps per start (nodes of the quadrature)")
    deflate: int = setting(10, "largest eigenvalues found first and taken exactly (0: plain SLQ)")

    def check(self) -> None:
        super().check()
        if self.starts < 1 or self.steps < 2 or self.deflate < 0:
            raise UserError("need starts ≥ 1, steps ≥ 2 and deflate ≥ 0")


def random_vector(n: int, gen: torch.Generator, like: torch.Tensor, kind: str) -> torch.Tensor:
    """Rademacher, or a Gaussian unit vector, drawn on the CPU (float64 for the Gaussian) so a
    seed gives the same vector on every device; then in `like`'s dtype and device."""
    if kind == "rademacher":
        v = torch.randint(0, 2, (n,), generator=gen, dtype=torch.int8) * 2 - 1
    else:
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        v /= v.norm()
    return v.to(like)


def lanczos(
    matvec: MatVec,
    v0: torch.Tensor,
    steps: int,
    stop: Callable[[np.ndarray, np.ndarray], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[torch.Tensor]]:
    """α (diagonal) and β (off-diagonal, and the norm of the last residual) of T after at most
    `steps` Lanczos steps from v0, with full reorthogonalisation (twice, classical Gram-Schmidt),
    and the Lanczos vectors (one per α).

    `stop(alpha, beta)` is asked after every step; the run ends early at an invariant subspace.
    """
    q = v0 / v0.norm()
    basis = [q]
    alpha, beta = [], []
    for _ in range(steps):
        w = matvec(q)
        alpha.append(float(w @ q))
        for _ in range(2):
            for b in basis:
                w -= (b @ w) * b
        beta.append(float(w.norm()))
        a, b = np.array(alpha), np.array(beta)
        if (stop is not None and stop(a, b)) or beta[-1] <= 1e-10 * max(abs(x) for x in alpha):
            break
        q = w / beta[-1]
        basis.append(q)
    return np.array(alpha), np.array(beta), basis[: len(alpha)]


def tridiagonal_eigh(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors (columns) of Lanczos' tridiagonal T."""
    return np.linalg.eigh(np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1))


def ritz(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ritz values θ (ascending), each one's residual |β_m s_m,i|, and the first components
    of T's eigenvectors (SLQ's weights are their squares)."""
    theta, s = tridiagonal_eigh(alpha, beta)
    return theta, np.abs(beta[-1] * s[-1]), s[0]


# `eigenvalues` stops when the k wanted *and the next GUARD* Ritz values have converged. A Ritz
# value of a close top pair that the start barely touches along the top eigenvector mixes the
# two, mostly the second: its residual √(w₁w₂)(λ₁ − λ₂) can pass tol·θ while θ sits near λ₂.
# On 200 random spectra with the top two 0.1-1% apart, k = 1 alone stopped more than tol below
# λ_max in 21, with one guard in 1, with two in none, for 10.9 and 12.1 steps against 9.7.
GUARD = 2


def top_eigenvalues(
    matvec: MatVec, like: torch.Tensor, cfg: EigenConfig, log: Log = None
) -> dict[str, object]:
    """The k largest eigenvalues of the symmetric operator `matvec` (vectors shaped `like`), and
    its smallest: Lanczos finds both ends of the spectrum from one start.

    `lambda_max` is the largest *algebraic* eigenvalue; `lambda_max_abs` the one largest in
    magnitude (PyHessian's power iteration finds that one), which differs from it only where
    |λ_min| > λ_max, near a saddle or a maximum. With `bottom`, the run goes on until λ_min has
    converged to `tol` × the spectral radius (near a minimum it is close to 0, where a relative
    tolerance never holds): on F1 that took 38 products where the top took 7-11. Without it
    λ_min is the smallest Ritz value so far, with its residual and `lambda_min_converged`."""
    gen = torch.Generator().manual_seed(cfg.seed)
    started = time.perf_counter()
    k = min(cfg.k, like.numel())
    guarded = min(k + GUARD, like.numel())

    def done(theta: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """Whether each of the k largest (and the GUARD below them), and then the smallest,
        has converged."""
        radius = max(abs(theta[0]), abs(theta[-1]))
        top = residual[-guarded:] <= cfg.tol * np.abs(theta[-guarded:])
        return np.append(top[::-1], residual[0] <= cfg.tol * radius)

    def converged(alpha: np.ndarray, beta: np.ndarray) -> bool:
        if len(alpha) < guarded:
            return False
        theta, residual, _ = ritz(alpha, beta)
        ok = done(theta, residual)
        if log is not None:
            bottom = f", {'the' if ok[-1] else 'not the'} bottom" if cfg.bottom else ""
            log(
                f"Lanczos step {len(alpha)}/{cfg.max_steps}: top {theta[-1]:.6g}, bottom "
                f"{theta[0]:.6g}, {int(ok[:-1].sum())}/{guarded} of the top{bottom} converged "
                f"({time.perf_counter() - started:.0f}s)"
            )
        return bool(ok.all() if cfg.bottom else ok[:-1].all())

    v0 = random_vector(like.numel(), gen, like, "gaussian")
    alpha, beta, _ = lanczos(matvec, v0, cfg.max_steps, converged)
    theta, residual, _ = ritz(alpha, beta)
    order = np.argsort(theta)[::-1][:k]
    largest = theta[0] if abs(theta[0]) > abs(theta[-1]) else theta[-1]
    ok = done(theta, residual)
    return {
        "eigenvalues": theta[order].tolist(),
        "residuals": residual[order].tolist(),
        "converged": bool(ok.all() if cfg.bottom else ok[:-1].all()),
        "steps": len(alpha),
        "lambda_max": float(theta[order[0]]),
        "lambda_min": float(theta[0]),
        "lambda_min_residual": float(residual[0]),
        "lambda_min_converged": bool(ok[-1]),
        "lambda_max_abs": float(largest),
    }


def hutchinson(
    matvec: MatVec, like: torch.Tensor, cfg: TraceConfig, log: Log = None
) -> dict[str, object]:
    """tr of the operator as the mean of vᵀHv over Rademacher v, with its standard error.

    vᵀHv is right-skewed when a few eigenvalues dominate H (a trained network's do), and the
    sample standard deviation of a few such values is small exactly when the large ones were
    missed: stopping on it made ±3 SE miss 1-3% of the time. Hence at least `min_samples` (50)
    and the widened error of `standard_error` (docs/panel.md)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    samples: list[float] = []
    se = math.inf
    while len(samples) < cfg.max_samples:
        v = random_vector(like.numel(), gen, like, "rademacher")
        samples.append(float(v @ matvec(v)))
        if len(samples) >= cfg.min_samples:
            se = standard_error(samples)
            if log is not None:
                log(f"Hutchinson sample {len(samples)}: trace {np.mean(samples):.6g} ± {se:.3g}")
            if se <= cfg.rel_se * abs(np.mean(samples)):
                break
    mean = float(np.mean(samples))
    return {
        "trace": mean,
        "trace_se": se,
        "samples": len(samples),
        "converged": se <= cfg.rel_se * abs(mean),
        "values": samples,
    }


# The deflated eigenvalues are converged as `eigenvalues`' defaults converge λ_max.
DEFLATE_TOL, DEFLATE_STEPS = 1e-3, 100


def top_pairs(
    matvec: MatVec, v0: torch.Tensor, k: int
) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """The k largest Ritz values, their Ritz vectors (rows, orthonormal) and residuals."""

    def converged(alpha: np.ndarray, beta: np.ndarray) -> bool:
        theta, residual, _ = ritz(alpha, beta)
        return len(alpha) >= k and bool(np.all(residual[-k:] <= DEFLATE_TOL * abs(theta[-k:])))

    alpha, beta, basis = lanczos(matvec, v0, max(DEFLATE_STEPS, k), converged)
    theta, s = tridiagonal_eigh(alpha, beta)
    top = np.argsort(theta)[::-1][:k]
    coefficients = torch.from_numpy(s[:, top].T.copy()).to(v0)  # k × steps
    vectors = torch.zeros(len(top), v0.numel(), dtype=v0.dtype, device=v0.device)
    for j, q in enumerate(basis):  # Σ_j s_j q_j, without stacking the basis (F1: 4.7 MB each)
        vectors += coefficients[:, j : j + 1] * q
    return theta[top], vectors, np.abs(beta[-1] * s[-1, top])


def quadrature(
    matvec: MatVec, like: torch.Tensor, cfg: DensityConfig, log: Log = None
) -> dict[str, object]:
    """Nodes θ_j and weights τ_j of stochastic Lanczos quadrature, per start, and the spectral
    density's moments tr(Hᵖ)/n, p = 1..4, with their standard errors over the starts.

    The `deflate` largest eigenvalues are found first (Lanczos) and taken exactly, weight 1/n
    each; SLQ covers the rest, H restricted to their complement, each start's weights (S_1j)²
    scaled to the complement's share (n − k)/n. A trained network's few large eigenvalues carry
    most of tr(H²) and beyond, and plain SLQ weighs each by a random (qᵀv)²: from one start,
    moment 2 was off by up to 150-290% on small networks (docs/panel.md)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    n = like.numel()
    k = min(cfg.deflate, n - 1)
    top, residuals, vectors = np.array([]), np.array([]), like.new_zeros(0, n)
    if k:
        top, vectors, residuals = top_pairs(matvec, random_vector(n, gen, like, "gaussian"), k)
        if log is not None:
            log(f"deflated the {len(top)} largest eigenvalues: {top[0]:.6g} to {top[-1]:.6g}")

    def rest(x: torch.Tensor) -> torch.Tensor:
        return x - vectors.T @ (vectors @ x)

    nodes, weights, moments = [], [], []
    for i in range(cfg.starts):
        v = rest(random_vector(n, gen, like, "gaussian"))
        alpha, beta, _ = lanczos(lambda x: rest(matvec(rest(x))), v, cfg.steps)
        theta, _, first = ritz(alpha, beta)
        node = np.concatenate([top, theta])
        weight = np.concatenate([np.full(len(top), 1 / n), first**2 * (n - len(top)) / n])
        order = np.argsort(node)
        nodes.append(node[order].tolist())
        weights.append(weight[order].tolist())
        moments.append([float(weight @ node**p) for p in (1, 2, 3, 4)])
        if log is not None:
            span = f"[{theta[0]:.4g}, {theta[-1]:.4g}]"
            log(f"quadrature start {i + 1}/{cfg.starts}: the rest of the spectrum in {span}")
    per_start = np.array(moments)
    errors = [standard_error(m) if cfg.starts > 1 else math.nan for m in per_start.T]
    return {
        "nodes": nodes,
        "weights": weights,
        "moments": per_start.mean(axis=0).tolist(),
        "moments_se": errors,
        "moments_per_start": per_start.tolist(),
        "deflated": top.tolist(),
        "deflated_residuals": residuals.tolist(),
    }


def density(
    nodes: list[list[float]], weights: list[list[float]], grid: np.ndarray, sigma: float
) -> np.ndarray:
    """The smoothed spectral density on `grid`: the average over starts of Σ τ_j N(λ; θ_j, σ²)."""
    total = np.zeros_like(grid, dtype=float)
    for theta, tau in zip(nodes, weights, strict=True):
        z = (grid[:, None] - np.asarray(theta)[None, :]) / sigma
        total += (np.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))) @ np.asarray(tau)
    return total / len(nodes)


# `sharpminima curvature WHAT`: its settings class, and what it computes from f.
MEASURES: Measures = {
    "eigenvalues": (
        EigenConfig,
        lambda f, cfg, log: top_eigenvalues(
            product(resampled(f, cfg.sample, cfg.seed)(), cfg), f.theta0, cfg, log
        ),
    ),
    "trace": (
        TraceConfig,
        lambda f, cfg, log: hutchinson(sampled_product(f, cfg), f.theta0, cfg, log),
    ),
    "density": (
        DensityConfig,
        lambda f, cfg, log: quadrature(product(f, cfg), f.theta0, cfg, log),
    ),
}


def curvature(
    model: nn.Module,
    data: Data,
    cfg: EigenConfig | TraceConfig | DensityConfig,
    loss: LossFn = cross_entropy_sum,
    log: Log = None,
) -> dict[str, object]:
    """One curvature measure of `model`'s current parameters on `data` (a pair (x, y), a
    DataLoader that does not shuffle, or a list of batches); the model is left unchanged."""
    return measure(MEASURES, model, data, cfg, loss, log)
