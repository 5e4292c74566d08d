"""The fault matrix (docs/reliability.md): hostile arguments, damaged files, read-only and full
disks. Each case asserts the exit status, the one-line message, no traceback, nothing written
where a finished output belongs and, after a fault mid-work, a bit-identical result on resume.
The Kaldi cases are in test_faults_kaldi.py."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sharpminima.atomic import json_text, restore_non_finite
from sharpminima.data.dataset import _attrs_sha256, load_dataset, make_synthetic
from sharpminima.errors import UserError
from sharpminima.measures.landscape import read_landscape
from sharpminima.measures.sharpness import SharpnessConfig
from sharpminima.measures.trajectory import trajectory
from sharpminima.store import Run
from sharpminima.store import _attrs_digest as _run_attrs_digest
from sharpminima.train.trainer import TrainConfig, train

from .conftest import REPO, SHARED_DATA, SMOKE, assert_one_line_error, cli, snakemake
from .test_trajectory import CFG, quiet

TRAIN = ["--network", "F1", "--stop", "fixed", "--max-epochs", "2", "--eval-chunk", "200"]
TRAIN += ["--batch-size", "64", "--threads", "1"]


def assert_ends_in_one_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    """A failure after progress lines: exit 2, no traceback, and one error line, the last."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [line for line in lines if ": error: " in line] == lines[-1:], proc.stderr
    for word in words:
        assert word in lines[-1], lines[-1]


def assert_same_states(a: Path, b: Path, groups) -> None:
    """The stored states `groups` of two run files are bitwise equal (each read once)."""
    ra, rb = Run(a), Run(b)
    for group in groups:
        x, y = ra.state(group), rb.state(group)
        assert x.keys() == y.keys(), group
        for key, value in x.items():
            assert torch.equal(value, y[key]), (group, key)


def nothing_at(out: Path) -> None:
    assert not out.exists(), out
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "a temporary was left behind"


@contextlib.contextmanager
def small_fs(path: Path, size: str, read_only: bool = False):
    """A tmpfs of `size` at `path` (root only: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small or read-only file system needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)])
    if done.returncode != 0:
        pytest.skip("this machine refuses tmpfs mounts")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


# --- arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (["sharpness", "RUN", "--eps", "1e30"], "--eps is 1e+30: give at most 1"),
        (["sharpness", "RUN", "--seed", "-1"], "--seed is -1: give a seed from 0 to 4294967295"),
        (["train", *TRAIN, "--data", "DATA", "--seed", str(2**32)], "--seed is 4294967296"),
        (["train", *TRAIN, "--data", "DATA", "--threads", "-2"], "--threads is -2: give 0"),
        (["train", *TRAIN, "--data", "DATA", "--warm-run", "RUN", "--warm-epoch", "-1"],
         "--warm-epoch is -1: give 0"),
        (["prepare", "synthetic", "--n-train", str(10**12)], "needs about"),
        (["prepare", "synthetic", "--noise", "nan"], "--noise is nan: give a spread from 0 to 1e6"),
        (["prepare", "synthetic", "--seed", "-5"], "--seed is -5: give a seed"),
    ],
)  # fmt: skip
def test_numbers_at_their_extremes_are_refused_before_work(trials, mnist_like, tmp_path, args,
                                                          words):  # fmt: skip
    """ε so large that f overflows, seeds outside every generator's range, negative threads or
    warm-start epoch, a dataset too large to allocate, NaN noise: one line, nothing written."""
    given = {"RUN": trials["SB"][0], "DATA": mnist_like}
    out = tmp_path / "out.h5"
    proc = cli(*(given.get(a, a) for a in args), "--out", out, check=False)
    assert_one_line_error(proc, words)
    assert "training" not in proc.stderr and "measuring" not in proc.stderr
    nothing_at(out)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    seed=st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 2**32 + 2)),
    noise=st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_seed_and_noise_are_taken_or_refused_in_one_line(tmp_path, seed, noise):
    """`prepare synthetic` over every integer seed and every float noise: a dataset that
    loads, exactly when the seed is a generator's and the noise in [0, 1e6] (a spread of 1.5e38
    overflowed float32 into a file that loading refused); else one line, nothing written."""
    out = tmp_path / f"s{abs(hash((seed, noise)))}.h5"
    args = ["prepare", "synthetic", "--n-train", "8", "--n-test", "4", "--input-shape", "3"]
    proc = cli(*args, "--seed", seed, "--noise", repr(noise), "--out", out, check=False)
    if 0 <= seed < 2**32 and 0 <= noise <= 1e6:
        assert proc.returncode == 0, proc.stderr
        assert torch.isfinite(load_dataset(out).x_train).all()
    else:
        assert_one_line_error(proc, "--seed" if 0 <= noise <= 1e6 else "--noise")
        nothing_at(out)


@settings(max_examples=300, deadline=None)
@given(eps=st.floats(allow_nan=True, allow_infinity=True), seed=st.integers(-(2**70), 2**70))
def test_any_eps_and_seed_are_checked_before_work(eps, seed):
    """Every float ε and integer seed: SharpnessConfig and TrainConfig accept exactly ε in
    (0, 1] and seeds in [0, 2³² − 1], and refuse the rest with one line."""
    for make, ok in ((lambda: SharpnessConfig(eps=eps, seed=seed), 0 < eps <= 1),
                     (lambda: TrainConfig("F1", seed=seed), True)):  # fmt: skip
        try:
            make().check()
        except UserError as e:
            assert "\n" not in str(e)
            assert not (ok and 0 <= seed < 2**32), str(e)
        else:
            assert ok and 0 <= seed < 2**32


@pytest.mark.parametrize("eps", ["nan", "inf", "-inf"])
def test_non_finite_eps_is_refused(trials, tmp_path, eps):
    out = tmp_path / "phi.json"
    proc = cli("sharpness", trials["SB"][0], f"--eps={eps}", "--out", out, check=False)
    assert_one_line_error(proc, "--eps", "finite")
    assert proc.returncode == 2
    nothing_at(out)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--batch-size", "1"], "batch size 1 cannot train"),
        (["--lr", "nan"], "--lr is nan"),
        (["--lr", "-1"], "lr must be positive"),
        (["--proximal", "inf"], "--proximal is inf"),
    ],
)
def test_bad_training_numbers_are_one_line(mnist_like, tmp_path, extra, words):
    out = tmp_path / "run.h5"
    proc = cli("train", *TRAIN, "--data", mnist_like, "--out", out, *extra, check=False)
    assert_one_line_error(proc, words)
    assert proc.returncode == 2
    nothing_at(out)
    assert not (tmp_path / "run.h5.partial").exists()


def test_bad_arguments_are_one_line(tmp_path):
    """Through the installed command, in a process of its own: what a user's shell sees."""
    args = ("sharpness", "run.h5", "--eps", "--out", tmp_path / "o.json")
    proc = cli(*args, check=False, process=True)
    assert_one_line_error(proc, "argument --eps: expected one argument", "--help")
    assert proc.returncode == 2
    missing = cli("sharpness", tmp_path / "none.h5", "--out", tmp_path / "o.json", check=False,
                  process=True)  # fmt: skip
    assert_one_line_error(missing, "none.h5") and missing.returncode == 2
    assert_one_line_error(cli("train", "--network", check=False), "expected one argument")
    assert_one_line_error(cli("frobnicate", check=False), "invalid choice")


def test_landscape_start_nan_is_one_line(trials, tmp_path):
    out = tmp_path / "l.h5"
    sb, lb = trials["SB"][0], trials["LB"][0]
    proc = cli("landscape", "--sb", sb, "--lb", lb, "--start", "nan", "--out", out, check=False)
    assert_one_line_error(proc, "--start is nan")
    nothing_at(out)


STAGES = ["train", "sharpness", "landscape", "prepare"]


def stage_args(stage: str, trials, mnist_like) -> list:
    """A stage's command line, all but --out."""
    return {
        "train": ["train", *TRAIN, "--data", mnist_like],
        "sharpness": ["sharpness", trials["SB"][0]],
        "landscape": ["landscape", "--sb", trials["SB"][0], "--lb", trials["LB"][0]],
        "prepare": ["prepare", "synthetic", "--n-train", "20", "--n-test", "5"],
    }[stage]


@pytest.mark.parametrize("stage", STAGES)
def test_an_output_that_is_a_folder_is_refused_before_the_work(trials, mnist_like, tmp_path, stage):
    folder = tmp_path / "taken"
    folder.mkdir()
    proc = cli(*stage_args(stage, trials, mnist_like), "--out", folder, check=False)
    assert_one_line_error(proc, "is an existing folder")
    assert "training" not in proc.stderr and list(folder.iterdir()) == []


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
@pytest.mark.parametrize("stage", ["train", "sharpness"])
def test_an_output_over_its_own_input_is_refused(trials, mnist_like, tmp_path, stage, link):
    """`train --out` its `--data`, or `sharpness --out` its run, by the same path, a symlink or
    a hard link: one line, and the input untouched."""
    source = mnist_like if stage == "train" else trials["SB"][0]
    given = tmp_path / source.name
    shutil.copy(source, given)
    before = given.read_bytes()
    out = {"same": given, "symlink": tmp_path / "link.h5", "hardlink": tmp_path / "hard.h5"}[link]
    if link == "symlink":
        out.symlink_to(given)
    elif link == "hardlink":
        os.link(given, out)
    args = ["train", *TRAIN, "--data", given] if stage == "train" else ["sharpness", given]
    proc = cli(*args, "--out", out, check=False)
    assert_one_line_error(proc, "is the same file as the input", "choose another --out")
    assert proc.returncode == 2 and given.read_bytes() == before


@pytest.mark.parametrize("given", ["folder", "device", "missing"])
@pytest.mark.parametrize("stage", ["train", "sharpness"])
def test_an_input_that_is_not_a_file_is_named_as_such(mnist_like, tmp_path, stage, given):
    """A folder or a device given as the dataset or the run is called what it is, not
    "does not exist" or "corrupted"."""
    path = {"folder": tmp_path, "device": Path("/dev/null"), "missing": tmp_path / "no.h5"}[given]
    args = ["train", *TRAIN, "--data", path] if stage == "train" else ["sharpness", path]
    proc = cli(*args, "--out", tmp_path / "out.h5", check=False)
    words = {"folder": "is a folder, not a file", "device": "is a device, not a file",
             "missing": "does not exist"}[given]  # fmt: skip
    assert_one_line_error(proc, words)
    assert "corrupted" not in proc.stderr
    nothing_at(tmp_path / "out.h5")


def test_a_killed_writer_leaves_no_temporary_for_good(tmp_path):
    """SIGKILL runs no cleanup, so a killed `prepare` leaves its `.NAME.tmp-HOST-PID`; the next
    write of the same output removes it (its process is gone), never a live writer's."""
    out = tmp_path / "d.h5"
    host = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f".d.h5.tmp-{host}-{dead.pid}"
    alive = tmp_path / f".d.h5.tmp-{host}-1"  # init: alive
    other = tmp_path / f".d.h5.tmp-otherhost-{dead.pid}"  # on a shared disk: left alone
    for path in (orphan, alive, other):
        path.write_bytes(b"partial")
    cli("prepare", "synthetic", "--n-train", "20", "--n-test", "5", "--out", out)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["d.h5", alive.name, other.name]), left


# --- readers of result files ---------------------------------------------------------
READER_CASES = {  # (command line from (runs, files), words of its one line)
    "tables, nothing given": (lambda r, f: ["tables"], "no runs and no sharpness results"),
    "tables, a run twice": (lambda r, f: ["tables", "--runs", r[0], r[0]], "are the same run"),
    "tables, a run and its copy": (
        lambda r, f: ["tables", "--runs", r[0], f["copy"]], "are the same run"),
    "tables, two files of one trial": (
        lambda r, f: ["tables", "--runs", r[0], f["relabelled"]], "are the same trial"),
    "tables, an empty JSON": (lambda r, f: ["tables", "--sharpness", f["empty"]], "is empty"),
    "tables, a JSON list": (
        lambda r, f: ["tables", "--sharpness", f["list"]], "holds a JSON list, not an object"),
    "tables, an HDF5 as JSON": (
        lambda r, f: ["tables", "--sharpness", r[0]], "is an HDF5 file, not a JSON result"),
    "tables, a folder as JSON": (
        lambda r, f: ["tables", "--sharpness", f["folder"]], "is a folder, not a file"),
    "tables, JSON without φ": (lambda r, f: ["tables", "--sharpness", f["object"]], "lacks"),
    "panel, a run and its copy": (
        lambda r, f: ["panel", "--runs", r[0], f["copy"], "--results", f["object"]],
        "are the same run"),
    "panel, an empty result": (
        lambda r, f: ["panel", "--runs", *r, "--results", f["empty"]], "is empty"),
    "panel, not UTF-8": (
        lambda r, f: ["panel", "--runs", *r, "--results", f["binary"]], "is not JSON"),
    "measure, a run twice": (
        lambda r, f: ["measure", "curves", "--sb", r[0], r[0], "--lb", r[1]], "are the same run"),
}  # fmt: skip


@pytest.fixture(scope="module")
def reader_files(trials, tmp_path_factory) -> tuple[list, dict]:
    folder = tmp_path_factory.mktemp("readers")
    runs = [trials["SB"][0], trials["LB"][0]]
    files = {name: folder / f"{name}.json" for name in ("empty", "list", "object", "binary")}
    files["empty"].write_text("  \n")
    files["list"].write_text("[1, 2]")
    files["object"].write_text('{"regime": "SB", "run_seed": 0}')
    files["binary"].write_bytes(b'{"a": "\xff\xfe"}')
    files["folder"] = folder / "a-folder.json"
    files["folder"].mkdir()
    files["copy"] = folder / "copy.h5"
    shutil.copy(runs[0], files["copy"])
    files["relabelled"] = folder / "other.h5"  # another run file of SB trial 0
    shutil.copy(trials["SB"][1], files["relabelled"])
    with h5py.File(files["relabelled"], "r+") as f:
        f.attrs["seed"] = 0
        f.attrs["attrs_sha256"] = _run_attrs_digest(f.attrs)
    return runs, files


@pytest.mark.parametrize("case", READER_CASES)
def test_bad_inputs_of_the_readers_are_one_line(reader_files, tmp_path, case):
    """tables, panel and measure given nothing, the same run twice (its path again or a copy),
    two files of one trial, or a result file that is empty, a list, not UTF-8, an HDF5 or a
    folder: one line, nothing written (counted as several trials before)."""
    runs, files = reader_files
    build, words = READER_CASES[case]
    args = build(runs, files)
    out = ["--out", tmp_path / "m.csv"] if args[0] == "measure" else ["--out-dir", tmp_path / "o"]
    proc = cli(*args, *out, check=False)
    assert_one_line_error(proc, words)
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.csv").exists()


def test_result_json_is_strict_and_reads_back(tmp_path):
    """No NaN or Infinity token in a written result; null and `non_finite` read back as the
    numbers they were; a hostile `non_finite` changes nothing."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    text = json_text({"phi": math.nan, "f": math.inf, "xs": [1.0, -math.inf], "n": np.float32(2.5)})
    strict = json.loads(text, parse_constant=refuse)
    assert strict["phi"] is None and strict["non_finite"]["xs[1]"] == "-inf"
    back = restore_non_finite(strict)
    assert math.isnan(back["phi"]) and back["f"] == math.inf and back["n"] == 2.5
    assert back["xs"] == [1.0, None] and "non_finite" not in back
    for hostile in (5, {"n": "nan"}, {"phi": "1e999"}, ["phi"]):
        assert restore_non_finite({"phi": None, "n": 1, "non_finite": hostile}) == {
            "phi": None, "n": 1}  # fmt: skip


# --- read-only and full disks ------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_a_read_only_output_folder_is_refused_before_the_work(trials, mnist_like, tmp_path, stage):
    with small_fs(tmp_path / "ro", "1m", read_only=True) as ro:
        args = stage_args(stage, trials, mnist_like)
        proc = cli(*args, "--out", ro / "sub" / "out.h5", check=False)
        assert_one_line_error(proc, "not writable", "Read-only file system")
        assert list(ro.iterdir()) == []


def test_a_full_disk_at_the_final_write_keeps_the_work_and_resumes_bitwise(mnist_like, tmp_path):
    """F1's work folder peaks at 53 MB (3 iterates of 5.9 MB, the checkpoint of 17.6 MB and its
    replacement); the run file then needs 23 MB more. On 56 MB the final write fails; the rerun,
    given room, resumes."""
    ref = tmp_path / "ref.h5"
    cli("train", *TRAIN, "--data", mnist_like, "--out", ref)
    with small_fs(tmp_path / "full", "56m") as disk:
        out = disk / "run.h5"
        proc = cli("train", *TRAIN, "--data", mnist_like, "--out", out, check=False)
        assert "stopped after epoch 2" in proc.stderr  # the fault is at the final write
        assert_ends_in_one_line(proc, "No space left on device", "run the same command again")
        nothing_at(out)
        assert (disk / "run.h5.partial" / "checkpoint.pt").exists()
        remount(disk, "size=200m")
        again = cli("train", *TRAIN, "--data", mnist_like, "--out", out)
        assert "resuming" in again.stderr
        assert_same_states(ref, out, ("init", 1, "final"))
        assert not (disk / "run.h5.partial").exists()


def test_a_full_disk_while_training_is_one_line(mnist_like, tmp_path):
    with small_fs(tmp_path / "tiny", "3m") as disk:  # not even x0 (5.9 MB) fits
        out = disk / "run.h5"
        proc = cli("train", *TRAIN, "--data", mnist_like, "--out", out, check=False)
        assert_ends_in_one_line(proc, "No space left on device")
        nothing_at(out)


def fill(disk: Path) -> None:
    """Fill a file system to the last byte (a file can still be created: inodes are apart)."""
    with open(disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)


WRITERS = {  # every command that writes a result, all but --out/--out-dir
    "prepare mnist": lambda t, m: ["prepare", "mnist", "--root", SHARED_DATA, "--no-download"],
    "prepare synthetic": lambda t, m: ["prepare", "synthetic", "--n-train", "3000"],
    "train": lambda t, m: ["train", *TRAIN, "--data", m],
    "sharpness": lambda t, m: ["sharpness", t["SB"][0], "--iters", "2", "--max-iters", "2"],
    "landscape": lambda t, m: [
        "landscape",
        "--sb",
        t["SB"][0],
        "--lb",
        t["LB"][0],
        "--points",
        "3",
        "--chunk",
        "300",
    ],  # fmt: skip
    "surface": lambda t, m: [
        "surface",
        "compute",
        t["SB"][0],
        "--dims",
        "1",
        "--points",
        "3",
        "--chunk",
        "300",
    ],  # fmt: skip
    "tables": lambda t, m: ["tables", "--runs", *t["SB"], *t["LB"]],
}


@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_on_a_full_disk_is_one_line_and_no_crash(trials, mnist_like, tmp_path, writer):
    """Each writer, as a process (a crash at exit would show there only), on a file system full
    to the last byte: exit 2, one line, no temporary left; never a segmentation fault (HDF5 2.0
    crashed `prepare` after a failed chunk flush: atomic.open_h5). The panel's case is in
    test_panel."""
    if writer == "prepare mnist" and not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip("real MNIST is not in ../shared/data")
    with small_fs(tmp_path / "full", "256k") as disk:
        fill(disk)
        out = ["--out-dir", disk / "tables"] if writer == "tables" else ["--out", disk / "out.h5"]
        proc = cli(*WRITERS[writer](trials, mnist_like), *out, check=False, process=True)
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
        assert_ends_in_one_line(proc, "No space left on device", "free space there")
        left = {p.name for p in disk.iterdir()} - {"filler"}
        kept = {"out.h5.partial"} if writer in ("train", "landscape", "surface") else set()
        assert left <= kept and not list(disk.rglob("*.tmp-*")), left  # work kept to resume


# --- damaged work in progress ------------------------------------------------------------
class _Stop(Exception):
    pass


def _stop_after_epoch(n: int):
    def log(message: str) -> None:
        if message.startswith(f"epoch {n}/"):
            raise _Stop  # as a kill would, after that epoch's checkpoint

    return log


@pytest.fixture(scope="module")
def stopped_run(mnist_like, tmp_path_factory) -> tuple[TrainConfig, Path, Path]:
    """A 3-epoch F1 run, and the work folder of the same run stopped after epoch 2."""
    folder = tmp_path_factory.mktemp("stopped")
    cfg = TrainConfig("F1", batch_size=64, max_epochs=3, stop="fixed", eval_chunk=200)
    train(cfg, mnist_like, folder / "ref.h5", log=quiet)
    with pytest.raises(_Stop):
        train(cfg, mnist_like, folder / "run.h5", log=_stop_after_epoch(2))
    return cfg, folder / "ref.h5", folder / "run.h5.partial"


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_damaged_iterate_in_the_work_folder_restarts_the_run(
    stopped_run, mnist_like, tmp_path, damage
):
    cfg, ref, work = stopped_run
    out = tmp_path / "run.h5"
    shutil.copytree(work, tmp_path / "run.h5.partial")
    victim = tmp_path / "run.h5.partial" / "epoch_00001.pt"
    data = victim.read_bytes()
    victim.write_bytes(
        {
            "truncate": data[: len(data) // 2],
            "flip": data[:40] + bytes(b ^ 0xFF for b in data[40:80]) + data[80:],
            "empty": b"",
        }[damage]
    )
    lines: list[str] = []
    train(cfg, mnist_like, out, log=lines.append)
    assert any("epoch_00001.pt is unreadable" in line and "afresh" in line for line in lines)
    assert_same_states(ref, out, ("init", 1, 2, "final"))


@pytest.fixture(scope="module")
def finished_trajectory(trials, tmp_path_factory) -> tuple[list, Path, pd.DataFrame]:
    """LB trial 1's trajectory at two points (x₀ and epoch 3), with its folder of points."""
    runs, out = [trials["LB"][1]], tmp_path_factory.mktemp("trajectory") / "t.csv"
    return runs, out, trajectory(runs, ["batch"], CFG, 3, out, log=quiet)


def _rerun_damaged(finished, tmp_path: Path, name: str, damage: bytes) -> list[str]:
    """A copy of the finished trajectory's points with file `name` overwritten, computed again
    (to the same table): its log."""
    runs, done, first = finished
    shutil.copytree(done.with_name("t.csv.partial"), tmp_path / "t.csv.partial")
    (tmp_path / "t.csv.partial" / name).write_bytes(damage)
    lines: list[str] = []
    again = trajectory(runs, ["batch"], CFG, 3, tmp_path / "t.csv", log=lines.append)
    pd.testing.assert_frame_equal(first.drop(columns=["seconds"]), again.drop(columns=["seconds"]))
    return lines


@pytest.mark.parametrize("damage", [b"", b'{"phi": 1', b"\xff\xfe\x00", b'{"phi": "x"}'])
def test_a_damaged_trajectory_point_is_computed_again(finished_trajectory, tmp_path, damage):
    lines = _rerun_damaged(finished_trajectory, tmp_path, "0001.json", damage)
    assert sum(line.startswith("point ") for line in lines) == 1
    assert any("0001.json is damaged" in line for line in lines), lines


def test_a_damaged_trajectory_marker_computes_every_point_again(finished_trajectory, tmp_path):
    lines = _rerun_damaged(finished_trajectory, tmp_path, "settings.json", b"{")
    assert sum(line.startswith("point ") for line in lines) == len(finished_trajectory[2]) == 2


# --- damaged inputs ----------------------------------------------------------------------
def test_a_dataset_with_overwritten_bytes_is_refused(tmp_path):
    path = tmp_path / "d.h5"
    make_synthetic(path, 50, 20, (1, 4, 4), 3)
    with h5py.File(path, "r+") as f:  # silent damage: valid HDF5, other numbers
        f["x_train"][3] = f["x_train"][3] + 1
    with pytest.raises(UserError, match="does not match its recorded content_sha256"):
        load_dataset(path)


@pytest.mark.parametrize(
    "attr, value", [("scale", 1 / 256), ("num_classes", 4), ("transform", "pad32-rgb")]
)
def test_a_dataset_with_a_changed_meaning_is_refused(tmp_path, attr, value):
    """Caught by attrs_sha256; and, with that digest made consistent, by content_sha256."""
    path = tmp_path / "d.h5"
    make_synthetic(path, 50, 20, (1, 4, 4), 3)
    with h5py.File(path, "r+") as f:
        f.attrs[attr] = value
    with pytest.raises(UserError, match="do not match attrs_sha256"):
        load_dataset(path)
    with h5py.File(path, "r+") as f:
        f.attrs["attrs_sha256"] = _attrs_sha256(f.attrs)
    with pytest.raises(UserError, match="content_sha256"):
        load_dataset(path)


def test_fuzzed_dataset_files_never_load_wrong_data(tmp_path):
    """Truncations and byte flips all over a dataset file: each either loads exactly what was
    written or is refused with a UserError; never another exception."""
    path = tmp_path / "d.h5"
    make_synthetic(path, 60, 20, (2, 3, 3), 4)
    good = path.read_bytes()
    want = load_dataset(path)
    bad = tmp_path / "bad.h5"
    step = max(1, len(good) // 150)
    cuts = [good[:n] for n in range(0, len(good), step * 3)]
    flips = [good[:i] + bytes([good[i] ^ 0x5A]) + good[i + 1 :] for i in range(0, len(good), step)]
    refused = []
    for data in cuts + flips:
        bad.write_bytes(data)
        try:
            got = load_dataset(bad)
        except UserError as e:
            refused.append(len(data) < len(good))
            assert "\n" not in str(e)
            continue
        for split in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(got, split), getattr(want, split)), split
        assert (got.num_classes, got.name) == (want.num_classes, want.name)
    assert sum(refused) == len(cuts)  # every truncation; a flip in unused space is harmless


@pytest.fixture
def mnist_copy(tmp_path) -> Path:
    raw = SHARED_DATA / "MNIST" / "raw"
    if not raw.is_dir():
        pytest.skip(f"real MNIST is not at {raw}")
    copy = tmp_path / "data"
    shutil.copytree(raw, copy / "MNIST" / "raw")
    for f in (copy / "MNIST" / "raw").iterdir():
        f.chmod(0o644)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_mnist_is_called_corrupted(mnist_copy, tmp_path, damage):
    labels = mnist_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = labels.read_bytes()
    flipped = data[:100] + bytes([data[100] ^ 0x01]) + data[101:]
    labels.write_bytes(data[:5000] if damage == "truncate" else flipped)
    out = tmp_path / "mnist.h5"
    proc = cli("prepare", "mnist", "--root", mnist_copy, "--out", out, "--no-download", check=False)
    assert_one_line_error(proc, "t10k-labels-idx1-ubyte is corrupted")
    nothing_at(out)


@pytest.mark.slow
def test_fuzzed_mnist_files_are_all_called_corrupted(mnist_copy, tmp_path):
    """Each of the four IDX files cut or changed at 8 offsets: always refused before parsing."""
    from sharpminima.data.dataset import MNIST_FILES, prepare_mnist

    for name in MNIST_FILES:
        path = mnist_copy / "MNIST" / "raw" / name
        good = path.read_bytes()
        offsets = [0, 3, 8, 16, *range(17, len(good), len(good) // 4)]
        damaged = [good[:i] for i in offsets if i] + [
            good[:i] + bytes([good[i] ^ 0x80]) + good[i + 1 :] for i in offsets
        ]
        for data in damaged:
            path.write_bytes(data)
            with pytest.raises(UserError, match=f"{name} is corrupted"):
                prepare_mnist(mnist_copy, tmp_path / "m.h5", download=False)
        path.write_bytes(good)
    assert not (tmp_path / "m.h5").exists()


def test_landscape_refuses_runs_of_different_starts(trials, tmp_path):
    out = tmp_path / "l.h5"
    sb, lb = trials["SB"][0], trials["LB"][1]  # seeds 0 and 1
    proc = cli("landscape", "--sb", sb, "--lb", lb, "--points", 2, "--out", out, check=False)
    assert_one_line_error(proc, "different initial points", "--other-starts")
    nothing_at(out)
    cli("landscape", "--sb", sb, "--lb", lb, "--points", 2, "--out", out, "--other-starts")
    assert out.exists()


def test_trajectory_refuses_runs_of_different_networks(trials, tmp_path):
    other = tmp_path / "c.h5"
    data = tmp_path / "cifar_like.h5"
    make_synthetic(data, 40, 10, (3, 32, 32), 10)
    cfg = TrainConfig("C1", batch_size=20, max_epochs=1, stop="fixed")
    train(cfg, data, other, log=quiet)
    out = tmp_path / "t.csv"
    proc = cli(
        "trajectory", "--runs", trials["SB"][0], other, "--iters", 1, "--out", out, check=False
    )
    assert_one_line_error(proc, "the runs differ in network")
    nothing_at(out)
    assert np.isfinite(Run(other).history.train_loss).all()


# --- the workflow --------------------------------------------------------------------------
@pytest.mark.slow
def test_after_kill_9_of_snakemake_the_readme_command_recovers(tmp_path):
    """Snakemake SIGKILLed mid-job leaves its lock: a plain rerun stops on it; the README's
    recovery line (unlock, then run with the default profile) finishes the same run."""
    target = "results/smoke/runs/F1/SB/seed0.h5"
    ref, work = tmp_path / "ref", tmp_path / "work"
    snakemake(ref, target, "--configfile", SMOKE)  # --configfile takes every word after it
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "--directory", work]
        + ["--cores", "2", target, "--configfile", SMOKE],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    partial = work / (target + ".partial") / "epoch_00001.pt"
    deadline = time.time() + 300
    while not partial.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    blocked = snakemake(work, target, "--configfile", SMOKE, check=False)
    assert blocked.returncode != 0 and "--unlock" in blocked.stdout + blocked.stderr
    readme = (REPO / "README.md").read_text()
    assert RECOVERY in readme
    snakemake(work, "--unlock", "--configfile", SMOKE)
    done = snakemake(work, target, *PROFILE, "--configfile", SMOKE)
    assert "resuming" in (work / "logs/smoke/train/F1/SB/seed0.log").read_text(), done.stderr
    assert_same_states(ref / target, work / target, ("final",))


PROFILE = ("--workflow-profile", REPO / "workflow" / "profiles" / "default")
RECOVERY = (
    "snakemake --unlock --configfile FILE && "
    "snakemake --workflow-profile workflow/profiles/default --cores 8 --configfile FILE"
)


def test_fuzzed_run_files_never_give_wrong_numbers(trials, tmp_path):
    """Byte flips all over a run file: each read (settings, history, every iterate) either
    returns exactly what was written or raises a UserError; never another exception."""
    good_path = Path(trials["SB"][0])
    good = good_path.read_bytes()
    want = Run(good_path)
    groups = ["init", *want.epochs, "final"]
    states = {g: want.state(g) for g in groups}
    bad = tmp_path / "bad.h5"
    refused = 0
    for i in range(0, len(good), max(1, len(good) // 150)):
        bad.write_bytes(good[:i] + bytes([good[i] ^ 0x5A]) + good[i + 1 :])
        try:
            got = Run(bad)
            assert {k: v for k, v in got.attrs.items()} == want.attrs
            pd.testing.assert_frame_equal(got.history, want.history)
            for g in groups:
                for key, value in got.state(g).items():
                    assert torch.equal(value, states[g][key]), (i, g, key)
        except UserError as e:
            refused += 1
            assert "\n" not in str(e)
    assert refused > 0


@pytest.mark.parametrize(
    "setting, words",
    [
        ("sharpness: {eps: [.nan]}", "sharpness.eps.0: nan is not a finite number"),
        ("sharpness: {eps: [1e-3, .inf]}", "sharpness.eps.1: inf is not a finite number"),
        ("training: {lr: .nan}", "training.lr: nan is not a finite number"),
        ("landscape: {start: -.inf}", "landscape.start: -inf is not a finite number"),
    ],
)
def test_a_non_finite_config_number_stops_before_any_job(tmp_path, setting, words):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(setting + "\n")
    proc = snakemake(tmp_path, "-n", "--configfile", REPO / "config.yaml", overlay, check=False)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and words in lines[0], lines


def test_fuzzed_config_files_never_end_in_a_traceback(tmp_path):
    """config.yaml cut at 11 points and damaged at 12: each plans a study or stops with a
    config error (ours in one line, or Snakemake's two for YAML it cannot parse)."""
    good = (REPO / "config.yaml").read_bytes()
    cases = [good[: len(good) * k // 12] for k in range(1, 12)]
    cases += [good[:i] + b"\x00:[" + good[i + 3 :] for i in range(40, len(good), len(good) // 12)]

    def plan(i: int) -> subprocess.CompletedProcess:
        config = tmp_path / f"c{i}.yaml"
        config.write_bytes(cases[i])
        (tmp_path / f"w{i}").mkdir()
        return snakemake(tmp_path / f"w{i}", "-n", "--configfile", config, check=False)

    with ThreadPoolExecutor(2) as pool:  # two dry runs at a time
        procs = list(pool.map(plan, range(len(cases))))
    for proc in procs:
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out, out
        if proc.returncode != 0:
            ours = out.strip().startswith("config: ") and len(out.strip().splitlines()) == 1
            snakemakes = out.startswith("WorkflowError:\nConfig file ")  # YAML it cannot read
            assert ours or snakemakes, out


# --- kills of the measuring stages -----------------------------------------------------
def _kill_when(args: list, ready, log: Path, timeout: float = 120) -> bool:
    """Start `sharpminima ARGS` (stderr to `log`), SIGKILL it once `ready()` holds; whether
    it was still running then."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sharpminima", *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    running = proc.poll() is None
    proc.kill()
    proc.wait()
    return running


@pytest.mark.parametrize("stage", ["landscape", "trajectory", "sharpness"])
def test_a_killed_measurement_reruns_to_the_same_result(trials, tmp_path, stage):
    """SIGKILL mid-work (landscape: once its first point is cached; trajectory: after its
    first φ; sharpness: after its first L-BFGS-B iteration), then the same command: the result
    equals a whole run's, and nothing stood at the output path in between."""
    sb, lb = trials["SB"][0], trials["LB"][0]
    args, ext = {
        "landscape": (["landscape", "--sb", sb, "--lb", lb, "--points", 9], ".h5"),
        "trajectory": (["trajectory", "--runs", sb, "--iters", 2, "--chunk", 200], ".csv"),
        "sharpness": (["sharpness", lb, "--iters", 5, "--chunk", 200], ".json"),
    }[stage]
    ref, out = tmp_path / f"ref{ext}", tmp_path / f"out{ext}"
    cli(*args, "--out", ref)
    partial, log = tmp_path / f"out{ext}.partial", tmp_path / "log"
    ready = {
        "landscape": lambda: "α = " in log.read_text(),
        "trajectory": lambda: (partial / "0000.json").exists(),
        "sharpness": lambda: "iteration 1/" in log.read_text(),
    }[stage]
    assert _kill_when([*args, "--out", out], ready, log), "finished before the kill"
    nothing_at(out)
    cli(*args, "--out", out)
    if stage == "landscape":
        for key, value in read_landscape(ref)[1].items():
            assert np.array_equal(value, read_landscape(out)[1][key]), key
    elif stage == "trajectory":
        a, b = pd.read_csv(ref), pd.read_csv(out)
        pd.testing.assert_frame_equal(a.drop(columns=["seconds"]), b.drop(columns=["seconds"]))
    else:
        a, b = json.loads(ref.read_text()), json.loads(out.read_text())
        assert {k: a[k] for k in ("phi", "f_x", "f_max", "nit", "nfev")} == {
            k: b[k] for k in ("phi", "f_x", "f_max", "nit", "nfev")
        }
