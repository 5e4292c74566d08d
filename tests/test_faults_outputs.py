"""Outputs, hostile input's third round (docs/reliability.md): one writer per output, and no
output that destroys what is at its path or what the command reads."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pandas as pd
import pytest

from sharpminima import guard
from sharpminima.atomic import open_h5
from sharpminima.errors import UserError
from sharpminima.store import Run
from sharpminima.train.trainer import TrainConfig, train

from .conftest import SHARED_DATA, assert_one_line_error, cli
from .test_faults import TRAIN, assert_same_states, nothing_at


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: opening a FIFO to write blocks until a reader comes."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def wait_for(condition, what: str, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.05)


def holding(out: Path) -> subprocess.Popen:
    """Another process that holds `out` as its writer until killed."""
    code = (
        "import sys, time; from sharpminima.guard import sole_writer\n"
        "with sole_writer(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, out], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# One writer per output (item 1)


def test_a_second_writer_stops_at_once_and_the_first_ends_as_if_alone(mnist_like, tmp_path):
    """The reported case: two `train` runs given one --out. The second (another seed, then
    another command) stops in one line naming the first's PID and host, and the first's run
    file is, bit for bit in every weight and recorded number, the run trained alone."""
    args = [*TRAIN, "--max-epochs", "12", "--save-every", "3", "--data", mnist_like, "--seed", "0"]
    alone = tmp_path / "alone.h5"
    cli("train", *args, "--out", alone)
    out = tmp_path / "shared.h5"
    first = subprocess.Popen(["sharpminima", "train", *map(str, args), "--out", str(out)],
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        partial = out.with_name(out.name + ".partial")
        wait_for(lambda: (partial / "checkpoint.pt").exists(), "the first run to start")
        second = [
            ["train", *args[:-1], "1", "--out", out],
            ["prepare", "synthetic", "--n-train", "20", "--n-test", "5", "--out", out],
        ]
        for command in second:
            proc = cli(*command, check=False)
            assert_one_line_error(proc, f"{out} is being written by another process",
                                  f"PID {first.pid} on {socket.gethostname()}")  # fmt: skip
            assert first.poll() is None, "the first run ended before the second was tried"
        with pytest.raises(UserError, match="being written by another process"):
            train(TrainConfig("F1", batch_size=64, seed=2), mnist_like, out, log=lambda m: None)
        _, err = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, err
    a, b = Run(alone), Run(out)
    assert a.epochs == b.epochs == [3, 6, 9, 12]
    assert_same_states(alone, out, ["init", "final", *a.epochs])
    timing = ["seconds", "eval_seconds"]
    pd.testing.assert_frame_equal(a.history.drop(columns=timing), b.history.drop(columns=timing))
    differ = {"finished", "attrs_sha256"}
    assert {k: v for k, v in a.attrs.items() if k not in differ} == {
        k: v for k, v in b.attrs.items() if k not in differ
    }
    assert not list(tmp_path.glob(".*.lock")), "a lock file was left behind"


def test_every_spelling_of_one_output_is_one_lock(tmp_path):
    """A relative path, an absolute one and one through a linked folder name one output."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    holder = holding(tmp_path / "real" / "x.h5")
    try:
        for spelling in (tmp_path / "link" / "x.h5", tmp_path / "real" / ".." / "real" / "x.h5"):
            with pytest.raises(UserError, match=f"PID {holder.pid} "):
                with guard.sole_writer(spelling):
                    pass
        with guard.sole_writer(tmp_path / "real" / "y.h5"):  # another output: free
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    """The kernel drops a dead process's lock: the next writer goes ahead, and a lock file
    left behind by SIGKILL, whatever it holds, blocks nothing."""
    out = tmp_path / "x.h5"
    holder = holding(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert guard.lock_path(out).exists()
    guard.lock_path(out).write_bytes(b"\xff\x00 junk\n" * 100)
    cli("prepare", "synthetic", "--n-train", "20", "--n-test", "5", "--out", out)
    assert out.is_file() and not guard.lock_path(out).exists()


def test_a_library_call_inside_a_command_shares_its_lock(mnist_like, tmp_path):
    """The command locks its output, and `train` locks it again: one process, one writer."""
    out = tmp_path / "run.h5"
    with guard.sole_writer(out), guard.sole_writer(str(out)):
        train(TrainConfig("F1", batch_size=300, seed=0, max_epochs=1, stop="fixed",
                          eval_chunk=200), mnist_like, out, log=lambda m: None)  # fmt: skip
        assert guard.lock_path(out).exists()
    assert not guard.lock_path(out).exists()


def test_a_reader_gets_the_version_it_probed(tmp_path, monkeypatch):
    """A file replaced between the header probe and the open is probed again: the reader never
    opens a version no probe has read."""
    path = tmp_path / "f.h5"
    for name, value in (("f.h5", 1), ("new.h5", 2)):
        with h5py.File(tmp_path / name, "w") as f:
            f["v"] = value
    from sharpminima import atomic

    real, calls = atomic._probe, []

    def probe_then_replace(p):
        key = real(p)
        calls.append(key)
        if len(calls) == 1:
            os.replace(tmp_path / "new.h5", path)  # a writer renames its finished file
        return key

    monkeypatch.setattr(atomic, "_probe", probe_then_replace)
    with open_h5(path) as f:
        assert f["v"][()] == 2
    assert len(calls) == 2 and calls[0] != calls[1]


def test_a_run_replaced_while_read_is_refused(trials, tmp_path):
    """A run read in two opens (its settings, then an iterate) that another run replaced in
    between is refused, never a mix of the two runs."""
    path = tmp_path / "run.h5"
    shutil.copy(trials["SB"][0], path)
    run = Run(path)
    shutil.copy(trials["SB"][1], tmp_path / "other.h5")
    os.replace(tmp_path / "other.h5", path)
    with pytest.raises(UserError, match="was replaced by another run while being read"):
        run.state("final")


# Outputs that cannot destroy anything (item 2)


def special(kind: str, path: Path) -> Path:
    """A FIFO, a character device (a copy of /dev/null's node: never /dev/null itself), a
    socket, or a link to a FIFO, at `path`."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    else:
        os.mkfifo(path.with_name("target"))
        path.symlink_to(path.with_name("target"))
    return path


WORDS = {"fifo": "is a FIFO", "device": "is a device", "socket": "is a socket", "link": "is a FIFO"}


@pytest.mark.parametrize("kind", list(WORDS))
@pytest.mark.parametrize("command", ["prepare", "train", "measure-beside", "tables-folder"])
def test_an_output_that_is_not_a_file_is_refused_and_kept(mnist_like, trials, tmp_path, kind,
                                                          command):  # fmt: skip
    """--out, a file written beside it (measure's .md) or a file in --out-dir that is a FIFO,
    a device, a socket or a link to a FIFO: one line before any work, and it stays what it was.
    (Before, the FIFO blocked the command forever and the others were replaced by a file.)"""
    target = tmp_path / "out.h5"
    if command == "prepare":
        args = ["prepare", "synthetic", "--n-train", "20", "--n-test", "5", "--out", target]
    elif command == "train":
        args = ["train", *TRAIN, "--data", mnist_like, "--out", target]
    elif command == "measure-beside":
        target = tmp_path / "curves.md"
        args = ["measure", "curves", "--sb", trials["SB"][0], "--lb", trials["LB"][0]]
        args += ["--out", tmp_path / "curves.csv"]
    else:
        folder = tmp_path / "tables"
        folder.mkdir()
        target = folder / "table1.csv"
        args = ["tables", "--out-dir", folder, "--runs", *trials["SB"], *trials["LB"]]
    special(kind, target)
    before = os.lstat(target)
    with deadline(60):
        proc = cli(*args, check=False)
    assert_one_line_error(proc, WORDS[kind], "not a file")
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    if command == "measure-beside":
        nothing_at(tmp_path / "curves.csv")


@pytest.fixture(scope="module")
def raw_copies(tmp_path_factory) -> Path:
    """A copy of the real MNIST and Fashion-MNIST raw folders (torchvision's layout)."""
    root = tmp_path_factory.mktemp("root")
    for name in ("MNIST", "FashionMNIST"):
        if not (SHARED_DATA / name / "raw").is_dir():
            pytest.skip(f"the real {name} files are not on this machine")
        shutil.copytree(SHARED_DATA / name / "raw", root / name / "raw")
    return root


@pytest.mark.parametrize(
    "source, name",
    [("mnist", "train-labels-idx1-ubyte"), ("mnist", "t10k-images-idx3-ubyte"),
     ("fashion-mnist", "t10k-labels-idx1-ubyte"), ("fashion-folder", "train-labels-idx1-ubyte")],
)  # fmt: skip
@pytest.mark.parametrize("how", ["path", "hard link"])
def test_prepare_never_writes_over_a_file_it_found_in_its_folder(raw_copies, tmp_path, source,
                                                                 name, how):  # fmt: skip
    """`prepare --out` naming one of the raw files it finds inside --root or --folder (or a
    hard link to one) is refused in one line, and the file is kept byte for byte (before, it
    was replaced by the dataset, exit 0)."""
    folder = raw_copies / ("MNIST" if source == "mnist" else "FashionMNIST") / "raw"
    raw = folder / name
    before = digest(raw)
    out = raw
    if how == "hard link":
        out = tmp_path / "out.h5"
        os.link(raw, out)
    args = ["prepare", source.replace("fashion-folder", "fashion-mnist"), "--no-download"]
    args += ["--out", out]
    args += ["--folder", folder] if source == "fashion-folder" else ["--root", raw_copies]
    proc = cli(*args, check=False)
    assert_one_line_error(proc, "is one of the files this command read", "choose another output")
    assert digest(raw) == before
    assert not list(folder.glob(".*.tmp-*"))


def test_a_name_too_long_for_its_temporary_is_refused_before_any_work(tmp_path):
    """A name that fits the file system but not with the temporary's suffix beside it said
    "File name too long ... check the path" after the work; now one line before it, saying to
    shorten the name. The longest name that fits is written."""
    longest = 255 - guard.EXTRA_NAME
    proc = cli("prepare", "synthetic", "--n-train", "20", "--n-test", "5",
               "--out", tmp_path / ("a" * (longest - 2) + "h5x"), check=False)  # fmt: skip
    assert_one_line_error(proc, "over the file system's limit of 255", "shorten the name")
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / ("b" * (longest - 3) + ".h5")
    cli("prepare", "synthetic", "--n-train", "20", "--n-test", "5", "--out", out)
    assert out.is_file()


# Ctrl-C at any moment (item 7)


@pytest.fixture
def interruptible():
    """Children that Ctrl-C reaches: a test run started in the background (nohup, &) has SIGINT
    ignored, and its children inherit that; Python's own handler becomes the default at exec."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_at_any_moment_is_one_line_and_the_rerun_resumes_exactly(
    mnist_like, tmp_path, interruptible
):
    """SIGINT at moments drawn at random over a `train` (loading the modules, building the
    options, training, writing): exit 130 and one line saying the rerun goes on from the last
    finished step (or a finished run), never a traceback; the rerun then equals the run trained
    alone, bitwise. A `sharpness`, which starts over, says so. (Before, an interrupt inside a
    fork was printed as "Exception ignored" and lost, and one inside PyTorch's import made the
    process die by SIGINT after our line.)"""
    args = [*map(str, TRAIN), "--max-epochs", "4", "--data", str(mnist_like)]
    command = [sys.executable, "-m", "sharpminima"]
    alone = tmp_path / "alone.h5"
    started = time.monotonic()
    subprocess.run([*command, "train", *args, "--out", str(alone)], check=True, capture_output=True)
    duration = time.monotonic() - started
    rng = random.Random(41)
    delays = sorted(rng.uniform(0.05, 0.9) * duration for _ in range(6))
    interrupted = 0
    for i, delay in enumerate(delays):
        out = tmp_path / f"run{i}.h5"
        proc = subprocess.Popen([*command, "train", *args, "--out", str(out)],
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        assert "Traceback" not in err and "Exception" not in err, (delay, err)
        if proc.returncode == 130:
            interrupted += 1
            last = err.strip().splitlines()[-1]
            assert "interrupted" in last and "run the same command again" in last, (delay, last)
            assert "starts over" not in last and (not out.exists()), (delay, last)
            cli("train", *args, "--out", out)
        else:
            assert proc.returncode == 0, (delay, err)
        assert_same_states(alone, out, ["init", "final"])
    assert interrupted >= 3, (delays, duration)
    sharp = [*command, "sharpness", alone, "--out", tmp_path / "s.json", "--iters", "200"]
    proc = subprocess.Popen([*map(str, sharp), "--threads", "1"], stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    assert proc.poll() is None, "sharpness ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].endswith("run the same command again (it starts over)")
