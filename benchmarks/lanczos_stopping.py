"""Lanczos stopping rules for λ_max on random spectra: how many products each needs, and how
often it stops more than tol below λ_max (a miss).

    python benchmarks/lanczos_stopping.py [--spectra 200] [--tol 1e-3] [--size 20000] [--steps 40]

Why it exists (issue 39, item 5): our λ_max needs more products than PyHessian's power
iteration, and the count, not the product, is what loses. Each spectrum is a diagonal operator:
a top eigenvalue, a second one either close (0.1-1% below) or separated (5-50% below), up to 11
outliers and a bulk of `--size` small eigenvalues of both signs, as a trained network's
Hessian has. One Lanczos run of `--steps` steps per spectrum from a Gaussian start (drawn as
`curvature` draws it), and every rule is asked after every step of the same run, so the rules
differ only in where they stop. The rules: `curvature`'s own (each of the top 1 + GUARD Ritz
values has residual ≤ tol·θ: the residual bounds the error, and the guard values show that the
top pair is resolved); the gap bound r²/(θ₁ − θ₂ − r₂) for the top (the error itself near
convergence, Parlett's) with the guard at tol, at √tol, with one guard value, or none.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from sharpminima.measures.curvature import GUARD, lanczos, random_vector, ritz


def spectrum(seed: int, close: bool, size: int) -> tuple[float, torch.Tensor]:
    """λ_max and all eigenvalues of one random spectrum."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.5, 20)
    apart = rng.uniform(1e-3, 1e-2) if close else rng.uniform(0.05, 0.5)
    second = top * (1 - apart)
    outliers = second * rng.uniform(0.05, 0.95, rng.integers(0, 12))
    bulk = rng.exponential(rng.uniform(1e-4, 1e-2), size)
    negative = -rng.exponential(1e-3, rng.integers(0, size // 10))
    eigenvalues = [[top, second], outliers, top * bulk, top * negative]
    return top, torch.from_numpy(np.concatenate(eigenvalues))


def rule(tol: float, guard: int, guard_tol: float, gap: bool):
    """A stopping rule on the Ritz values θ (ascending) and their residuals r."""

    def done(theta: np.ndarray, r: np.ndarray) -> bool:
        if len(theta) < 1 + guard:
            return False
        error = r[-1]
        if gap and len(theta) > 1 and theta[-1] - theta[-2] - r[-2] > 0:
            error = min(error, r[-1] ** 2 / (theta[-1] - theta[-2] - r[-2]))
        guards = r[-1 - guard : -1] <= guard_tol * np.abs(theta[-1 - guard : -1])
        return bool(error <= tol * abs(theta[-1]) and guards.all())

    return done


def rules(tol: float) -> dict[str, object]:
    return {
        f"residual, {GUARD} guards at tol (curvature's)": rule(tol, GUARD, tol, gap=False),
        f"gap bound, {GUARD} guards at tol": rule(tol, GUARD, tol, gap=True),
        f"gap bound, {GUARD} guards at √tol": rule(tol, GUARD, math.sqrt(tol), gap=True),
        "gap bound, 1 guard at √tol": rule(tol, 1, math.sqrt(tol), gap=True),
        "gap bound, no guard": rule(tol, 0, tol, gap=True),
    }


def stops(spectra: range, close: bool, tol: float, size: int, steps: int) -> dict[str, list]:
    """Per rule: (steps taken, missed) on each spectrum."""
    out: dict[str, list] = {name: [] for name in rules(tol)}
    for seed in spectra:
        top, d = spectrum(seed, close, size)
        gen = torch.Generator().manual_seed(seed)
        start = random_vector(len(d), gen, d, "gaussian")
        alpha, beta, _ = lanczos(lambda v, d=d: d * v, start, steps)
        history = [ritz(alpha[:m], beta[:m])[:2] for m in range(1, len(alpha) + 1)]
        for name, done in rules(tol).items():
            m = next((m for m, h in enumerate(history, 1) if done(*h)), len(history))
            out[name].append((m, bool(history[m - 1][0][-1] < top * (1 - tol))))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spectra", type=int, default=200, help="random spectra of each kind")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=20_000, help="bulk eigenvalues per spectrum")
    p.add_argument("--steps", type=int, default=40, help="Lanczos steps per spectrum")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{args.spectra} random spectra of each kind, {args.size} bulk eigenvalues, tol "
        f"{args.tol:g}; a miss is a stop more than tol below λ_max (seeds 100 on)"
    )
    kinds = {"close top pair (0.1-1%)": True, "separated top (5-50%)": False}
    results = {
        kind: stops(range(100, 100 + args.spectra), close, args.tol, args.size, args.steps)
        for kind, close in kinds.items()
    }
    print("\n| rule | " + " | ".join(f"{k}: misses, mean steps" for k in kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name in rules(args.tol):
        cells = []
        for kind in kinds:
            steps, missed = zip(*results[kind][name], strict=True)
            cells.append(f"{sum(missed)}, {np.mean(steps):.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
