"""Where the time of f, ∇f and a Hessian-vector product goes, against the machine's floor.

    python benchmarks/hvp_profile.py [--network F1] [--chunk 5000] [--threads 2] [--repeats 3]

One chunk of random inputs through a freshly initialised network, in each BatchNorm mode: the
seconds of f and ∇f (what φ's L-BFGS-B evaluates) and of one H·v by double backward (what
Lanczos, Hutchinson and quadrature call), each beside its matmul floor and its matmuls replayed
alone (`floor.py`), and the share of the product's time spent in BatchNorm's double backward
(`torch.profiler`).
docs/performance.md reports what it printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from floor import best_seconds, floor_line, flops, matmul_rate, matmul_seconds
from torch.profiler import ProfilerActivity, profile

from sharpminima.measures.objective import Objective
from sharpminima.models import build, spec

BN_DOUBLE_BACKWARD = "NativeBatchNormBackwardBackward0"


def bn_share(work: Callable[[], object]) -> float:
    """The fraction of `work`'s CPU time inside BatchNorm's double backward."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    inside = sum(e.cpu_time_total for e in events if e.key == BN_DOUBLE_BACKWARD)
    return inside / total if total else float("nan")


def report(f: Objective, bn: str, repeats: int) -> None:
    """f and ∇f, then H·v, each beside its floor; then BatchNorm's share of H·v."""
    v = torch.randn_like(f.theta0)
    for what, work in (("f and grad", lambda: f(f.theta0)), ("H.v", lambda: f.hvp(v))):
        seconds = best_seconds(work, repeats)
        rate = matmul_rate(f.device)  # measured beside each, so load affects both alike
        alone = matmul_seconds(work, repeats)
        print(floor_line(f"{what}, {bn} BatchNorm", seconds, flops(work), rate, alone))
    share = bn_share(lambda: f.hvp(v))
    print(f"H.v, {bn} BatchNorm: {share:.0%} of its time in BatchNorm's double backward")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", default="F1")
    p.add_argument("--chunk", type=int, default=5000, help="examples (one chunk)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = spec(args.network)
    model = build(args.network, seed=0)
    x = torch.randn(args.chunk, *s.input_shape)
    y = torch.randint(0, s.num_classes, (args.chunk,))
    print(
        f"{args.network}, {args.chunk} examples, {args.threads} threads, torch {torch.__version__}"
    )
    for bn in ("batch", "running"):
        report(Objective(model, (x, y), bn, args.chunk), bn, args.repeats)


if __name__ == "__main__":
    main()
