"""Shared fixtures: small synthetic datasets and a helper to run the CLI as a user would."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from torch import nn

from sharpminima.data.dataset import make_synthetic
from sharpminima.train.trainer import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SMOKE = REPO / "workflow" / "presets" / "smoke.yaml"


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The declared-dependency check first: an undeclared import is named in the first minute,
    not after the smoke study (the sort is stable, so the rest keep their order)."""
    items.sort(key=lambda item: item.module.__name__ != "tests.test_dependencies")


def _in_process(argv: list[str]) -> subprocess.CompletedProcess:
    """`sharpminima.cli.main(argv)` with stdout, stderr and the exit status a process would
    have: every warning shown on stderr (as a fresh interpreter shows each once), and PyTorch's
    thread count (which --threads sets) put back."""
    from sharpminima.cli import main

    out, err, threads = io.StringIO(), io.StringIO(), torch.get_num_threads()
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: --help, bad arguments
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        finally:
            torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["sharpminima", *argv], code, out.getvalue(), err.getvalue())


def cli(*args: object, check: bool = True, process: bool = False) -> subprocess.CompletedProcess:
    """Run `sharpminima ARGS` as a user would and return how it ended.

    In this interpreter by default: starting a fresh one (and importing PyTorch there) is most of
    a small command's time, and the command's code is the same. `process=True` runs the
    installed `sharpminima` in a fresh interpreter, for what only a process shows.
    """
    argv = [str(a) for a in args]
    if process:
        proc = subprocess.run(["sharpminima", *argv], capture_output=True, text=True)
    else:
        proc = _in_process(argv)
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


def small_network(bn: str, deep: bool, n: int = 64) -> tuple[nn.Module, tuple]:
    """A small network after 300 Adam steps on `n` random examples of 3 classes: a trained
    network's curvature (a few large Hessian eigenvalues over a bulk near 0) at a size whose
    Hessian can be formed exactly, for the measures' error-bar checks."""
    torch.manual_seed(0)
    x, y = torch.randn(n, 6, dtype=torch.float64), torch.randint(0, 3, (n,))
    if deep:
        layers = [nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)]
    else:
        layers = [nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)]
    return trained(layers, x, y)


def trained(layers: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> tuple[nn.Module, tuple]:
    """`layers` as a float64 network after 300 full-batch Adam steps on (x, y), and (x, y)."""
    model = nn.Sequential(*layers).double()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, (x, y)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for tests of tiny tensors: a second thread only waits, and beside
    another job the wait made them 10× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# What a checkout holds that a dry run reads: a copy of it is "the repository root".
CHECKOUT = ("Snakefile", "config.yaml", "workflow", "src/sharpminima", "envs")


@pytest.fixture(scope="session")
def repo_root(tmp_path_factory) -> Path:
    """A copy of the repository's workflow files, where `snakemake` runs as a user runs it: from
    the root, beside config.yaml (a `--directory` elsewhere would hide config.yaml from it)."""
    root = tmp_path_factory.mktemp("checkout")
    for name in CHECKOUT:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(REPO / name, root / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, root / name)
    return root


@pytest.fixture(scope="session")
def dry_run(repo_root):
    """`snakemake -n ARGS` from the repository root, each distinct line run once a session."""
    done: dict[tuple[str, ...], subprocess.CompletedProcess] = {}

    def run(*args: object) -> subprocess.CompletedProcess:
        key = tuple(map(str, args))
        if key not in done:
            done[key] = subprocess.run(
                [sys.executable, "-m", "snakemake", "-n", "--cores", "2", *key],
                cwd=repo_root,
                capture_output=True,
                text=True,
            )
        return done[key]

    return run


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A finished local run of the smoke preset, shared by the tests that inspect or rerun it.

    Its jobs run with PYTHONPROFILEIMPORTTIME, so each job's log lists every module it imported
    (test_workflow checks them against the job's code inputs)."""
    workdir = tmp_path_factory.mktemp("smoke")
    snakemake(workdir, "--configfile", SMOKE, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    return workdir
