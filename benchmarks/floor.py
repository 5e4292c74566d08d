"""The machine's floor for a piece of work: its FLOPs over the fp32 matmul rate measured now.

Every benchmark prints its time beside this floor, so "1.04x our own bare passes" cannot hide
passes that are themselves far from what the hardware does. FLOPs are counted by PyTorch's
`FlopCounterMode` (matmuls and convolutions, forward and backward, 2 per multiply-add); the
rate is the best of a few square fp32 matmuls, measured in the same run on the same threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_rate(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an fp32 (size × size) @ (size × size) product, the best of `repeats`."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first one warms up
        start = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def flops(work: Callable[[], object]) -> int:
    """FLOPs of one call of `work` (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops()


def floor_line(what: str, seconds: float, total_flops: float, rate: float) -> str:
    """'what: 12.3 s; floor 1.6 s (2.1 TFLOP at 1.3 TFLOP/s); 7.7x the floor'."""
    floor = total_flops / rate
    return (
        f"{what}: {seconds:.2f} s; floor {floor:.2f} s ({total_flops / 1e12:.3g} TFLOP at "
        f"{rate / 1e12:.3g} TFLOP/s fp32 matmul); {seconds / floor:.1f}x the floor"
    )
