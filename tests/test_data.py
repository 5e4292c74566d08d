import urllib.error

import h5py
import numpy as np
import pytest
import torch

from sharpminima.cli import main
from sharpminima.data.dataset import load_dataset, make_synthetic

from .conftest import REPO, SHARED_DATA, assert_one_line_error, cli


def test_synthetic_roundtrip_is_seeded(tmp_path):
    make_synthetic(tmp_path / "a.h5", 50, 20, (3, 4, 4), 5, seed=3)
    make_synthetic(tmp_path / "b.h5", 50, 20, (3, 4, 4), 5, seed=3)
    a, b = load_dataset(tmp_path / "a.h5"), load_dataset(tmp_path / "b.h5")
    assert a.x_train.shape == (50, 3, 4, 4) and a.x_test.shape == (20, 3, 4, 4)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.num_classes == 5 and a.input_shape == (3, 4, 4)
    assert torch.equal(a.x_train, b.x_train) and a.content_sha256 == b.content_sha256
    make_synthetic(tmp_path / "c.h5", 50, 20, (3, 4, 4), 5, seed=4)
    assert load_dataset(tmp_path / "c.h5").content_sha256 != a.content_sha256


@pytest.mark.slow
def test_mnist_from_shared_data(tmp_path):
    out = tmp_path / "mnist.h5"
    cli("prepare", "mnist", "--root", SHARED_DATA, "--out", out)
    ds = load_dataset(out)
    assert len(ds.x_train) == 60_000 and len(ds.x_test) == 10_000
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1  # pixels / 255
    assert sorted(ds.y_train.unique().tolist()) == list(range(10))
    with h5py.File(out) as f:
        assert f["x_train"].dtype == np.uint8  # stored compactly, scaled at load
        assert "train-images-idx3-ubyte" in f.attrs["source_checksums"]


def test_mnist_missing_offline_is_one_line(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    out = tmp_path / "mnist.h5"
    assert main(["prepare", "mnist", "--root", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MNIST/raw" in err[0] and "train-images-idx3-ubyte" in err[0]
    assert not out.exists()


def test_mnist_missing_no_download(tmp_path):
    out = tmp_path / "mnist.h5"
    proc = cli("prepare", "mnist", "--root", tmp_path, "--no-download", "--out", out, check=False)
    assert_one_line_error(proc, "MNIST not found", "put")
    assert not out.exists()


def test_unknown_dataset_source(tmp_path):
    proc = cli("prepare", "imagenet", "--out", tmp_path / "x.h5", check=False)
    assert_one_line_error(proc, "invalid choice: 'imagenet'", "mnist", "synthetic")
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing_key", "bad_labels"])
def test_damaged_dataset_is_refused(tmp_path, mnist_like, damage):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(mnist_like.read_bytes())
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif damage == "garbage":
        bad.write_bytes(b"not an hdf5 file" * 100)
    elif damage == "missing_key":
        with h5py.File(bad, "a") as f:
            del f["y_test"]
    else:
        with h5py.File(bad, "a") as f:
            f["y_train"][0] = 99
    out = tmp_path / "run.h5"
    proc = cli("train", "--network", "F1", "--data", bad, "--out", out, check=False)
    assert_one_line_error(proc, str(bad), "sharpminima prepare")
    assert not out.exists() and not out.with_name("run.h5.partial").exists()


def test_hdf5_files_open_with_best_effort_locking(tmp_path, mnist_like):
    """Network file systems often refuse locks; HDF5's default locking then fails every open."""
    from sharpminima.atomic import open_h5

    with open_h5(mnist_like) as f:
        assert f.id.get_access_plist().get_file_locking() == (True, True)  # lock, ignore refusal
    src = (REPO / "src" / "sharpminima").rglob("*.py")
    offenders = [p.name for p in src if "h5py.File(" in p.read_text() and p.name != "atomic.py"]
    assert offenders == [], "open HDF5 files through atomic.open_h5"
