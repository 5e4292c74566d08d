"""What each measure of the panel costs one run at its default budget, in gradients and seconds.

    python benchmarks/panel_cost.py RUN.h5 [--subset 5000] [--threads 2] [--device cpu]

Each measure (φ in the full space, λ_max, the trace, the density, the ℓ∞ and ℓ2 worst cases,
the average case) runs at its settings' defaults on the run's first `--subset` training
examples, counting what it asks of f: evaluations of f alone, of f and ∇f (gradients), and
Hessian-vector products, each in units of the whole subset (an operation on a tenth of it
counts 0.1). The sampled rows run the trace and the average case with each sample over its own
10% of the examples, and the worst cases with each start's ascent over its own 10% (`sample`,
chunks of that size, docs/panel.md). One of each operation is
then timed on the whole training set (the panel's chunk, 5000), and a measure's cost on the
whole set is its counts times those times, in seconds and in gradients. The counts are the
subset's: where a measure adapts (Lanczos steps, Hutchinson samples, worst-case starts,
L-BFGS-B's line searches) the whole set may need more or fewer; `subset seconds` is what the
subset run took, as a check on the per-operation times. Printed with the device, threads, seed
and versions (docs/performance.md).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import Counter

import torch

from sharpminima.cli import _keep_freed_memory
from sharpminima.measures.adaptive import AverageConfig, WorstConfig, WorstL2Config, adaptive
from sharpminima.measures.curvature import DensityConfig, EigenConfig, TraceConfig, curvature
from sharpminima.measures.objective import Objective
from sharpminima.measures.sharpness import SharpnessConfig, sharpness
from sharpminima.runtime import device_name, pick_device
from sharpminima.store import Run

MEASURES = {
    "phi (full space)": SharpnessConfig(),
    "lambda_max": EigenConfig(k=1),
    "trace": TraceConfig(),
    "density": DensityConfig(),
    "worst case, linf": WorstConfig(),
    "worst case, l2": WorstL2Config(),
    "average case": AverageConfig(),
}


SAMPLED = 0.1  # the sampled rows' share of the examples per sample


class Counted:
    """Objective's f, ∇f and H·v, counted for the length of a `with` in units of `n` examples."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self) -> Counter:
        self.calls, self.saved = Counter(), (Objective.__call__, Objective.hvp)
        call, hvp = self.saved
        counts, n = self.calls, self.n

        def counted_call(f, theta, grad=True):
            counts["gradients" if grad else "f"] += f.n / n
            return call(f, theta, grad)

        def counted_hvp(f, v):
            counts["products"] += f.n / n
            return hvp(f, v)

        Objective.__call__, Objective.hvp = counted_call, counted_hvp
        return counts

    def __exit__(self, *exc) -> None:
        Objective.__call__, Objective.hvp = self.saved


def run_measure(model, x, y, cfg) -> float:
    """Seconds `cfg`'s measure took on (x, y)."""
    started = time.perf_counter()
    if isinstance(cfg, SharpnessConfig):
        sharpness(model, x, y, cfg)
    elif isinstance(cfg, WorstConfig | AverageConfig):
        adaptive(model, (x, y), cfg)
    else:
        curvature(model, (x, y), cfg)
    return time.perf_counter() - started


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--subset", type=int, default=5000, help="examples the counts are taken on")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    _keep_freed_memory()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    run = Run(args.run)
    data = run.data()
    model = run.model().to(device)
    x, y = data.x_train.to(device), data.y_train.to(device)
    print(f"{args.run}: {len(x)} training examples, counts on the first {args.subset}; "
          f"{device_name(device)}, {torch.get_num_threads()} threads, seed 0 (the settings'), "
          f"torch {torch.__version__}, Python {platform.python_version()}")  # fmt: skip

    size = round(SAMPLED * args.subset)
    sampled = {
        f"trace, {SAMPLED:.0%} a sample": TraceConfig(sample=size, chunk=size),
        f"average case, {SAMPLED:.0%} a draw": AverageConfig(sample=size, chunk=size),
        f"worst case, linf, {SAMPLED:.0%} a start": WorstConfig(sample=size, chunk=size),
        f"worst case, l2, {SAMPLED:.0%} a start": WorstL2Config(sample=size, chunk=size),
    }
    counts, subset_seconds = {}, {}
    for name, cfg in {**MEASURES, **sampled}.items():
        with Counted(args.subset) as calls:
            subset_seconds[name] = run_measure(model, x[: args.subset], y[: args.subset], cfg)
        counts[name] = calls

    f = Objective(model, (x, y), "batch", 5000)
    v = torch.randn(f.theta0.numel(), generator=torch.Generator().manual_seed(0)).to(f.theta0)
    seconds = {
        "f": timed(lambda: f(f.theta0, grad=False)),
        "gradients": timed(lambda: f(f.theta0)),
        "products": timed(lambda: f.hvp(v)),
    }
    f.restore()
    print(f"on all {len(x)}: f {seconds['f']:.2f} s, a gradient {seconds['gradients']:.2f} s, "
          f"a Hessian-vector product {seconds['products']:.2f} s")  # fmt: skip
    print()
    print("| measure | f | gradients | H·v | in gradients | seconds, all examples | "
          "subset seconds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, calls in counts.items():
        total = sum(calls[k] * seconds[k] for k in seconds)
        print(f"| {name} | {calls['f']:.4g} | {calls['gradients']:.4g} | {calls['products']:.4g} | "
              f"{total / seconds['gradients']:.0f} | {total:.0f} | "
              f"{subset_seconds[name]:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
