"""The whole paper on one device, projected: the six networks timed at their real sizes, and
from those times the wall time of workflow/presets/paper.yaml's jobs (docs/performance.md).

    python benchmarks/gpu_check.py --paper [--scale 1] [--networks F1,F2,C1,C2,C3,C4]
        [--concurrency N] [--sb-epochs 20] [--lb-epochs 40] [--mnist-root DIR] [--out table.md]

Each network trains SB (256) and LB (10%) for `--epochs` epochs with the paper preset's protocol
(5,000 validation examples carved out, ADAM), on real MNIST for F1 where `--mnist-root` holds it
and otherwise on synthetic data of the real shape and size (CIFAR: 50,000 + 10,000 images of
3×32×32; TIMIT: 721,329 + 310,621 frames of 360 inputs, 1,973 classes); `--scale` shrinks every
size alike (CI runs it tiny on CPU). An epoch's seconds are the last epoch's training plus its
evaluation. Then φ (full space and a random 100-dimensional one, ε = 1e-3, `--iters` L-BFGS-B
iterations) and λ_max of the LB run's final iterate; a landscape point costs an evaluation.

Concurrency: `--concurrency` processes (default on CUDA: the CPU cores, at most 16, fewer where
the GPU's memory would not hold them; on CPU: 1) each train one epoch of a network at once, and
the speedup is their throughput over one process's. Snakemake runs jobs side by side the same
way (`--cores N`, `--config gpu=0`): the projection divides each job's seconds by its network's
measured speedup (training jobs by their regime's, φ and landscapes by LB's, which fill the
device most) and sums. The plan is read off Snakemake's dry run of the preset, so it counts the
jobs the workflow would run. Epochs per run are not known before training (the stopping rule
decides): `--sb-epochs` and `--lb-epochs` (F1 on MNIST stopped after 7-21 and 11-18 epochs;
docs/results-f1.md), and the table also gives the bound at the protocol's 100 epochs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from device_log import peak_mib, peak_reset, quiet

from sharpminima.data.dataset import make_synthetic, prepare_mnist
from sharpminima.measures.curvature import EigenConfig, curvature
from sharpminima.measures.sharpness import SharpnessConfig, run_sharpness
from sharpminima.store import Run, measure_iterate
from sharpminima.train.trainer import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "workflow" / "presets" / "paper.yaml"
# network -> training and test examples, input shape, classes: the paper's data sets
REAL = {
    "F1": (60_000, 10_000, (1, 28, 28), 10),
    "F2": (721_329, 310_621, (360,), 1973),
    "C1": (50_000, 10_000, (3, 32, 32), 10),
    "C2": (50_000, 10_000, (3, 32, 32), 10),
    "C3": (50_000, 10_000, (3, 32, 32), 100),
    "C4": (50_000, 10_000, (3, 32, 32), 100),
}
REGIMES = {"SB": 256, "LB": 0.1}
VAL_SIZE = 5000  # the protocol's validation split (training.schema.yaml)
GOAL_HOURS = 2.0


@dataclass
class Timing:
    """One network's seconds (and peak device memory, MiB) per unit of the preset's work."""

    network: str
    source: str
    n_train: int
    epoch: dict[str, float] = field(default_factory=dict)  # regime -> s per epoch
    first_eval: dict[str, float] = field(default_factory=dict)  # regime -> s to evaluate x0
    peak: dict[str, float] = field(default_factory=dict)  # SB, LB, phi
    phi: dict[str, float] = field(default_factory=dict)  # full, random -> s per φ
    lambda_max: float = 0.0
    point: float = 0.0  # s per landscape point (one evaluation of train and test)
    speedup: dict[str, float] = field(default_factory=lambda: {"SB": 1.0, "LB": 1.0})


def dataset(network: str, scale: float, mnist_root: str | None, tmp: Path) -> tuple[Path, str]:
    """The network's data at its real size × scale: real MNIST for F1 where given."""
    n_train, n_test, shape, classes = REAL[network]
    out = tmp / f"{network}.h5"
    if network == "F1" and mnist_root and scale == 1:
        prepare_mnist(mnist_root, out, download=False)
        return out, "MNIST"
    n_train, n_test = max(20, round(n_train * scale)), max(10, round(n_test * scale))
    make_synthetic(out, n_train, n_test, shape, classes, seed=0)
    return out, "synthetic"


def _config(network: str, regime: str, epochs: int, val: int) -> TrainConfig:
    """The preset's protocol, trained exactly `epochs` epochs (patience never runs out)."""
    batch = REGIMES[regime]
    return TrainConfig(network, batch_size=batch, max_epochs=epochs, patience=epochs + 1,
                       val_size=val)  # fmt: skip


def time_network(network: str, data: Path, source: str, args, device: torch.device, tmp: Path):
    """Train SB and LB, then φ (full, random) and λ_max of the LB run's final iterate."""
    val = min(VAL_SIZE, max(2, round(VAL_SIZE * args.scale)))
    t = Timing(network, source, 0)
    for regime in REGIMES:
        out = tmp / f"{network}_{regime}.h5"
        peak_reset(device)
        train(_config(network, regime, args.epochs, val), data, out, device=str(device),
              log=quiet)  # fmt: skip
        history = Run(out).history
        t.epoch[regime] = float(history.seconds.iloc[-1] + history.eval_seconds.iloc[-1])
        t.first_eval[regime] = float(history.eval_seconds.iloc[0])
        t.peak[regime] = peak_mib(device)
        t.n_train = int(Run(out).attrs["n_train"])
    t.point = t.first_eval["LB"]
    lb = tmp / f"{network}_LB.h5"
    peak_reset(device)
    for space in ("full", "random"):
        cfg = SharpnessConfig(iters=args.iters, space=space)
        started = time.perf_counter()
        run_sharpness(lb, cfg, device=str(device), cache_mb=args.cache_mb, log=quiet)
        t.phi[space] = time.perf_counter() - started
    t.peak["phi"] = peak_mib(device)
    cfg = EigenConfig(k=1, tol=1e-3, max_steps=args.lanczos_steps)
    started = time.perf_counter()
    measure_iterate(lb, "final", lambda m, d: curvature(m, d, cfg, log=quiet), cfg,
                    device=str(device), log=quiet)  # fmt: skip
    t.lambda_max = time.perf_counter() - started
    return t, val


def _child_argv(network: str, data: Path, regime: str, val: int, device: str, out: Path, threads):
    return [sys.executable, __file__,
            network, str(data), regime, str(val), device, str(out), str(threads)]  # fmt: skip


def time_child(network: str, data: str, regime: str, val: str, device: str, out: str, threads):
    """One epoch of one regime, in a process of its own (what one Snakemake job is)."""
    torch.set_num_threads(int(threads))
    train(_config(network, regime, 1, int(val)), data, out, device=device, log=quiet)


def speedup(network: str, data: Path, regime: str, val: int, count: int, device, tmp: Path):
    """Throughput of `count` processes training at once over one process's, each one epoch."""
    if count < 2:
        return 1.0
    threads = max(1, (os.cpu_count() or 1) // count)

    def wall(n: int) -> float:
        outs = [tmp / f"conc_{network}_{regime}_{n}_{i}.h5" for i in range(n)]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(_child_argv(network, data, regime, val, str(device), o, threads))
            for o in outs
        ]
        if any(p.wait() for p in procs):
            raise RuntimeError(f"a concurrent {network} {regime} process failed")
        for o in outs:
            o.unlink()
        return time.perf_counter() - started

    return count * wall(1) / wall(count)


def concurrency(args, device: torch.device, peaks: list[float]) -> int:
    """Processes side by side: --concurrency, else on CUDA the cores (at most 16) that the
    GPU's memory holds at the largest peak measured, else 1."""
    if args.concurrency:
        return args.concurrency
    if device.type != "cuda":
        return 1
    total = torch.cuda.get_device_properties(device).total_memory / 2**20
    room = int(0.9 * total // max(max(peaks), 1))
    return max(1, min(os.cpu_count() or 1, 16, room))


def planned_jobs(preset: Path, tmp: Path) -> list[dict[str, str]]:
    """Snakemake's dry run of the preset: each job's rule, wildcards and landscape points."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "-s", str(REPO / "Snakefile"),
         "--directory", str(tmp / "plan"), "--configfile", str(preset)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"dry run of {preset} failed:\n{proc.stdout}{proc.stderr}")
    jobs: list[dict[str, str]] = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            jobs.append({"rule": m[1]})
        elif line.startswith("wildcards:") and jobs:
            jobs[-1].update(kv.split("=", 1) for kv in line[len("wildcards:") :].split(", "))
        elif (m := re.search(r"--points (\d+)", line)) and jobs:
            jobs[-1]["points"] = m[1]
    return jobs


def job_seconds(job: dict[str, str], t: Timing, epochs: dict[str, int]) -> float:
    """A planned job's seconds alone on the device (0 for preparing data, tables, figures:
    seconds each on CPU beside hours of training)."""
    if job["rule"] == "train":
        regime = job["regime"]
        return t.first_eval[regime] + epochs[regime] * t.epoch[regime]
    if job["rule"] == "sharpness":
        return t.phi["full" if job["space"] == "full" else "random"]
    if job["rule"] == "landscape":
        return int(job.get("points", 25)) * t.point
    return 0.0


def project(jobs, timings: dict[str, Timing], epochs: dict[str, int]) -> dict[str, float]:
    """Seconds per rule (alone, summed) and the wall time with each network's speedup."""
    alone: dict[str, float] = {}
    wall, longest = 0.0, 0.0
    for job in jobs:
        t = timings.get(job.get("network", ""))
        if t is None:
            continue
        seconds = job_seconds(job, t, epochs)
        alone[job["rule"]] = alone.get(job["rule"], 0.0) + seconds
        regime = job.get("regime") if job["rule"] == "train" else "LB"
        wall += seconds / t.speedup.get(regime, t.speedup["LB"])
        longest = max(longest, seconds)
    return {**alone, "serial": sum(alone.values()), "wall": max(wall, longest)}


def main(args, device: torch.device, header: str) -> list[str]:
    networks = args.networks.split(",")
    unknown = [n for n in networks if n not in REAL]
    if unknown:
        raise SystemExit(
            f"--networks: unknown {', '.join(unknown)} (choose from {', '.join(REAL)})"
        )
    lines = [
        header,
        "",
        "| network | data | n_train | SB s/epoch | LB s/epoch | peak MiB SB / LB / φ "
        "| s per φ full | s per φ random | s per λ_max | s per landscape point "
        "| speedup SB / LB (processes) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    timings: dict[str, Timing] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        jobs = planned_jobs(PRESET, tmp)
        for network in networks:
            data, source = dataset(network, args.scale, args.mnist_root, tmp)
            t, val = time_network(network, data, source, args, device, tmp)
            count = concurrency(args, device, [t.peak["SB"], t.peak["LB"], t.peak["phi"]])
            t.speedup = {r: speedup(network, data, r, val, count, device, tmp) for r in REGIMES}
            timings[network] = t
            data.unlink()
            peaks = " / ".join(
                "—" if t.peak[k] != t.peak[k] else f"{t.peak[k]:,.0f}" for k in ("SB", "LB", "phi")
            )
            lines.append(
                f"| {network} | {source} | {t.n_train:,} | {t.epoch['SB']:.2f} | "
                f"{t.epoch['LB']:.2f} | {peaks} | {t.phi['full']:.2f} | {t.phi['random']:.2f} | "
                f"{t.lambda_max:.2f} | {t.point:.2f} | {t.speedup['SB']:.2f} / "
                f"{t.speedup['LB']:.2f} ({count}) |"
            )
            print(lines[-1], flush=True)
    projection = projection_lines(jobs, timings, args)
    print("\n" + "\n".join(projection), flush=True)
    return [*lines, "", *projection]


def projection_lines(jobs, timings: dict[str, Timing], args) -> list[str]:
    """The projected hours of the preset's jobs, at the assumed epochs and at 100."""
    counted = [j for j in jobs if j.get("network") in timings]
    rules = sorted({j["rule"] for j in counted})
    per_rule = ", ".join(f"{r} {sum(j['rule'] == r for j in counted)}" for r in rules)
    lines = [
        f"Projection for {PRESET.relative_to(REPO)} ({len(jobs)} jobs planned; timed networks "
        f"{', '.join(timings)}: {per_rule}):",
        "",
        "| epochs per run (SB, LB) | train h alone | φ h alone | landscape h alone "
        "| all jobs h alone | wall h with concurrency | goal ≤ 2 h |",
        "|---|---|---|---|---|---|---|",
    ]
    for sb, lb in ((args.sb_epochs, args.lb_epochs), (100, 100)):
        p = project(counted, timings, {"SB": sb, "LB": lb})
        hours = {k: v / 3600 for k, v in p.items()}
        met = "met" if hours["wall"] <= GOAL_HOURS else "over"
        lines.append(
            f"| {sb}, {lb} | {hours.get('train', 0):.3f} | {hours.get('sharpness', 0):.3f} | "
            f"{hours.get('landscape', 0):.3f} | {hours['serial']:.3f} | {hours['wall']:.3f} | "
            f"{met} |"
        )
    return lines


if __name__ == "__main__":  # a child of `speedup` (run it through gpu_check.py --paper)
    time_child(*sys.argv[1:])
