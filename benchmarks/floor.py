"""The machine's floor for a piece of work: its FLOPs over the fp32 matmul rate measured now.

Every benchmark prints its time beside this floor, so "1.04x our own bare passes" cannot hide
passes that are themselves far from what the hardware does. FLOPs are counted by PyTorch's
`FlopCounterMode` (matmuls and convolutions, forward and backward, 2 per multiply-add); the
rate is the best of a few square fp32 matmuls, measured in the same run on the same threads.

The work's own matmuls rarely reach that rate: a 5,000 × 512 by 512 × 512 product is not a
2048-square one. `matmul_seconds` replays just the matmuls and convolutions of the work, same
shapes and strides, on random tensors, so a benchmark can say how much of its time over the floor
is the matrix library on these shapes and how much is everything else (elementwise passes,
BatchNorm, the solver).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.flop_counter import FlopCounterMode, flop_registry


def best_seconds(work: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` calls of `work`, after one to warm up (allocator, kernel choice).
    Each call is waited for on CUDA, the warm-up too, so no timed call includes queued work."""
    best = math.inf
    for i in range(repeats + 1):
        start = time.perf_counter()
        work()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an fp32 (size × size) @ (size × size) product, the best of `repeats`."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    return 2 * size**3 / best_seconds(lambda: a @ b, repeats)


def flops(work: Callable[[], object]) -> int:
    """FLOPs of one call of `work` (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops()


@dataclass(frozen=True)
class _Like:
    """What a replayed matmul needs of an argument tensor: its layout, not its values (a
    dataclass, not a tuple, so pytree leaves it whole)."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, t: torch.Tensor) -> _Like:
        return cls(tuple(t.shape), tuple(t.stride()), t.dtype, t.device)

    def make(self) -> torch.Tensor:
        # Through a flat buffer, so expanded (stride-0) arguments such as addmm's bias work.
        span = sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        size = span + 1 if all(self.shape) else 0
        flat = torch.randn(size, device=self.device).to(self.dtype)
        return flat.as_strided(self.shape, self.stride)


class _Recorder(TorchDispatchMode):
    """Notes every op FlopCounterMode counts (matmuls, convolutions) with its arguments' layout."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, Any]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._overloadpacket in flop_registry:
            self.calls.append((func, tree_map_only(torch.Tensor, _Like.of, (args, kwargs))))
        return func(*args, **kwargs)


def recorded_matmuls(work: Callable[[], object]) -> Iterator[Callable[[], object]]:
    """One call of `work`'s matmuls and convolutions, each ready to run again alone on random
    tensors of the recorded layout. Made one at a time: a whole pass's arguments at once could
    take gigabytes."""
    recorder = _Recorder()
    with recorder:
        work()
    for func, layout in recorder.calls:
        args, kwargs = tree_map_only(_Like, _Like.make, layout)
        yield partial(func, *args, **kwargs)


def matmul_seconds(work: Callable[[], object], repeats: int = 3) -> float:
    """Seconds the matmuls and convolutions of one call of `work` take alone: each replayed,
    the best of `repeats`, summed."""
    return sum(best_seconds(call, repeats) for call in recorded_matmuls(work))


def floor_line(
    what: str, seconds: float, total_flops: float, rate: float, matmuls: float | None = None
) -> str:
    """'what: 12.3 s; floor 1.6 s (2.1 TFLOP at 1.3 TFLOP/s); 7.7x the floor', and with
    `matmuls` (the seconds of the work's matmuls alone) '; its matmuls alone 2.0 s (1.3x the
    floor), so 6.2x them'."""
    floor = total_flops / rate
    line = (
        f"{what}: {seconds:.2f} s; floor {floor:.2f} s ({total_flops / 1e12:.3g} TFLOP at "
        f"{rate / 1e12:.3g} TFLOP/s fp32 matmul); {seconds / floor:.1f}x the floor"
    )
    if matmuls is not None:
        line += (
            f"; its matmuls alone {matmuls:.2f} s ({matmuls / floor:.2f}x the floor), "
            f"so {seconds / matmuls:.2f}x them"
        )
    return line
