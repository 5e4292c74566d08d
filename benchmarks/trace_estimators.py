"""Whether Hutch++ or deflation needs fewer Hessian-vector products than Hutchinson for tr H.

    python benchmarks/trace_estimators.py RUN.h5 [--subset 5000] [--samples 60] [--threads 1]

Hutchinson's error after m samples is s/√m, s the spread of vᵀHv. Taking the top of the
spectrum exactly first leaves a remainder whose samples spread less, at a fixed price in
products: deflation (the k largest eigenpairs by Lanczos, as the density does) or Hutch++
(Meyer et al. 2021: the range of H S for `sketch` random S, then tr QᵀHQ). Each estimator's
per-sample spread relative to the trace, r, and its fixed price, p, give the products for a
relative error e: p + (r/e)². Printed for each, with the error below which it beats plain
Hutchinson, on the run's first `--subset` training examples (BatchNorm on running statistics).
Counts, not seconds: they do not depend on the machine's load (docs/panel.md).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from sharpminima.measures.curvature import random_vector, top_pairs
from sharpminima.measures.objective import Objective
from sharpminima.runtime import versions
from sharpminima.store import Run


def remainder(f: Objective, basis: torch.Tensor, samples: int, gen: torch.Generator) -> list:
    """vᵀ P H P v for Rademacher v, P the projection off `basis`'s rows (orthonormal)."""

    def project(x: torch.Tensor) -> torch.Tensor:
        return x - basis.T @ (basis @ x)

    vectors = (random_vector(len(f.theta0), gen, f.theta0, "rademacher") for _ in range(samples))
    return [float(v @ project(f.hvp(project(v)))) for v in vectors]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Run(args.run)
    data, model = run.data(), run.model()
    x, y = data.x_train[: args.subset], data.y_train[: args.subset]
    f = Objective(model, (x, y), bn="running", chunk=5000)
    gen, d = torch.Generator().manual_seed(0), len(f.theta0)
    rows = [("Hutchinson", 0, 0.0, remainder(f, f.theta0.new_zeros(0, d), args.samples, gen))]
    for k in (10, 30):
        before = f.evaluations
        top, vectors, _ = top_pairs(f.hvp, random_vector(d, gen, f.theta0, "gaussian"), k)
        price = f.evaluations - before
        rows.append(
            (f"deflated, k = {k}", price, top.sum(), remainder(f, vectors, args.samples, gen))
        )
    for sketch in (10, 20):
        s = torch.stack(
            [f.hvp(random_vector(d, gen, f.theta0, "rademacher")) for _ in range(sketch)]
        )
        q = torch.linalg.qr(s.T.double())[0].T.to(f.theta0)
        exact = float(sum(row @ f.hvp(row) for row in q))
        rows.append(
            (f"Hutch++, sketch {sketch}", 2 * sketch, exact, remainder(f, q, args.samples, gen))
        )
    trace = rows[0][2] + float(np.mean(rows[0][3]))
    plain = float(np.std(rows[0][3], ddof=1)) / trace
    print(f"{args.run}: first {len(y)} training examples, running BatchNorm, {d} parameters, "
          f"{args.samples} samples each, seed 0, {args.threads} threads, {versions()}")  # fmt: skip
    print("\n| estimator | fixed products | trace | r (spread / trace) | products for 5% | "
          "beats Hutchinson below |\n|---|---|---|---|---|---|")  # fmt: skip
    for name, price, exact, values in rows:
        r = float(np.std(values, ddof=1)) / trace
        gain = plain**2 - r**2
        below = f"{math.sqrt(gain / price):.1%}" if price and gain > 0 else "—"
        total, need = exact + float(np.mean(values)), price + (r / 0.05) ** 2
        print(f"| {name} | {price} | {total:.5g} | {r:.3f} | {need:.0f} | {below} |")


if __name__ == "__main__":
    main()
