"""Inputs, hostile input's third round (docs/reliability.md): bounded resources (what a small
file can make a reader allocate, inflate or walk) and words that are true (permission, another
dataset's intact file, a compressed file, a shape)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from sharpminima import store
from sharpminima.data import dataset
from sharpminima.data.dataset import load_dataset, make_synthetic
from sharpminima.errors import UserError

from .conftest import REPO, SHARED_DATA, assert_one_line_error, cli, snakemake
from .test_faults_outputs import deadline


@pytest.fixture
def synthetic(tmp_path) -> Path:
    path = tmp_path / "d.h5"
    make_synthetic(path, 30, 10, (1, 4, 4), 3, seed=0)
    return path


def rewrite(path: Path, change, digest: bool = True) -> None:
    """Apply `change(f)` to a dataset file and record consistent digests: a crafted file
    (`digest`: the content digest too, where the arrays can be read)."""
    with h5py.File(path, "r+") as f:
        change(f)
        if digest:
            arrays = {k: f[k][()] for k in dataset.SPLITS}
            header = dataset._header(arrays, f.attrs)
            f.attrs["content_sha256"] = dataset.content_digest(arrays, header)
        f.attrs["attrs_sha256"] = dataset._attrs_sha256(f.attrs)


def replace(f: h5py.File, key: str, **create) -> None:
    del f[key]
    f.create_dataset(key, **create)


# Bounded resources (item 5)


@pytest.mark.parametrize(
    "text, words",
    [
        ("a: &a [1, 2]\nb: [*a, *a]\n", "line 2: the alias *a repeats a value"),
        ("study: x\nstudy: y\n", "line 2: the key 'study' is given twice"),
        (
            "training:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n",
            "line 4: the key 'lr' is given twice",
        ),
    ],
)
def test_a_config_with_aliases_or_a_key_twice_stops_in_one_line(tmp_path, text, words):
    """Nine nested aliases made a config of a few lines one of 387 million values, and the
    config check walked them for ever; a key given twice silently kept its last value."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(text)
    proc = snakemake(tmp_path, "-n", "--configfile", REPO / "config.yaml", overlay, check=False)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and words in lines[0], lines


def test_the_alias_bomb_stops_at_once(tmp_path):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    overlay = tmp_path / "bomb.yaml"
    overlay.write_text("\n".join(lines) + "\nextra: *a8\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "-d", tmp_path, "-n",
         "--cores", "1", "--configfile", REPO / "config.yaml", overlay],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "alias *a0 repeats a value" in proc.stderr + proc.stdout


@pytest.fixture
def fashion_folder(tmp_path) -> Path:
    folder = tmp_path / "fashion"
    if not (SHARED_DATA / "FashionMNIST" / "raw").is_dir():
        pytest.skip("the real Fashion-MNIST files are not on this machine")
    shutil.copytree(SHARED_DATA / "FashionMNIST" / "raw", folder)
    return folder


def test_a_gzip_that_inflates_past_its_file_or_a_file_too_large_is_refused(
    fashion_folder, tmp_path
):
    """The IDX sizes are known: a 100 KB .gz that inflates to 100 MB, and a 4 GB (sparse) plain
    file, are refused before they are inflated or read."""
    labels = fashion_folder / "train-labels-idx1-ubyte"
    labels.unlink()
    (fashion_folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(100 << 20)))
    proc = cli("prepare", "fashion-mnist", "--folder", fashion_folder, "--out", tmp_path / "o.h5",
               check=False)  # fmt: skip
    assert_one_line_error(proc, "inflates past the 60008 bytes")
    (fashion_folder / "train-labels-idx1-ubyte.gz").unlink()
    with open(labels, "wb") as f:
        f.truncate(4 << 30)
    proc = cli("prepare", "fashion-mnist", "--folder", fashion_folder, "--out", tmp_path / "o.h5",
               check=False)  # fmt: skip
    assert_one_line_error(proc, "more than the 60008 it holds")
    assert not (tmp_path / "o.h5").exists()


def test_an_array_declaring_more_than_memory_is_refused_before_allocating(synthetic):
    """A chunked, compressed array of 10^12 bytes in a file of kilobytes (no chunk written):
    refused against the machine's memory, not the file's size."""
    huge = {"shape": (10**6, 1, 1000, 1000), "dtype": "u1", "chunks": (1, 1, 100, 100)}
    rewrite(synthetic, lambda f: replace(f, "x_train", **huge, compression="gzip"), digest=False)
    assert synthetic.stat().st_size < 8 << 20
    with pytest.raises(UserError, match="more than this machine's available memory"):
        load_dataset(synthetic)


@pytest.mark.parametrize("how", ["external link", "external storage", "virtual dataset"])
def test_a_file_that_refers_to_other_files_is_refused_without_opening_them(synthetic, tmp_path,
                                                                            how):  # fmt: skip
    """An array stored in another file, through an external link, external storage or a
    virtual dataset, here a FIFO (which would block a reader for ever): refused at once."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def change(f: h5py.File) -> None:
        shape = f["x_test"].shape
        del f["x_test"]
        if how == "external link":
            f["x_test"] = h5py.ExternalLink(str(fifo), "/x")
        elif how == "external storage":
            f.create_dataset("x_test", shape=shape, dtype="f4", external=[(str(fifo), 0, 1 << 20)])
        else:
            layout = h5py.VirtualLayout(shape=shape, dtype="f4")
            layout[:] = h5py.VirtualSource(str(fifo), "x", shape=shape)
            f.create_virtual_dataset("x_test", layout)

    rewrite(synthetic, change, digest=False)
    with deadline(60):
        proc = cli("train", "--network", "F1", "--data", synthetic, "--out", tmp_path / "r.h5",
                   check=False)  # fmt: skip
    assert_one_line_error(proc, "keeps data in other files", "self-contained copy")


@pytest.mark.parametrize("how", ["deep", "large"])
def test_a_hostile_result_json_is_one_line(trials, tmp_path, how):
    """A result JSON nested past the parser (a traceback before) or of 65 MiB (read whole)."""
    bad = tmp_path / "phi.json"
    if how == "deep":
        bad.write_text("[" * 100_000 + "]" * 100_000)
    else:
        with open(bad, "wb") as f:
            f.truncate(65 << 20)
    proc = cli("tables", "--sharpness", bad, "--out-dir", tmp_path / "t", check=False)
    assert_one_line_error(proc, "nests deeper" if how == "deep" else "more than a result's JSON")
    assert not (tmp_path / "t").exists()


# Words that are true (item 8)


def unprivileged(*args: object) -> subprocess.CompletedProcess:
    """`sharpminima ARGS` as root without the capabilities that let root read any file."""
    caps = "-dac_override,-dac_read_search"
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("dropping root's file capabilities needs root and setpriv")
    return subprocess.run(
        ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", sys.executable, "-m",
         "sharpminima", *map(str, args)],
        capture_output=True, text=True,
    )  # fmt: skip


def test_an_input_without_read_permission_says_so(synthetic, tmp_path):
    """Not "unreadable (truncated or corrupted?)", not "make it writable": permission."""
    synthetic.chmod(0)
    proc = unprivileged("train", "--network", "F1", "--data", synthetic, "--out", tmp_path / "r.h5")
    assert_one_line_error(proc, "cannot be read: permission denied", "make it readable")
    assert "corrupt" not in proc.stderr and "writable" not in proc.stderr


def test_a_raw_file_without_read_permission_says_so(tmp_path):
    root = tmp_path / "root"
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip("the real MNIST files are not on this machine")
    shutil.copytree(SHARED_DATA / "MNIST" / "raw", root / "MNIST" / "raw")
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").chmod(0)
    proc = unprivileged(
        "prepare", "mnist", "--root", root, "--no-download", "--out", tmp_path / "m.h5"
    )
    assert_one_line_error(proc, "Permission denied", "make it readable")
    assert "corrupt" not in proc.stderr and "writable" not in proc.stderr


@pytest.mark.parametrize("source", ["mnist", "fashion-mnist"])
def test_the_other_datasets_intact_file_is_named_as_such(tmp_path, source):
    """Fashion-MNIST's files in MNIST's folder (and the reverse): named, not "corrupted"."""
    other = "FashionMNIST" if source == "mnist" else "MNIST"
    if not (SHARED_DATA / other / "raw").is_dir():
        pytest.skip(f"the real {other} files are not on this machine")
    folder = tmp_path / ("MNIST" if source == "mnist" else "FashionMNIST") / "raw"
    shutil.copytree(SHARED_DATA / other / "raw", folder)
    proc = cli("prepare", source, "--root", tmp_path, "--no-download", "--out", tmp_path / "o.h5",
               check=False)  # fmt: skip
    name = "Fashion-MNIST's" if source == "mnist" else "MNIST's"
    assert_one_line_error(proc, f"is {name} ", "intact but of another dataset")
    assert "corrupt" not in proc.stderr and "damaged" not in proc.stderr


def test_a_compressed_dataset_is_read_and_an_unknown_filter_is_named(synthetic, tmp_path):
    """A valid dataset file whose arrays are gzip-compressed loads the same arrays (before:
    "claims ... more than the file holds", as its arrays were larger than the file); one whose
    filter this installation lacks is named as such."""
    want = load_dataset(synthetic)

    def compress(f: h5py.File) -> None:
        for key in dataset.SPLITS:
            data = f[key][()]
            replace(f, key, data=data, chunks=data.shape, compression="gzip")

    rewrite(synthetic, compress)
    got = load_dataset(synthetic)
    assert got.x_train.equal(want.x_train) and got.y_test.equal(want.y_test)

    def unknown(f: h5py.File) -> None:
        data = f["y_test"][()]
        del f["y_test"]
        y = f.create_dataset("y_test", shape=data.shape, dtype=data.dtype, chunks=data.shape,
                             compression=32001, allow_unknown_filter=True)  # fmt: skip
        y.id.write_direct_chunk((0,), data.tobytes())

    rewrite(synthetic, unknown, digest=False)
    with pytest.raises(UserError, match="cannot decode: rewrite the file without it"):
        load_dataset(synthetic)


def test_labels_of_the_wrong_shape_name_the_shape(synthetic):
    rewrite(synthetic, lambda f: replace(f, "y_train", data=f["y_train"][()][:, None]))
    with pytest.raises(UserError, match=r"labels of shape \(30, 1\)"):
        load_dataset(synthetic)


# Readers of crafted files (item 6)


def craft_run(source: Path, path: Path, change) -> Path:
    """A copy of run `source` changed by `change(f)`, with every digest made consistent again."""
    shutil.copy(source, path)
    with h5py.File(path, "r+") as f:
        change(f)
        for name in ["init", "final", *(f"iterates/{k}" for k in f["iterates"])]:
            group = f[name]
            group.attrs["sha256"] = store._digest([(k, group[k][()]) for k in group])
        hist = f["history"]
        columns = [(k, hist[k][()]) for k in json.loads(hist.attrs["columns"])]
        hist.attrs["sha256"] = store._digest(columns)
        f.attrs["attrs_sha256"] = store._attrs_digest(f.attrs)
    return path


def wider_weight(f: h5py.File) -> None:
    key = next(iter(f["final"]))
    x = f["final"][key][()]
    del f["final"][key]
    f["final"][key] = np.zeros((*x.shape[:-1], x.shape[-1] + 1), x.dtype)


def empty_history(f: h5py.File) -> None:
    for key in json.loads(f["history"].attrs["columns"]):
        x = f["history"][key][()]
        del f["history"][key]
        f["history"][key] = x[:0]


def text_history(f: h5py.File) -> None:
    x = f["history"]["train_loss"][()]
    del f["history"]["train_loss"]
    f["history"]["train_loss"] = np.array([b"abc"] * len(x))


CRAFTED = {
    "a weight one column wider": (wider_weight, "does not fit network F1"),
    "an unknown network": (lambda f: f.attrs.__setitem__("network", "F9"), "network 'F9'"),
    "epochs 'abc'": (lambda f: f.attrs.__setitem__("epochs", "abc"), "has epochs 'abc'"),
    "seed 2.5": (lambda f: f.attrs.__setitem__("seed", 2.5), "has seed 2.5"),
    "no history rows": (empty_history, "no history of numbers per epoch"),
    "a history column of text": (text_history, "no history of numbers per epoch"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
@pytest.mark.parametrize("command", ["sharpness", "tables"])
def test_a_run_crafted_with_consistent_digests_is_one_line(trials, tmp_path, case, command):
    """Digests vouch for bytes, not for sense: a crafted run whose digests agree reached
    load_state_dict's traceback (a wider weight), a KeyError or IndexError in `tables` (an
    unknown network, no history), or passed (epochs "abc"). One line each, nothing written;
    `tables` reads no weight, so a wider one leaves its table right."""
    change, words = CRAFTED[case]
    run = craft_run(trials["SB"][0], tmp_path / "run.h5", change)
    if command == "sharpness":
        args = ["sharpness", run, "--iters", "1", "--out", tmp_path / "phi.json"]
    else:
        args = ["tables", "--runs", run, "--out-dir", tmp_path / "tables"]
    proc = cli(*args, check=False)
    if command == "tables" and change is wider_weight:  # Table 2 reads no weight: still right
        assert proc.returncode == 0, proc.stderr
        return
    assert_one_line_error(proc, words, "train it again" if "network" not in case else "")
    assert not (tmp_path / "phi.json").exists() and not (tmp_path / "tables").exists()
