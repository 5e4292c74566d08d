"""Sharpness cost vs its physical floor, side by side in one run.

Each L-BFGS-B evaluation of Metric 2.1 is one forward+backward pass over the whole training set,
so the floor of a sharpness computation is (nfev + 1) such passes (the +1 is f(x)). This prints
the seconds of one sharpness computation and of that many bare passes (a plain loop over chunks,
no solver), and their ratio; the target is a ratio within 1.15. A 2-core machine's pass times
wander by ±10% over minutes, so the two are measured in turns, `--repeats` times, and the
fastest of each is compared (every pair's ratio is printed too). Both are also printed beside
the machine's floor (floor.py): the passes' FLOPs over the fp32 matmul rate, measured in each turn
(the highest is used, so load cannot flatter the ratio), and beside the passes' matmuls alone,
replayed with the same shapes: what the matrix library does for this work.

    python benchmarks/sharpness.py RUN.h5 [--space full|random] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
import torch.nn.functional as F
from floor import floor_line, flops, matmul_rate, matmul_seconds

from sharpminima.measures.sharpness import SharpnessConfig, run_sharpness
from sharpminima.models import evaluation
from sharpminima.runtime import pick_device
from sharpminima.store import Run


def bare_passes(run_path: str, passes: int, cfg: SharpnessConfig, device: torch.device) -> float:
    """Seconds of `passes` full-training-set forward+backward passes, nothing else."""
    run = Run(run_path)
    data = run.data()
    model = run.model().to(device)
    x, y = data.x_train.to(device), data.y_train.to(device)
    n = len(x)
    start = time.perf_counter()
    for _ in range(passes):
        model.zero_grad(set_to_none=True)
        with evaluation(model, cfg.bn):
            for i in range(0, n, cfg.chunk):
                loss = F.cross_entropy(
                    model(x[i : i + cfg.chunk]), y[i : i + cfg.chunk], reduction="sum"
                )
                (loss / n).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--space", default="full")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3, help="measurements of each, in turns")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cfg = SharpnessConfig(space=args.space)
    print(f"{args.run}: {args.space} space, {device}, {torch.get_num_threads()} threads")
    ours, floors, rates = [], [], []
    for i in range(args.repeats):
        rates.append(matmul_rate(device))
        result = run_sharpness(args.run, cfg, device=args.device, log=lambda m: None)
        passes = result["evaluations"]
        ours.append(result["seconds"])
        floors.append(bare_passes(args.run, passes, cfg, device))
        print(
            f"[{i + 1}/{args.repeats}] sharpness {ours[-1]:.1f} s (phi {result['phi']:.4g}, "
            f"nit {result['nit']}, nfev {result['nfev']}, {passes} passes); "
            f"bare passes {floors[-1]:.1f} s; ratio {ours[-1] / floors[-1]:.2f}"
        )
    print(f"sharpness: {min(ours):.1f} s (fastest of {args.repeats})")
    print(f"bare passes: {min(floors):.1f} s for {passes} forward+backward passes (fastest)")
    print(f"ratio: {min(ours) / min(floors):.2f} (target <= 1.15)")
    one_pass = partial(bare_passes, args.run, 1, cfg, device)
    work, alone = passes * flops(one_pass), passes * matmul_seconds(one_pass)
    print(floor_line("sharpness", min(ours), work, max(rates), alone))
    print(floor_line("bare passes", min(floors), work, max(rates), alone))


if __name__ == "__main__":
    main()
