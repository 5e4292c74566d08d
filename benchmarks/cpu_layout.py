"""C1 on the CPU three ways, side by side: glibc's default malloc with NCHW images, the CLI's
malloc settings (freed memory kept in the heap), and those with channels-last images (the conv
networks' pre-hook). Prints seconds per SB step (batch 256), per LB step (batch 5,500) and per
evaluation chunk of 5,000, and each as a ratio to the first way (docs/performance.md).

    python benchmarks/cpu_layout.py [--threads 2] [--repeats 3] [--network C1]
                                    [--lb-batch 5500] [--chunk 5000]

Each way runs in a fresh process: malloc settings are process-wide and cannot be undone, and
the first way must never have run with them. Every way computes the same numbers up to float
rounding (the kernels differ); `tests/test_models.py` checks the hook's outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WAYS = {  # name -> (the CLI's malloc settings, channels-last images)
    "default malloc, NCHW": (False, False),
    "kept heap, NCHW": (True, False),
    "kept heap, channels-last": (True, True),
}


def measure(
    network: str, heap: bool, channels_last: bool, repeats: int, lb_batch: int, chunk: int
) -> dict[str, float]:
    """Best-of-`repeats` seconds of each piece of work, in this process."""
    if heap:
        from sharpminima.cli import _keep_freed_memory

        _keep_freed_memory()
    import torch
    import torch.nn.functional as F

    from sharpminima.models import build

    model = build(network, seed=0)
    if not channels_last:
        model._forward_pre_hooks.clear()  # the conv networks' channels-last hook
    opt = torch.optim.Adam(model.parameters())
    gen = torch.Generator().manual_seed(0)

    def step(batch: int):
        x, y = torch.rand(batch, 3, 32, 32, generator=gen), torch.randint(0, 10, (batch,))

        def run() -> None:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

        return run

    def evaluate():
        x = torch.rand(chunk, 3, 32, 32, generator=gen)

        def run() -> None:
            with torch.no_grad():
                model.eval()
                model(x)
                model.train()

        return run

    seconds = {}
    pieces = {"SB step": step(256), "LB step": step(lb_batch), "eval chunk": evaluate()}
    for name, work in pieces.items():
        work()  # warm-up: first-touch of the memory, oneDNN's kernel choice
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - started)
        seconds[name] = best
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--network", default="C1", help="a conv network (C1-C4)")
    p.add_argument("--lb-batch", type=int, default=5500, help="LB batch (C1: 10%% of 55,000)")
    p.add_argument("--chunk", type=int, default=5000, help="evaluation chunk (the protocol's)")
    p.add_argument("--way", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.way:
        import torch

        torch.set_num_threads(args.threads)
        sizes = (args.repeats, args.lb_batch, args.chunk)
        print(json.dumps(measure(args.network, *WAYS[args.way], *sizes)))
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    results = {}
    for way in WAYS:
        argv = [sys.executable, __file__, "--way", way, "--threads", str(args.threads),
                "--repeats", str(args.repeats), "--network", args.network,
                "--lb-batch", str(args.lb_batch), "--chunk", str(args.chunk)]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
        results[way] = json.loads(out.splitlines()[-1])
    base = results[next(iter(WAYS))]
    print(
        f"{args.network}, {args.threads} threads, best of {args.repeats}; LB batch "
        f"{args.lb_batch}, evaluation chunk {args.chunk}: seconds (speed-up over the first way)"
    )
    print("| way | " + " | ".join(base) + " |")
    print("|---|" + "---|" * len(base))
    for way, seconds in results.items():
        cells = [f"{s:.3f} ({base[k] / s:.2f}×)" for k, s in seconds.items()]
        print(f"| {way} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
