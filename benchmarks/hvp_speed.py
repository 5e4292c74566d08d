"""One Hessian-vector product our way and PyHessian's, against one gradient, per network.

    python benchmarks/hvp_speed.py [--networks F1 C1 C2] [--examples 5000 1000 250]
                                   [--threads 2] [--repeats 3] [--device cpu]

One chunk of random inputs (its size per network from `--examples`) through a freshly
initialised network, BatchNorm on the chunk's statistics (the panel's default): the seconds of
f and ∇f as `Objective` computes them (the gradient), of H·v our way (`Objective.hvp`, the rules
of measures/hvp.py) and PyHessian's way (the gradient of ∇f·v by double backward, the images in
NCHW, the forward and first backward made afresh for each product as PyHessian does over a
data loader), best of `--repeats` after one unmeasured run. Printed: a Markdown table with the
ratios (goals: ours at most 3× the gradient, at most 0.5× PyHessian's way) and each way's peak
resident memory. Each (network, way) runs in a process of its own with the CLI's malloc settings,
so a peak is that way's alone; the ways of one network run one after another, so a ratio is
measured side by side (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

WAYS = ("gradient", "ours", "PyHessian's")


def measure(network: str, examples: int, way: str, repeats: int, device: str) -> dict:
    """Best-of-`repeats` seconds of `way` in this process, and this process's peak memory."""
    from sharpminima.cli import _keep_freed_memory

    _keep_freed_memory()
    import torch
    import torch.nn.functional as F

    from sharpminima.measures.objective import Objective
    from sharpminima.models import build, evaluation, spec

    gen = torch.Generator().manual_seed(0)
    s = spec(network)
    model = build(network, seed=0).to(device)
    x = torch.randn(examples, *s.input_shape, generator=gen).to(device)
    y = torch.randint(0, s.num_classes, (examples,), generator=gen).to(device)
    f = Objective(model, (x, y), "batch", examples)
    v = torch.randn(f.theta0.numel(), generator=gen).to(f.theta0)

    def pyhessian() -> None:
        model._forward_pre_hooks.clear()  # NCHW, as PyHessian leaves the images
        params = [p for p in model.parameters() if p.requires_grad]
        parts = v.split([p.numel() for p in params])
        pieces = [t.view_as(p) for t, p in zip(parts, params, strict=True)]
        with evaluation(model, "batch"):
            value = F.cross_entropy(model(x), y, reduction="sum") / examples
            grads = torch.autograd.grad(value, params, create_graph=True)
            dot = sum((g * p).sum() for g, p in zip(grads, pieces, strict=True))
            torch.autograd.grad(dot, params)

    work = {"gradient": lambda: f(f.theta0), "ours": lambda: f.hvp(v), "PyHessian's": pyhessian}
    seconds = []
    for _ in range(repeats + 1):
        if device != "cpu":
            torch.cuda.synchronize()
        started = time.perf_counter()
        work[way]()
        if device != "cpu":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"seconds": min(seconds[1:]), "peak_gib": peak, "torch": torch.__version__}


def child(network: str, examples: int, way: str, args) -> dict:
    """`measure` in a fresh process (malloc settings and the peak are per process)."""
    argv = [sys.executable, __file__, "--child", network, str(examples), way]
    argv += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    argv += ["--device", args.device]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{network} {way} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", default=["F1", "C1", "C2"])
    p.add_argument("--examples", nargs="+", type=int, default=[5000, 1000, 250])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        network, examples, way = args.child
        print(json.dumps(measure(network, int(examples), way, args.repeats, args.device)))
        return
    if len(args.examples) != len(args.networks):
        raise SystemExit("give one --examples per network")
    from sharpminima.runtime import device_name

    where = device_name(torch.device(args.device))
    print(f"{where}, {args.threads} threads, best of {args.repeats}, batch BatchNorm, seed 0")
    print("| network | examples | gradient s | ours s | × gradient | PyHessian's s | ours / "
          "PyHessian's | peak GiB: gradient, ours, PyHessian's |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for network, examples in zip(args.networks, args.examples, strict=True):
        r = {way: child(network, examples, way, args) for way in WAYS}
        g, ours, theirs = (r[w]["seconds"] for w in WAYS)
        peaks = ", ".join(f"{r[w]['peak_gib']:.1f}" for w in WAYS)
        print(f"| {network} | {examples} | {g:.3f} | {ours:.3f} | {ours / g:.2f} | "
              f"{theirs:.3f} | {ours / theirs:.2f} | {peaks} |")  # fmt: skip
    print(f"torch {r['ours']['torch']}; goals: ours ≤ 3× the gradient, ≤ 0.5× PyHessian's")


if __name__ == "__main__":
    main()
