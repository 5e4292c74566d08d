"""What every stage needs to run a network: the device, evaluation in chunks, provenance.

Kept apart from the trainer so that a measurement (sharpness, landscape, directions) runs, and
reruns, without the training loop: an edit to `Trainer` must not invalidate a single φ.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .errors import UserError
from .models import evaluation


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of `size`; a trailing single example joins the previous slice
    (BatchNorm cannot normalize a batch of one)."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        yield slice(start, starts[i + 1] if i + 1 < len(starts) else n)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int, bn: str):
    """Mean cross-entropy and accuracy (%) over all of (x, y), in chunks of `chunk`."""
    loss, correct = 0.0, 0
    with evaluation(model, bn):
        for s in chunks(len(x), chunk):
            out = model(x[s])
            loss += F.cross_entropy(out, y[s], reduction="sum").item()
            correct += (out.argmax(1) == y[s]).sum().item()
    return loss / len(x), 100.0 * correct / len(x)


def pick_device(name: str = "auto") -> torch.device:
    """The device to run on; on CUDA, deterministic kernels, so that a rerun is exact.

    Measured on an H200 (docs/performance.md): with PyTorch's default kernels the same C1 run
    trained twice ended at different weights and φ of one iterate moved by 6% between two
    calls; with deterministic kernels both repeat bitwise, for 3-19% of training speed.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but no CUDA GPU is visible: use --device cpu")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read at each cuBLAS call
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, where none
        torch.backends.cudnn.benchmark = False
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """A human-readable device, e.g. 'cuda:NVIDIA H100' or 'cpu:AMD EPYC 9B14 (x86_64)'."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip() + " "
                break
    return f"cpu:{model}({platform.machine()})"


def versions() -> dict[str, str]:
    return {
        "sharpminima": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
    }
