"""GPU check: train F1 and C1, compute one φ and one λ_max, kill and resume one run; one table.

Run wherever a GPU is at hand (docs/performance.md holds the tables measured so far); CI runs
it on CPU with tiny sizes (tests/test_benchmarks.py).

    python benchmarks/gpu_check.py [--device auto|cuda|cpu] [--n-train 20000] [--epochs 3]
                                   [--iters 10] [--mnist-root DIR] [--out table.md]
    python benchmarks/gpu_check.py --paper [--epochs 2] ...   # the six networks at real size,
                                   # and the whole paper's projected time (paper_projection.py)

Each network trains SB (batch 256) and LB (10% of the training set) for `--epochs` epochs on
synthetic data of its input shape (F1 on real MNIST when `--mnist-root` holds MNIST/raw);
samples/s leave out the first epoch (kernel selection, allocator warm-up) when there are
several. φ is Metric 2.1 of the LB run's final iterate (full space, ε = 1e-3, `--iters`
L-BFGS-B iterations, BatchNorm batch statistics); λ_max is the largest Hessian eigenvalue of
the same iterate (Lanczos, k = 1, tolerance 1e-3, at most `--lanczos-steps` steps). The resume
check runs in child processes with the library's defaults (on CUDA: deterministic kernels,
`runtime.pick_device`): one uninterrupted SB run, and one SIGKILLed as soon as its first epoch
is kept, then rerun; every stored iterate and every loss and accuracy of the two must be
bitwise equal. C1's resume runs have augmentation on, so that the device-side random stream is
restored too.
"""

from __future__ import annotations

import argparse
import math
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from device_log import peak_mib, peak_reset, quiet

from sharpminima.data.dataset import make_synthetic, prepare_mnist
from sharpminima.measures.curvature import EigenConfig, curvature
from sharpminima.measures.sharpness import SharpnessConfig, run_sharpness
from sharpminima.runtime import device_name, pick_device
from sharpminima.store import Run, measure_iterate
from sharpminima.train.trainer import TrainConfig, train

SHAPES = {"F1": (1, 28, 28), "C1": (3, 32, 32)}
REGIMES = {"SB": 256, "LB": 0.1}
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def _mib(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"


def dataset(network: str, n_train: int, n_test: int, mnist_root: str | None, tmp: Path) -> Path:
    """F1's data: real MNIST when given, else synthetic data of the network's input shape."""
    out = tmp / f"{network}.h5"
    if network == "F1" and mnist_root:
        prepare_mnist(mnist_root, out, download=False)
    else:
        make_synthetic(out, n_train, n_test, SHAPES[network], 10, seed=0)
    return out


def train_and_phi(
    network: str, data: Path, epochs: int, iters: int, steps: int, device: torch.device, tmp: Path
):
    """One row per regime (samples/s, peak memory), and φ and λ_max of the LB run."""
    rows = []
    for regime, batch in REGIMES.items():
        out = tmp / f"{network}_{regime}.h5"
        peak_reset(device)
        cfg = TrainConfig(network, batch_size=batch, stop="fixed", max_epochs=epochs)
        train(cfg, data, out, device=str(device), log=quiet)
        run = Run(out)
        timed = run.history["seconds"].iloc[2 if epochs > 1 else 1 :]  # row 0 is x₀
        rate = run.attrs["n_train"] * len(timed) / timed.sum()
        rows.append((regime, run.attrs["batch_size"], rate, _mib(peak_mib(device)), out))
    peak_reset(device)
    started = time.perf_counter()
    phi = run_sharpness(rows[-1][-1], SharpnessConfig(iters=iters), device=str(device), log=quiet)
    seconds = time.perf_counter() - started
    phi_peak = _mib(peak_mib(device))
    started = time.perf_counter()
    cfg = EigenConfig(k=1, tol=1e-3, max_steps=steps)
    eig = measure_iterate(rows[-1][-1], "final", lambda m, d: curvature(m, d, cfg, log=quiet),
                          cfg, device=str(device), log=quiet)  # fmt: skip
    return rows, phi, seconds, phi_peak, eig, time.perf_counter() - started


def _child(network: str, data: str, epochs: int, out: str, device: str) -> list[str]:
    return [sys.executable, __file__, "--child", network, data, str(epochs), out, device]


def resume_check(network: str, data: Path, epochs: int, device: torch.device, tmp: Path) -> str:
    """'yes' when a run SIGKILLed after its first kept epoch, then rerun, equals a whole run."""
    ref, cut = tmp / f"{network}_ref.h5", tmp / f"{network}_cut.h5"
    subprocess.run(_child(network, str(data), epochs, str(ref), str(device)), check=True)
    proc = subprocess.Popen(_child(network, str(data), epochs, str(cut), str(device)))
    first = cut.with_name(cut.name + ".partial") / "epoch_00001.pt"
    while not first.exists() and proc.poll() is None:
        time.sleep(0.01)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(_child(network, str(data), epochs, str(cut), str(device)), check=True)
    a, b = Run(ref), Run(cut)
    pairs = ((a.state(g), b.state(g)) for g in ["init", "final", *range(1, epochs + 1)])
    same = all(torch.equal(x[k], y[k]) for x, y in pairs for k in x) and all(
        a.history[m].equals(b.history[m]) for m in METRICS
    )
    return ("yes" if same else "NO") + ("" if killed else " (finished before the kill)")


def child(network: str, data: str, epochs: int, out: str, device: str) -> None:
    """One SB run (C1 with augmentation), resumed from `out`.partial if there."""
    cfg = TrainConfig(
        network, batch_size=REGIMES["SB"], stop="fixed", max_epochs=epochs, augment=network == "C1"
    )
    train(cfg, data, out, device=device, log=quiet)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    p.add_argument("--n-train", type=int, default=20000, help="synthetic training examples")
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--iters", type=int, default=10, help="L-BFGS-B iterations of φ")
    p.add_argument("--lanczos-steps", type=int, default=30, help="Lanczos steps of λ_max at most")
    p.add_argument("--mnist-root", help="folder holding MNIST/raw: F1 trains on real MNIST")
    p.add_argument("--out", help="also write the table (Markdown) here")
    paper = p.add_argument_group("the whole paper, projected (--paper; paper_projection.py)")
    paper.add_argument("--paper", action="store_true", help="time the six networks at real size")
    paper.add_argument("--networks", default="F1,F2,C1,C2,C3,C4", help="networks to time")
    paper.add_argument("--scale", type=float, default=1.0, help="data sizes × this (CI: tiny)")
    paper.add_argument("--concurrency", type=int, default=0, help="processes at once (0: auto)")
    paper.add_argument("--sb-epochs", type=int, default=20, help="epochs per SB run assumed")
    paper.add_argument("--lb-epochs", type=int, default=40, help="epochs per LB run assumed")
    paper.add_argument("--cache-mb", type=float, default=8192, help="memory for A (paper.yaml's)")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        network, data, epochs, out, device = args.child
        child(network, data, int(epochs), out, device)
        return
    device = pick_device(args.device)
    header = (
        f"device: {device_name(device)}; torch {torch.__version__}; {args.epochs} epochs; "
        f"{torch.get_num_threads()} CPU threads"
    )
    if args.paper:
        from paper_projection import main as project

        lines = project(args, device, header)
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")
        return
    lines = [
        header,
        "",
        "| network | data | regime | batch | samples/s | peak MiB | φ (LB) | s per φ "
        "| φ peak MiB | λ_max (LB) | s per λ_max | resume bit-identical |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for network in SHAPES:
            data = dataset(network, args.n_train, args.n_test, args.mnist_root, tmp)
            rows, phi, seconds, phi_peak, eig, eig_seconds = train_and_phi(
                network, data, args.epochs, args.iters, args.lanczos_steps, device, tmp
            )
            resumed = resume_check(network, data, args.epochs, device, tmp)
            source = "MNIST" if network == "F1" and args.mnist_root else "synthetic"
            for regime, batch, rate, peak, _ in rows:
                last = regime == "LB"
                lines.append(
                    f"| {network} | {source} | {regime} | {batch} | {rate:,.0f} | {peak} | "
                    + (
                        f"{phi['phi']:.4g} (nit {phi['nit']}, nfev {phi['nfev']}) | "
                        f"{seconds:.2f} | {phi_peak} | "
                        f"{eig['lambda_max']:.4g} ({eig['steps']} steps"
                        f"{'' if eig['converged'] else ', not converged'}) | {eig_seconds:.2f} | "
                        if last
                        else "| | | | | "
                    )
                    + (resumed if regime == "SB" else "")
                    + " |"
                )
                print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
