"""Shared fixtures: small synthetic datasets and a helper to run the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sharpminima.data import make_synthetic
from sharpminima.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SMOKE = REPO / "workflow" / "presets" / "smoke.yaml"


def cli(*args: object, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run `sharpminima ARGS` in a fresh interpreter; return the finished process."""
    proc = subprocess.run(
        [sys.executable, "-m", "sharpminima", *map(str, args)],
        capture_output=True,
        text=True,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"sharpminima {args} failed:\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Bad input: non-zero exit, exactly one line on stderr naming the problem, no traceback."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="session")
def mnist_like(tmp_path_factory) -> Path:
    """600/200 examples shaped like MNIST (1×28×28, 10 classes)."""
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    make_synthetic(path, 600, 200, (1, 28, 28), 10, seed=0)
    return path


@pytest.fixture(scope="session")
def trials(tmp_path_factory, mnist_like):
    """SB and LB runs of trials 0 and 1; SB of trial 1 stops an epoch earlier."""
    folder = tmp_path_factory.mktemp("trials")
    runs = {"SB": [], "LB": []}
    for seed in (0, 1):
        for regime, batch in (("SB", 32), ("LB", 0.1)):
            epochs = 2 if (regime, seed) == ("SB", 1) else 3
            cfg = TrainConfig(
                "F1", batch_size=batch, seed=seed, max_epochs=epochs, stop="fixed", eval_chunk=200
            )
            out = folder / f"{regime}{seed}.h5"
            runs[regime].append(train(cfg, mnist_like, out, label=regime, log=lambda m: None))
    return runs


def snakemake(
    workdir: Path, *args: object, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run this workflow in `workdir` on 2 cores; return the finished process."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "--directory", workdir]
        + ["--cores", "2", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout + proc.stderr)
    return proc


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A finished local run of the smoke preset, shared by the tests that inspect or rerun it.

    Its jobs run with PYTHONPROFILEIMPORTTIME, so each job's log lists every module it imported
    (test_workflow checks them against the job's code inputs)."""
    workdir = tmp_path_factory.mktemp("smoke")
    snakemake(workdir, "--configfile", SMOKE, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    return workdir
