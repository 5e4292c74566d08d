"""What the GPU benchmarks share (gpu_check.py and paper_projection.py both import it, neither
imports the other): peak device memory between two points, and a log that says nothing."""

from __future__ import annotations

import torch


def quiet(_: str) -> None:
    pass


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """Peak device memory in MiB since the last reset (NaN on CPU: not tracked there)."""
    if device.type != "cuda":
        return float("nan")
    return torch.cuda.max_memory_allocated(device) / 2**20
