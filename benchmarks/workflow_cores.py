"""`--cores` above the machine's CPUs costs nothing: a reduced F1 study run twice, side by side.

The same study (F1, SB and LB, 2 trials, a fixed number of epochs, φ in the full space at one ε,
the parametric plots and tables) runs from nothing with `--cores` = the CPUs this process may use
and with 4× that, each in a fresh folder; the two wall times and their ratio are printed. Before
the Snakefile lowered `--cores` to the CPUs (docs/workflow.md), the second ran 4 jobs of 2
threads each on 2 cores, PyTorch's threads fighting over them. Goal: ratio ≤ 1.1.

    python benchmarks/workflow_cores.py --data-root ../shared/data [--epochs 2] [--trials 2]

Without MNIST under --data-root it runs on a synthetic set shaped like it (the ratio is what
counts; say which in what you report).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from sharpminima.cpus import usable_cpus
from sharpminima.runtime import device_name

REPO = Path(__file__).resolve().parents[1]


def study(data_root: Path, epochs: int, trials: int, n_train: int) -> dict:
    """The reduced F1 study: real MNIST when data_root has it, else a synthetic stand-in."""
    if (data_root / "MNIST" / "raw").is_dir():
        dataset = {"source": "mnist"}
    else:
        dataset = {"source": "synthetic", "n_train": n_train, "n_test": n_train // 6,
                   "input_shape": [1, 28, 28], "classes": 10, "seed": 0}  # fmt: skip
    return {
        "study": "cores",
        "data_root": str(data_root.resolve()),
        "datasets": {"digits": dataset},
        "networks": {"F1": {"dataset": "digits"}},
        "regimes": {"SB": 256, "LB": 0.1},
        "trials": trials,
        "training": {"max_epochs": epochs, "stop": "fixed"},
        "sharpness": {"eps": [0.001], "spaces": ["full"], "iters": 3},
        "landscape": {"points": 5},
    }


def run(config: dict, cores: int, folder: Path) -> float:
    """Seconds the study takes from nothing with `--cores cores`."""
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_text(yaml.safe_dump(config))
    args = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory"]
    args += [str(folder), "--cores", str(cores), "--configfile", str(folder / "study.yaml")]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"snakemake --cores {cores} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--epochs", type=int, default=2, help="epochs of every run (2)")
    p.add_argument("--trials", type=int, default=2, help="trials (2)")
    p.add_argument("--n-train", type=int, default=6000, help="synthetic only: examples (6000)")
    p.add_argument("--factor", type=int, default=4, help="the oversubscribed --cores: × CPUs (4)")
    args = p.parse_args()

    cpus = usable_cpus()
    config = study(args.data_root, args.epochs, args.trials, args.n_train)
    source = config["datasets"]["digits"]["source"]
    print(f"{device_name(torch.device('cpu'))}, {cpus} usable CPUs; F1 on {source}, "
          f"{args.trials} trials x SB/LB, {args.epochs} epochs, phi full 1e-3")  # fmt: skip
    # The oversubscribed line first: any cost of a cold start (page cache, imports) is its own.
    with tempfile.TemporaryDirectory() as tmp:
        over = run(config, args.factor * cpus, Path(tmp) / "over")
        fit = run(config, cpus, Path(tmp) / "fit")
    print(f"--cores {cpus}: {fit:.1f} s")
    print(f"--cores {args.factor * cpus}: {over:.1f} s")
    print(f"ratio: {over / fit:.3f} (goal <= 1.1: {'met' if over / fit <= 1.1 else 'over'})")


if __name__ == "__main__":
    main()
