"""Frame-level speech features as Kaldi shapes them: per-speaker CMVN, then splicing.

Both TIMIT front ends (Kaldi directories, and the raw corpus) use these, so the two give the
network the same kind of input: 2k+1 consecutive frames side by side (k = 4 and 40-dim
features: F2's 360 inputs).
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError

CMVN = ("none", "mean", "meanvar")


def check_options(context: int, cmvn: str) -> None:
    """Both front ends' splice and CMVN options, refused in one line before any work."""
    if cmvn not in CMVN:
        raise UserError(f"unknown --cmvn {cmvn!r}: choose one of {', '.join(CMVN)}")
    if context < 0:
        raise UserError(f"--context must be 0 or more frames, got {context}")


def splice(feats: np.ndarray, context: int) -> np.ndarray:
    """Frames t-k..t+k side by side for every t, edge frames repeated (Kaldi's splice-feats).

    (T, d) → (T, (2k+1)·d), oldest frame first.
    """
    t = len(feats)
    index = np.clip(np.arange(t)[:, None] + np.arange(-context, context + 1), 0, t - 1)
    return feats[index].reshape(t, -1)


def cmvn_stats(feats: np.ndarray) -> np.ndarray:
    """Kaldi's CMVN statistics of frames: [[Σx, n], [Σx², 0]], float64, (2, d+1)."""
    x = np.asarray(feats, dtype=np.float64)
    stats = np.zeros((2, x.shape[1] + 1))
    stats[0, :-1], stats[0, -1] = x.sum(0), len(x)
    stats[1, :-1] = (x * x).sum(0)
    return stats


def apply_cmvn(feats: np.ndarray, stats: np.ndarray, mode: str) -> np.ndarray:
    """Normalize with speaker statistics as Kaldi's apply-cmvn does (`mode`: mean subtracts the
    mean, its default; meanvar also divides by the standard deviation)."""
    if mode == "none":
        return feats
    count = stats[0, -1]
    if stats.shape != (2, feats.shape[1] + 1) or count < 1:
        raise ValueError(
            f"CMVN statistics of shape {stats.shape} and count {count:g} do not fit "
            f"{feats.shape[1]}-dim features"
        )
    mean = stats[0, :-1] / count
    out = feats - mean
    if mode == "meanvar":
        var = np.maximum(stats[1, :-1] / count - mean**2, 1e-20)  # Kaldi floors the same way
        out = out / np.sqrt(var)
    return out.astype(np.float32)
