"""CIFAR preparation on small files in the real on-disk layout (the real data is not here)."""

import hashlib
import pickle
import urllib.error

import numpy as np
import pytest
import torchvision.datasets

from sharpminima.cli import main
from sharpminima.data.dataset import cifar_arrays, load_dataset


def test_conversion_to_nchw_keeps_every_pixel():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)  # torchvision's NHWC
    arrays = cifar_arrays(x, [3, 1, 4, 1], x[:2], [5, 9])
    assert arrays["x_train"].shape == (4, 3, 32, 32) and arrays["x_test"].shape == (2, 3, 32, 32)
    assert arrays["x_train"][2, 1, 5, 7] == x[2, 5, 7, 1]
    assert arrays["x_train"].flags["C_CONTIGUOUS"]
    assert arrays["y_train"].dtype == np.int64 and list(arrays["y_test"]) == [5, 9]


def _write_cifar10(folder, n=10, seed=0):
    """The python-version layout: pickled dicts of flat CHW rows (as the official archive)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows[name] = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n))
        (folder / name).write_bytes(pickle.dumps({"data": rows[name], "labels": labels}))
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return rows


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _offline(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)


def test_prepare_cifar10_reads_the_real_layout(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    rows = _write_cifar10(folder)
    # Our files pass only if torchvision's official checksums are theirs.
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, _md5(folder / f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / "batches.meta")})
    _offline(monkeypatch)
    out = tmp_path / "cifar10.h5"
    assert main(["prepare", "cifar10", "--root", str(tmp_path), "--out", str(out)]) == 0
    data = load_dataset(out)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert len(data.x_train) == 50 and len(data.x_test) == 10
    first = rows["data_batch_1"][0].reshape(3, 32, 32).astype(np.float32) / 255
    assert np.allclose(data.x_train[0].numpy(), first)
    assert float(data.x_train.max()) <= 1.0


@pytest.mark.parametrize("download", [True, False])
def test_files_failing_the_checksum_are_never_unpickled(tmp_path, monkeypatch, capsys, download):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(folder)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Payload(), "labels": []}))
    _offline(monkeypatch)
    out = tmp_path / "cifar10.h5"
    args = ["prepare", "cifar10", "--root", str(tmp_path), "--out", str(out)]
    assert main(args + ([] if download else ["--no-download"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not match the official checksums" in err[0], err
    assert not marker.exists() and not out.exists()


def test_cifar100_missing_offline_is_one_line(tmp_path, monkeypatch, capsys):
    _offline(monkeypatch)
    out = tmp_path / "c.h5"
    assert main(["prepare", "cifar100", "--root", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cifar100 not found" in err[0] and "cifar-100-python" in err[0]
    assert not out.exists()
