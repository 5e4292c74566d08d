"""Memory and speed of `sharpminima prepare timit-kaldi` on a synthetic corpus of TIMIT's shape.

Writes Kaldi data directories (40-dim compressed features, utterances of 150-450 frames,
8 per speaker, per-speaker CMVN statistics, binary pdf alignments over 1973 pdfs), converts them
with --cmvn mean and ±4 splicing (360 inputs, F2's), and prints side by side: the output's size,
the conversion's peak memory (max RSS of its process), the RSS of a process that only imports
what the conversion imports (its floor), and frames per second.

    python benchmarks/timit_kaldi.py [--frames 1000000] [--dir /tmp/timit-bench]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np

from sharpminima.data.frames import cmvn_stats


def write_corpus(folder: Path, frames: int, seed: int) -> int:
    """A Kaldi data directory of about `frames` frames; returns the exact count."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total, n = 0, 0
    with (
        kaldiio.WriteHelper(
            f"ark,scp:{folder}/feats.ark,{folder}/feats.scp", compression_method=2
        ) as feats,
        kaldiio.WriteHelper(f"ark:{folder}/pdf.ark") as ali,
        kaldiio.WriteHelper(f"ark,scp:{folder}/cmvn.ark,{folder}/cmvn.scp") as cmvn,
        open(folder / "utt2spk", "w") as utt2spk,
    ):
        while total < frames:
            speaker = f"spk{n // 8:04d}"
            utts = []
            for i in range(8):
                t = int(rng.integers(150, 450))
                x = (rng.standard_normal((t, 40)) * 2 + 3).astype(np.float32)
                utt = f"{speaker}_u{i}"
                feats(utt, x)
                ali(utt, rng.integers(0, 1973, t).astype(np.int32))
                utt2spk.write(f"{utt} {speaker}\n")
                utts.append(x)
                total += t
            cmvn(speaker, cmvn_stats(np.concatenate(utts)))
            n += 8
    return total


def max_rss_mb(code: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and seconds of a child process."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(code, check=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after <= before:
        raise RuntimeError("a child's peak RSS hides behind an earlier, larger one: run alone")
    return after / 1024, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1_000_000, help="training frames (test: 1/10)")
    p.add_argument("--dir", default="/tmp/timit-bench", help="scratch folder")
    args = p.parse_args()
    root = Path(args.dir)
    base = root / "timit-kaldi"
    n_train = write_corpus(base / "train", args.frames, 0)
    n_test = write_corpus(base / "test", args.frames // 10, 1)
    out = root / "timit.h5"
    # The floor first: RUSAGE_CHILDREN keeps the largest child's peak, and it is the smaller.
    floor, _ = max_rss_mb([sys.executable, "-c", "import sharpminima.cli, sharpminima.data.kaldi"])
    cmd = [sys.executable, "-m", "sharpminima", "prepare", "timit-kaldi", "--root", str(root)]
    peak, seconds = max_rss_mb(cmd + ["--out", str(out), "--cmvn", "mean"])
    size = out.stat().st_size / 2**20
    frames = n_train + n_test
    print(f"frames            {frames:,} ({n_train:,} train, {n_test:,} test), 360 inputs each")
    print(f"output            {size:,.0f} MB")
    print(f"peak RSS          {peak:,.0f} MB ({peak / size:.2f} of the output)")
    print(f"import-only RSS   {floor:,.0f} MB (so the conversion adds {peak - floor:,.0f} MB)")
    print(f"time              {seconds:.1f} s, {frames / seconds:,.0f} frames/s")


if __name__ == "__main__":
    main()
