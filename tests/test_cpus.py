"""No more threads than CPUs, whatever `--cores` or `--threads` say (docs/workflow.md): the
count of usable CPUs, the Snakefile's lowered core budget, and each job's cap."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import pytest

from sharpminima.cpus import quota_cpus, usable_cpus

from .conftest import REPO, cli

ONE_CPU = sorted(os.sched_getaffinity(0))[:1]


@pytest.mark.parametrize(
    "text, cpus",
    [("200000 100000\n", 2), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None),
     ("", None), ("garbage", None)],
)  # fmt: skip
def test_a_cgroup_quota_is_read_as_cpus_rounded_up(tmp_path, text, cpus):
    (tmp_path / "cpu.max").write_text(text)
    assert quota_cpus(tmp_path / "cpu.max") == cpus
    assert quota_cpus(tmp_path / "absent") is None
    assert usable_cpus(tmp_path / "cpu.max") == min(cpus or 1000, len(os.sched_getaffinity(0)))


def _held_to_one_cpu() -> None:
    os.sched_setaffinity(0, ONE_CPU)


def test_the_affinity_mask_is_the_limit():
    code = "from sharpminima.cpus import usable_cpus; print(usable_cpus())"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=_held_to_one_cpu
    )
    assert proc.stdout.strip() == "1", proc.stderr


def test_cores_above_the_cpus_plan_no_job_wider_than_the_mask(tmp_path):
    """`--cores 8` held to one CPU: Snakemake's budget is lowered to 1, and with it every job's
    threads (config.yaml's training and sharpness jobs ask for 2)."""
    args = [sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "-n", "--cores", "8"]
    args += ["--directory", tmp_path, "--configfile", REPO / "config.yaml"]
    held = subprocess.run(args, capture_output=True, text=True, preexec_fn=_held_to_one_cpu)
    assert held.returncode == 0, held.stderr
    assert "--cores 8: this run may use 1 CPUs" in held.stderr
    assert "threads: 2" not in held.stdout
    free = subprocess.run(args, capture_output=True, text=True)  # unchanged without a mask
    assert ("threads: 2" in free.stdout) == (len(os.sched_getaffinity(0)) >= 2)


def test_a_job_never_runs_more_threads_than_its_cpus(tmp_path, mnist_like):
    """`--threads 8` in a process held to one CPU trains on one thread, and records it."""
    out = tmp_path / "run.h5"
    train = ["train", "--data", mnist_like, "--out", out, "--network", "F1", "--stop", "fixed"]
    train += ["--max-epochs", "1", "--eval-chunk", "200", "--threads", "8"]
    mask = os.sched_getaffinity(0)
    try:
        _held_to_one_cpu()
        cli(*train)
    finally:
        os.sched_setaffinity(0, mask)
    with h5py.File(out, "r") as f:
        assert f.attrs["threads"] == 1
