"""Metric 2.1 of Keskar et al.: sharpness of a minimizer in a box, maximised by L-BFGS-B.

    C_ε = { y : |y_i| ≤ ε (|(A⁺x)_i| + 1) },  φ = (max_{y∈C_ε} f(x + A y) − f(x)) / (1 + f(x)) × 100

with f the mean cross-entropy over the whole training set. Choices the paper leaves open (BN mode,
start point, tolerances, A's distribution) are options, documented in docs/sharpness.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError, require_finite
from ..settings import setting
from ..store import measure_iterate
from .lbfgsb import minimize_in_box
from .objective import Objective

# A for each space: None (the full space, A = I), else its entries and whether its columns are
# scaled to unit norm. The paper says neither; we use unit-norm Gaussian columns, the public
# SmoothOut reimplementation uniform [0, 1) entries with unit-norm columns.
SUBSPACES = {
    "full": None,
    "random": ("gaussian", True),
    "random-uniform": ("uniform", True),
    "random-raw": ("gaussian", False),
    "random-uniform-raw": ("uniform", False),
}
SPACES = tuple(SUBSPACES)
STARTS = ("zero", "random", "multistart")
BLOCK_ROWS = 1 << 16  # rows of A generated per block (each block has its own seed)


@dataclass(frozen=True)
class SharpnessConfig:
    """Everything that changes φ (docs/sharpness.md)."""

    eps: float = setting(1e-3, "box size ε")
    space: str = setting(
        "full",
        "full (A = I), or random (A: n×dim, Gaussian entries, unit-norm columns); random-uniform "
        "(entries uniform in [0, 1)), random-raw and random-uniform-raw (columns not scaled)",
    )
    dim: int = setting(100, "random subspace dimension p")
    iters: int = setting(10, "L-BFGS-B iterations (φ is the best value after them)")
    bn: str = setting("batch", "BatchNorm statistics in f: batch (authors' Keras) or running")
    chunk: int = setting(5000, "examples per chunk of f")
    start: str = setting("zero", "zero, random or multistart")
    starts: int = setting(4, "random starts tried by multistart (besides y = 0)")
    seed: int = setting(0, "seed of A and of random starts")
    gtol: float = setting(0.0, "L-BFGS-B gtol (0: never; at a minimizer the gradient is small)")
    ftol: float = setting(0.0, "L-BFGS-B ftol (0: never)")
    max_iters: int = setting(
        0, "continue past iters up to this many iterations, or until L-BFGS-B stops on its own "
        "(gtol, ftol), and record φ_converged (0: stop at iters)",
    )  # fmt: skip

    def check(self) -> None:
        require_finite(self)
        if self.space not in SPACES:
            raise UserError(f"unknown space {self.space!r}: use one of {', '.join(SPACES)}")
        if self.start not in STARTS:
            raise UserError(f"unknown start {self.start!r}: use one of {', '.join(STARTS)}")
        if self.eps <= 0 or self.iters < 1 or self.dim < 1 or self.chunk < 2:
            raise UserError("eps must be positive, iters and dim at least 1, chunk at least 2")
        if self.eps > 1:
            raise UserError(
                f"--eps is {self.eps}: give at most 1 (ε is relative to |x| + 1: a box wider "
                "than the weights measures overflow, not sharpness; the paper uses 1e-3, 5e-4)"
            )
        if self.max_iters and self.max_iters < self.iters:
            raise UserError(f"max-iters ({self.max_iters}) is below iters: 0, or at least iters")


def box(eps: float, z: torch.Tensor) -> torch.Tensor:
    """Half-widths of C_ε around coordinates z: ε(|z_i| + 1)."""
    return eps * (z.abs() + 1)


def scaled(rise: float, f_x: float) -> float:
    """Metric 2.1's scaling of a rise of f: relative to 1 + f(x), in percent."""
    return rise / (1 + f_x) * 100


class Loss(Objective):
    """f of Metric 2.1: mean cross-entropy over all of (x, y), BatchNorm and chunks as `cfg`."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: SharpnessConfig):
        super().__init__(model, (x, y), cfg.bn, cfg.chunk)


class Identity:
    """A = I_n: the full space."""

    def __init__(self, n: int):
        self.n = self.p = n

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def T(self, g: torch.Tensor) -> torch.Tensor:  # noqa: N802 (Aᵀ)
        return g

    def pinv(self, x: torch.Tensor) -> torch.Tensor:
        return x


class RandomSubspace:
    """A ∈ R^{n×p} with i.i.d. entries, N(0, 1) or uniform in [0, 1), columns scaled to unit
    norm or not (`entries`, `unit`).

    A is generated on the CPU in blocks of rows, block b from seed (seed, b), so it is the same
    on every device and never needs to exist whole in float64. Blocks are kept in memory (float32,
    on the model's device) when they fit `cache_mb`, else regenerated at each product.
    """

    def __init__(
        self,
        n: int,
        p: int,
        seed: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        cache_mb: float = 2048,
        entries: str = "gaussian",
        unit: bool = True,
    ):
        self.n, self.p, self.seed, self.device, self.dtype = n, p, seed, device, dtype
        self.entries = entries
        self.starts = list(range(0, n, BLOCK_ROWS))
        self.cache: list[torch.Tensor] | None = [] if n * p * 4 <= cache_mb * 2**20 else None
        gram = torch.zeros(p, p, dtype=torch.float64)
        for i in range(len(self.starts)):
            block = self._generate(i)
            gram += block.T.double() @ block.double()
            if self.cache is not None:
                self.cache.append(block.to(device, dtype))
        self.scale = gram.diagonal().rsqrt() if unit else torch.ones(p, dtype=torch.float64)
        self.gram = gram * self.scale[:, None] * self.scale[None, :]  # ÂᵀÂ

    def _generate(self, i: int) -> torch.Tensor:
        rows = min(BLOCK_ROWS, self.n - self.starts[i])
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        draw = torch.randn if self.entries == "gaussian" else torch.rand
        return draw(rows, self.p, generator=gen)

    def _blocks(self):
        for i, start in enumerate(self.starts):
            if self.cache is not None:
                block = self.cache[i]
            else:
                block = self._generate(i).to(self.device, self.dtype)
            yield slice(start, start + len(block)), block

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        z = (self.scale * y.detach().cpu().double()).to(self.device, self.dtype)
        out = torch.empty(self.n, device=self.device, dtype=self.dtype)
        for rows, block in self._blocks():
            out[rows] = block @ z
        return out

    def T(self, g: torch.Tensor) -> torch.Tensor:  # noqa: N802 (Aᵀ)
        acc = torch.zeros(self.p, dtype=torch.float64)
        for rows, block in self._blocks():
            acc += (g[rows].to(block.dtype) @ block).double().cpu()
        return acc * self.scale

    def pinv(self, x: torch.Tensor) -> torch.Tensor:
        """A⁺x = (AᵀA)⁻¹Aᵀx (A has full column rank with probability 1)."""
        return torch.linalg.solve(self.gram, self.T(x))


def _starts(cfg: SharpnessConfig, bound: np.ndarray) -> list[np.ndarray]:
    """L-BFGS-B start points: y = 0, one uniform draw in C_ε, or y = 0 and `starts` draws."""
    zero = np.zeros_like(bound)
    if cfg.start == "zero":
        return [zero]
    rng = np.random.default_rng(cfg.seed)
    draws = [rng.uniform(-bound, bound) for _ in range(1 if cfg.start == "random" else cfg.starts)]
    return draws if cfg.start == "random" else [zero, *draws]


def maximise(
    loss: Loss, A, cfg: SharpnessConfig, log: Callable[[str], None] | None = None
) -> dict[str, object]:
    """Maximise f(x + A y) over C_ε with L-BFGS-B; return φ and the solver's statistics.

    φ is the best value found within `iters` iterations of each start (the paper's). With
    `max_iters`, each start continues, and `phi_converged` is the best value found at all;
    `phi_path` holds, per start, the best φ of that start after every iteration. `log` gets one
    line per iteration: φ so far and the time left.
    """
    x = loss.theta0
    bound = box(cfg.eps, A.pinv(x).double()).cpu().numpy()
    f_x, g_x = loss(x, grad=True)
    # The rise a linear model of f would give: max over the box of ∇f(x)ᵀAy. Where φ is close to
    # it, φ measures the gradient left at x (distance from a minimizer), not curvature.
    g_sub = A.T(g_x).double().cpu().numpy()
    first_order = float(np.abs(g_sub) @ bound)
    zero = {"f": f_x, "y": np.zeros(A.p)}
    best, at_iters, start_best = dict(zero), dict(zero), dict(zero)
    at_iterate = {}  # f at this start's current iterate (its start point, then each iteration's)

    def objective(y: np.ndarray) -> tuple[float, np.ndarray]:
        yt = torch.from_numpy(y).to(x.device)
        f, g = loss(x + A(yt).to(x), grad=True)
        for record in (best, start_best):
            if f > record["f"]:
                record.update(f=f, y=y.copy())
        return -f, -A.T(g).double().cpu().numpy()

    nit = nfev = 0
    messages, path = [], []
    starts = _starts(cfg, bound)
    limit = max(cfg.iters, cfg.max_iters)
    started, before = time.perf_counter(), loss.evaluations

    def keep_at_iters() -> None:
        if start_best["f"] > at_iters["f"]:
            at_iters.update(start_best)

    # f sums float32 losses (float64 in float64 models): a step that changes it by less than
    # this is rounding, and a line search among such steps only burns evaluations (40 in one
    # iteration in a 100-dimensional subspace, where f is nearly linear and the rise small).
    floor = torch.finfo(x.dtype).eps * abs(f_x)

    def on_evaluation(f: float) -> str | None:
        if "f" not in at_iterate:
            at_iterate["f"] = f
        elif abs(f - at_iterate["f"]) <= floor:
            return (
                f"a step changed f by {f - at_iterate['f']:.2g}, within its rounding ({floor:.2g})"
            )
        at_iterate["last"] = f
        return None

    def on_iteration(start: int, it: int) -> None:
        at_iterate["f"] = at_iterate["last"]  # setulb's new iterate is the last point it asked for
        path[-1].append(scaled(start_best["f"] - f_x, f_x))
        if it == cfg.iters:
            keep_at_iters()
        if log is not None:
            # one evaluation an iteration to go (what L-BFGS-B's steps take once it has the
            # scale; the first few take 2-3), and one more per start to go: left within 2× of
            # the time taken from the second iteration on (docs/sharpness.md)
            to_go = len(starts) * limit - (start * limit + it) + len(starts) - start - 1
            left = (time.perf_counter() - started) / (loss.evaluations - before) * to_go
            log(
                f"start {start + 1}/{len(starts)} iteration {it}/{limit}: "
                f"phi so far {scaled(best['f'] - f_x, f_x):.4g} "
                f"({loss.evaluations} evaluations, about {left / 60:.1f} min left)"
            )

    for i, y0 in enumerate(starts):
        start_best.update(zero)
        at_iterate.clear()
        path.append([])
        res = minimize_in_box(
            objective, y0, -bound, bound, limit, cfg.gtol, cfg.ftol,
            on_iteration=lambda it, i=i: on_iteration(i, it), on_evaluation=on_evaluation,
        )  # fmt: skip
        if res.nit < cfg.iters:  # stopped on its own before `iters`: its best is φ's
            keep_at_iters()
        nit, nfev = nit + res.nit, nfev + res.nfev
        messages.append(res.message)
    loss.restore()
    violation = float(np.max(np.abs(best["y"]) - bound).clip(min=0))
    result = {
        "phi": scaled(at_iters["f"] - f_x, f_x),
        "f_x": f_x,
        "f_max": at_iters["f"],
        "nit": nit,
        "nfev": nfev,
        "evaluations": loss.evaluations,
        "message": " | ".join(messages),
        "max_bound_violation": violation,
        "grad_norm": float(g_x.norm()),
        "first_order_phi": scaled(first_order, f_x),
        "y_at_bound_fraction": float(np.mean(np.isclose(np.abs(at_iters["y"]), bound, rtol=1e-6))),
        "phi_path": path,
    }
    if cfg.max_iters:
        result.update(phi_converged=scaled(best["f"] - f_x, f_x), f_max_converged=best["f"])
    return result


def sharpness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: SharpnessConfig,
    cache_mb: float = 2048,
    log: Callable[[str], None] | None = None,
) -> dict:
    """φ of `model`'s current parameters on (x, y); the model is left unchanged."""
    cfg.check()
    start = time.perf_counter()
    loss = Loss(model, x, y, cfg)
    n = loss.theta0.numel()
    device = loss.theta0.device
    subspace = SUBSPACES[cfg.space]
    if subspace is None:
        A = Identity(n)
    else:
        entries, unit = subspace
        A = RandomSubspace(n, cfg.dim, cfg.seed, device, loss.theta0.dtype, cache_mb, entries, unit)
    result = maximise(loss, A, cfg, log)
    result.update(asdict(cfg), n_params=n, dim=A.p, seconds=time.perf_counter() - start)
    return result


def run_sharpness(
    run_path: str | Path,
    cfg: SharpnessConfig,
    which: str | int = "final",
    data_path: str | Path | None = None,
    device: str = "auto",
    cache_mb: float = 2048,
    log: Callable[[str], None] = print,
) -> dict:
    """φ of one stored iterate of a training run, with everything needed to trust the number."""
    cfg.check()
    measure = lambda model, data: sharpness(model, *data, cfg, cache_mb, log)  # noqa: E731
    nan = {"phi": np.nan}  # what readers of φ look for, should the iterate be non-finite
    return measure_iterate(run_path, which, measure, cfg, data_path, device, log, nan)
