"""Hessian-vector products that Lanczos and power iteration need for λ_max, at equal accuracy.

Both run on one f: a stored run's iterate over the examples it trained on (`--examples N`: the
first N), in chunks, BatchNorm as for φ. Lanczos runs `--steps` steps; its last Ritz value
(residual printed) is the reference. Power iteration is PyHessian's `eigenvalues()` method
(v ← Hv/‖Hv‖, estimate vᵀHv, stopped when the estimate changes by less than tol relative); here
it runs on to `--steps` too. Both start from the same random vector, so after m products the
Lanczos estimate is never below power iteration's (its Krylov space holds the power iterate).
Every product costs the same (one `Objective.hvp`), so the ratio of the counts is the ratio of
the times, whatever else the machine is doing. Printed: each step's estimates and their errors
against the reference, then for each method the first step from which its error stays at most
tol, and the step where PyHessian's rule stops, with its error; and each method's seconds
beside the floor of its products (floor.py).

    python benchmarks/lanczos_vs_power.py RUN.h5 [--examples N] [--steps 14] [--tol 1e-3]
                                                 [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from floor import floor_line, flops, matmul_rate

from sharpminima.measures.curvature import lanczos, random_vector, ritz
from sharpminima.measures.objective import Objective
from sharpminima.store import Run


def start(f: Objective, seed: int) -> torch.Tensor:
    """A random unit vector, drawn as `curvature` draws its starts."""
    gen = torch.Generator().manual_seed(seed)
    return random_vector(f.theta0.numel(), gen, f.theta0, "gaussian")


def lanczos_estimates(f: Objective, steps: int, seed: int) -> tuple[list[float], float]:
    """The top Ritz value after each step, and the last one's residual."""
    top: list[float] = []

    def record(alpha: np.ndarray, beta: np.ndarray) -> bool:
        top.append(float(ritz(alpha, beta)[0][-1]))
        return False

    alpha, beta, _ = lanczos(f.hvp, start(f, seed), steps, record)
    return top, float(ritz(alpha, beta)[1][-1])


def power_estimates(f: Objective, steps: int, seed: int) -> list[float]:
    """vᵀHv after each product of power iteration from a random unit v."""
    v = start(f, seed)
    out = []
    for _ in range(steps):
        w = f.hvp(v)
        out.append(float(w @ v))
        v = w / w.norm()
    return out


def settled(errors: list[float], tol: float) -> int | None:
    """The first step (1-based) from which every error is at most tol."""
    for i in range(len(errors)):
        if all(e <= tol for e in errors[i:]):
            return i + 1
    return None


def pyhessian_stop(estimates: list[float], tol: float) -> int | None:
    """The step at which PyHessian's rule, |λ_i − λ_{i−1}| / (|λ_{i−1}| + 1e-6) < tol, stops."""
    for i in range(1, len(estimates)):
        if abs(estimates[i] - estimates[i - 1]) / (abs(estimates[i - 1]) + 1e-6) < tol:
            return i + 1
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--examples", type=int, default=0, help="the first N training examples (0: all)")
    p.add_argument("--steps", type=int, default=14, help="products each method makes")
    p.add_argument("--tol", type=float, default=1e-3, help="relative accuracy wanted")
    p.add_argument("--bn", default="batch")
    p.add_argument("--chunk", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run(args.run)
    data = run.data()
    n = args.examples or len(data.x_train)
    f = Objective(run.model(), (data.x_train[:n], data.y_train[:n]), args.bn, args.chunk)
    print(f"{args.run}: {n} examples, BatchNorm {args.bn}, chunk {args.chunk}, tol {args.tol}")
    rate, product = matmul_rate(f.device), flops(lambda: f.hvp(start(f, args.seed)))
    seconds = {}
    started = time.perf_counter()
    lz, residual = lanczos_estimates(f, args.steps, args.seed)
    seconds["Lanczos"] = time.perf_counter() - started
    started = time.perf_counter()
    pw = power_estimates(f, args.steps, args.seed)
    seconds["power"] = time.perf_counter() - started
    ref = lz[-1]
    errors = {name: [abs(x - ref) / abs(ref) for x in values] for name, values in
              (("Lanczos", lz), ("power", pw))}  # fmt: skip
    print(f"reference λ_max {ref:.9g} (Lanczos step {len(lz)}, residual {residual:.2g})")
    if residual > args.tol * abs(ref):
        print("the reference has not converged (residual > tol × λ_max): raise --steps")
    print("| step | Lanczos | error | power | error |\n|---|---|---|---|---|")
    for i, (a, b) in enumerate(zip(lz, pw, strict=False)):
        e, g = errors["Lanczos"][i], errors["power"][i]
        print(f"| {i + 1} | {a:.7g} | {e:.1e} | {b:.7g} | {g:.1e} |")
    need = {name: settled(e, args.tol) for name, e in errors.items()}
    for name, steps in need.items():
        print(f"{name}: within tol from product {steps if steps else f'> {args.steps}'}")
    if all(need.values()):
        print(f"ratio Lanczos/power at equal accuracy: {need['Lanczos'] / need['power']:.2f}")
    for name, took in seconds.items():
        print(floor_line(f"{name}, {args.steps} products", took, args.steps * product, rate))
    stop = pyhessian_stop(pw, args.tol)
    if stop:
        print(f"PyHessian's rule stops power iteration at product {stop}, "
              f"error {errors['power'][stop - 1]:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
