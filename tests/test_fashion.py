"""Fashion-MNIST: the four IDX files from torchvision's raw folder or Debian's .gz copies,
checked by the MD5s of their contents before parsing, and the conv-shaped variant for C1-C4."""

import gzip
import json
import shutil

import h5py
import numpy as np
import pytest

from sharpminima.data.dataset import load_dataset
from sharpminima.data.fashion import FILES, pad32_rgb, parse_idx
from sharpminima.models import build, check_fits, count_params
from sharpminima.store import Run
from sharpminima.train.trainer import TrainConfig, train

from .conftest import SHARED_DATA, assert_one_line_error, cli

RAW = SHARED_DATA / "FashionMNIST" / "raw"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The real data set prepared both ways: 1x28x28 (F1) and pad32-rgb (C1-C4)."""
    folder = tmp_path_factory.mktemp("fashion")
    plain, conv = folder / "fashion.h5", folder / "fashion32.h5"
    cli("prepare", "fashion-mnist", "--root", SHARED_DATA, "--out", plain)
    conv_args = ("--transform", "pad32-rgb", "--out", conv)
    cli("prepare", "fashion-mnist", "--root", SHARED_DATA, *conv_args)
    return plain, conv


def test_real_files_prepare_with_their_checksums(prepared):
    plain = load_dataset(prepared[0])
    assert plain.name == "fashion-mnist" and plain.num_classes == 10
    assert len(plain.x_train) == 60_000 and len(plain.x_test) == 10_000
    assert plain.input_shape == (1, 28, 28)
    assert plain.x_train.min() == 0 and plain.x_train.max() == 1  # pixels / 255
    assert np.bincount(plain.y_train.numpy()).tolist() == [6000] * 10  # 6,000 per class
    with h5py.File(prepared[0]) as f:
        assert f["x_train"].dtype == np.uint8 and f.attrs["transform"] == "none"
        assert set(json.loads(f.attrs["source_checksums"])) == set(FILES)


def test_conv_variant_is_the_padded_gray_image_in_three_channels(prepared):
    plain, conv = (load_dataset(p) for p in prepared)
    assert conv.input_shape == (3, 32, 32)
    with h5py.File(prepared[1]) as f:
        assert f.attrs["transform"] == "pad32-rgb"
    for split in ("x_train", "x_test"):
        a, b = getattr(plain, split), getattr(conv, split)
        assert (b[:, :, 2:30, 2:30] == a.expand(-1, 3, -1, -1)).all()
        border = b.clone()
        border[:, :, 2:30, 2:30] = 0
        assert border.abs().sum() == 0
    assert (conv.y_train == plain.y_train).all() and conv.content_sha256 != plain.content_sha256


def test_pad32_rgb_exact_output():
    x = np.arange(2 * 28 * 28, dtype=np.uint16).reshape(2, 1, 28, 28).astype(np.uint8)
    y = pad32_rgb(x)
    assert y.shape == (2, 3, 32, 32) and y.dtype == np.uint8 and y.flags.c_contiguous
    expected = np.zeros((2, 3, 32, 32), np.uint8)
    for c in range(3):
        expected[:, c, 2:30, 2:30] = x[:, 0]
    assert np.array_equal(y, expected)


def test_conv_networks_keep_their_cifar10_parameter_counts(prepared):
    conv = load_dataset(prepared[1])
    for name, params in (("C1", 1_757_834), ("C2", 14_991_946)):
        check_fits(name, conv.input_shape, conv.num_classes)
        model = build(name, num_classes=conv.num_classes)
        assert count_params(model) == count_params(build(name)) == params
        model.eval()
        assert model(conv.x_test[:4]).shape == (4, 10)
    with pytest.raises(Exception, match=r"pad32-rgb"):
        check_fits("C1", load_dataset(prepared[0]).input_shape, 10)
    with pytest.raises(Exception, match=r"\(784,\)"):
        check_fits("F1", conv.input_shape, 10)


def test_debian_gz_folder_gives_the_same_dataset(prepared, tmp_path):
    """Debian's package ships the files gzipped (recompressed: their .gz MD5s are not
    upstream's); the contents, and so the dataset, are the same."""
    folder = tmp_path / "debian"
    folder.mkdir()
    for name in FILES:
        with open(RAW / name, "rb") as src, gzip.open(folder / f"{name}.gz", "wb", 1) as dst:
            shutil.copyfileobj(src, dst)
    out = tmp_path / "from_gz.h5"
    cli("prepare", "fashion-mnist", "--folder", folder, "--out", out)
    assert load_dataset(out).content_sha256 == load_dataset(prepared[0]).content_sha256


def _copy_raw(tmp_path):
    folder = tmp_path / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    for name in FILES:
        shutil.copy(RAW / name, folder / name)
    return folder


@pytest.mark.parametrize("damage", ["truncate", "flip", "missing", "bad_gzip", "folder_is_file"])
def test_damaged_or_missing_files_are_one_line(tmp_path, damage):
    folder = _copy_raw(tmp_path)
    victim = folder / "train-labels-idx1-ubyte"
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[:-100])
    elif damage == "flip":
        victim.write_bytes(data[:20] + bytes([data[20] ^ 1]) + data[21:])
    elif damage == "missing":
        victim.unlink()
    elif damage == "bad_gzip":
        victim.unlink()
        victim = victim.with_name(victim.name + ".gz")
        victim.write_bytes(gzip.compress(data)[:-50])
    out = tmp_path / "out.h5"
    args = ["prepare", "fashion-mnist", "--root", tmp_path, "--no-download", "--out", out]
    if damage == "folder_is_file":
        args += ["--folder", victim]
    proc = cli(*args, check=False)
    words = {
        "truncate": (str(victim), "damaged", "MD5"),
        "flip": (str(victim), "damaged", "MD5"),
        "missing": ("not found", "train-labels-idx1-ubyte", "--folder /usr/share/datasets/"),
        "bad_gzip": (str(victim), "unreadable"),
        "folder_is_file": (str(victim), "is a file, not a folder"),
    }[damage]
    assert_one_line_error(proc, *words)
    assert not out.exists() and list(tmp_path.glob(".out.h5*")) == []


def test_missing_offline_says_where_to_put_them(tmp_path, monkeypatch):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    out = tmp_path / "out.h5"
    root = tmp_path / "nowhere"
    proc = cli("prepare", "fashion-mnist", "--root", root, "--out", out, check=False)
    assert_one_line_error(proc, "FashionMNIST/raw", "Debian's copies with --folder")
    assert not out.exists()


@pytest.mark.parametrize(
    "data, shape, message",
    [
        (b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02", (), "2 data bytes"),
        (b"\x00\x00\x09\x01" + (1).to_bytes(4, "big") + b"\x01", (), "not an IDX file"),
        (b"\x00\x00\x08", (), "not an IDX file"),
        (b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (1, 2, 2)) + bytes(4),
         (28, 28), "dimensions (1, 2, 2)"),
    ],
)  # fmt: skip
def test_idx_parser_checks_header_and_size(data, shape, message):
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_idx(data, shape, "labels")


def test_idx_parser_reads_big_endian_dimensions():
    data = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (2, 1, 3)) + bytes(range(6))
    assert parse_idx(data, (1, 3), "x").tolist() == [[[0, 1, 2]], [[3, 4, 5]]]


def test_c1_trains_on_the_conv_variant(prepared, tmp_path):
    """One step of C1 at the real input size: the run records the dataset it read."""
    from sharpminima.data.dataset import write_dataset

    conv = load_dataset(prepared[1])
    small = tmp_path / "small.h5"
    arrays = {
        "x_train": (conv.x_train[:300].numpy() * 255).round().astype(np.uint8),
        "y_train": conv.y_train[:300].numpy(),
        "x_test": (conv.x_test[:100].numpy() * 255).round().astype(np.uint8),
        "y_test": conv.y_test[:100].numpy(),
    }
    write_dataset(small, "fashion-mnist", arrays, 10, "test", 1 / 255, transform="pad32-rgb")
    cfg = TrainConfig("C1", batch_size=100, max_epochs=1, stop="fixed", val_size=100)
    run = Run(train(cfg, small, tmp_path / "run.h5", label="SB", log=lambda m: None))
    assert run.attrs["dataset"] == "fashion-mnist" and len(run.history) == 2
