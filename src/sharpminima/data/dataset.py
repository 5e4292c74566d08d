"""Datasets in one HDF5 format (see docs/formats.md); training reads nothing else.

Images are stored as uint8 with a `scale` attribute (1/255) applied at load time, so a
prepared file is as small as the source and loading yields the paper's [0, 1] inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from ..atomic import DAMAGED, atomic_path, json_sha256, open_h5, physical_memory, read_array
from ..errors import UserError, require_seed
from ..guard import note_input

FORMAT = "sharpminima-dataset"
FORMAT_VERSION = 2  # 2: the digest covers dtypes, shapes and every attribute
SPLITS = ("x_train", "y_train", "x_test", "y_test")
# The four IDX files as torchvision unpacks the official archives, by MD5 (the checksums that
# torchvision itself checks are of the .gz archives, gone once unpacked).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_FILES = tuple(MNIST_MD5)
FASHION_MD5 = {  # the same names' contents in Fashion-MNIST (../shared/data/FashionMNIST/MD5SUMS)
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

IDX_BYTES = {  # the size of each, the same in both: headers of 16 or 8 bytes, images or labels
    "train-images-idx3-ubyte": 16 + 60000 * 784,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 784,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}


def known_idx(md5: str) -> str | None:
    """What an intact IDX file of MNIST or Fashion-MNIST is, by the MD5 of its contents
    ("Fashion-MNIST's t10k-labels-idx1-ubyte"), so that the other dataset's file, put where one
    was expected, is named as such rather than called damaged."""
    for dataset, table in (("MNIST", MNIST_MD5), ("Fashion-MNIST", FASHION_MD5)):
        for name, digest in table.items():
            if digest == md5:
                return f"{dataset}'s {name}"
    return None


@dataclass
class Dataset:
    """A dataset loaded into memory as float32 inputs and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    content_sha256: str
    path: Path | None = None  # the file it was loaded from

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def matches(self, recorded: str) -> bool:
        """Whether this is the dataset whose digest a run recorded (by format 1 or 2)."""
        return recorded == self.content_sha256 or (
            self.path is not None and recorded == legacy_sha256(self.path)
        )


def write_dataset(
    out: str | Path,
    name: str,
    arrays: dict[str, np.ndarray],
    num_classes: int,
    source: str,
    scale: float = 1.0,
    source_checksums: dict[str, str] | None = None,
    transform: str = "none",
) -> None:
    """Write `arrays` (x_train, y_train, x_test, y_test) atomically in the dataset format."""
    splits = {s: [(arrays[f"x_{s}"], arrays[f"y_{s}"])] for s in ("train", "test")}
    stream_dataset(
        out, name, splits, num_classes, source, scale, source_checksums, transform=transform
    )


def stream_dataset(
    out: str | Path,
    name: str,
    splits: dict[str, Iterable[tuple[np.ndarray, np.ndarray]]],
    num_classes: int,
    source: str,
    scale: float = 1.0,
    source_checksums: dict[str, str] | None = None,
    details: Callable[[], dict] | None = None,
    transform: str = "none",
) -> None:
    """Write a dataset from (inputs, labels) pieces, train then test, atomically.

    The content hash is updated as pieces pass, so a corpus larger than memory (TIMIT: 1M
    frames) streams through; see `_write_split` for the memory this takes. `details` is called
    once every piece is written, so it can report what the streams met (stored as JSON).
    `transform` names what was done to the source's inputs (fashion.TRANSFORMS), recorded and
    hashed with them.
    """
    digest = hashlib.sha256()
    with atomic_path(out) as tmp, open_h5(tmp, "w") as f:
        counts = {s: _write_split(f, s, splits[s], digest, name) for s in ("train", "test")}
        f.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            name=name,
            num_classes=int(num_classes),
            input_shape=np.asarray(f["x_train"].shape[1:], dtype=np.int64),
            n_train=counts["train"],
            n_test=counts["test"],
            scale=float(scale),
            source=source,
            source_checksums=json.dumps(source_checksums or {}),
            details=json.dumps(details() if details else {}),
            transform=transform,
        )
        digest.update(_header({k: f[k] for k in SPLITS}, f.attrs))
        f.attrs["content_sha256"] = digest.hexdigest()
        f.attrs["attrs_sha256"] = _attrs_sha256(f.attrs)


def _write_split(
    f: h5py.File,
    split: str,
    pieces: Iterable[tuple[np.ndarray, np.ndarray]],
    digest: hashlib._Hash,
    name: str,
    block_bytes: int = 32 << 20,
) -> int:
    """Append pieces to x_<split> in blocks of about 32 MB; keep the labels (8 bytes a row) and
    write them last, so the hash covers x then y as `load_dataset` reads them. Peak memory is
    one block, its concatenation and the labels. Returns the number of rows."""
    digest.update(f"x_{split}".encode())
    x_set, block, labels = None, [], []

    def flush() -> None:
        x = np.concatenate(block) if len(block) > 1 else block[0]
        n = len(x_set)
        x_set.resize(n + len(x), axis=0)
        x_set[n:] = x
        digest.update(np.ascontiguousarray(x).tobytes())
        block.clear()

    for x, y in pieces:
        if len(x) != len(y):
            raise ValueError(f"{split}: {len(x)} inputs but {len(y)} labels")
        if x_set is None:
            row = x.shape[1:]
            # ~1 MB chunks whatever the first piece's size (an utterance can be a few frames)
            chunk = max(1, (1 << 20) // max(1, x[:1].nbytes))
            x_set = f.create_dataset(
                f"x_{split}", (0, *row), x.dtype, maxshape=(None, *row), chunks=(chunk, *row)
            )
        block.append(x)
        labels.append(np.asarray(y, dtype=np.int64))
        if sum(b.nbytes for b in block) >= block_bytes:
            flush()
    if x_set is None:
        raise UserError(f"{name}: the {split} split has no examples")
    if block:
        flush()
    y = np.concatenate(labels)
    digest.update(f"y_{split}".encode())
    digest.update(y.tobytes())
    f.create_dataset(f"y_{split}", data=y)
    return len(y)


def _fail(path: Path, problem: str) -> UserError:
    return UserError(
        f"dataset file {path} {problem}: re-create it with `sharpminima prepare` "
        "(the same --out replaces it)"
    )


def load_dataset(path: str | Path) -> Dataset:
    """Read and validate a dataset file; any defect is one UserError naming the file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"dataset file {path} does not exist: create it with `sharpminima prepare`")
    try:
        with open_h5(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise _fail(path, f"is not a {FORMAT} file")
            version = f.attrs.get("format_version")
            if version != FORMAT_VERSION:
                raise _fail(path, f"has format version {version}, not {FORMAT_VERSION} "
                            "(written by an older sharpminima, or damaged)")  # fmt: skip
            for key in ("content_sha256", "attrs_sha256"):
                if key not in f.attrs:
                    raise _fail(path, f"has no {key} (written by another program, or damaged)")
            if _attrs_sha256(f.attrs) != _plain(f.attrs["attrs_sha256"]):
                raise _fail(path, "has attributes that do not match attrs_sha256 (corrupted)")
            missing = [k for k in SPLITS if k not in f]
            if missing:
                raise _fail(path, f"lacks {', '.join(missing)}")
            arrays = {k: read_array(f, k) for k in SPLITS}
            header = _header(arrays, f.attrs)
            attrs = dict(f.attrs)
    except UserError:
        raise
    except DAMAGED as e:
        raise _fail(path, f"is unreadable (truncated or corrupted? {e})") from None
    if content_digest(arrays, header) != _plain(attrs["content_sha256"]):  # ~2 s a GB
        raise _fail(path, "does not match its recorded content_sha256 (corrupted)")
    classes = _check_arrays(path, arrays, attrs)
    scale = float(attrs["scale"])

    def inputs(a: np.ndarray) -> torch.Tensor:
        """As training sees them (float32, scaled), checked there: finite float64 inputs can
        overflow in float32, and a tiny scale can turn every input to 0."""
        x = torch.from_numpy(a).to(torch.float32).mul_(scale)
        if not torch.isfinite(x).all():
            raise _fail(path, f"has inputs that overflow float32 once scaled by {scale:g} "
                        f"(largest |x| {np.abs(a).max():.3g})")  # fmt: skip
        if a.any() and not x.any():
            raise _fail(path, f"has a scale {scale:g} that turns every input to 0 in float32")
        return x

    return Dataset(
        name=str(_plain(attrs["name"])),
        x_train=inputs(arrays["x_train"]),
        y_train=torch.from_numpy(arrays["y_train"]).long(),
        x_test=inputs(arrays["x_test"]),
        y_test=torch.from_numpy(arrays["y_test"]).long(),
        num_classes=classes,
        content_sha256=str(_plain(attrs["content_sha256"])),
        path=path,
    )


def _check_arrays(path: Path, arrays: dict[str, np.ndarray], attrs: dict) -> int:
    """What a consistent digest cannot vouch for (a file crafted, not damaged): integer labels
    in range, finite inputs of one shape, a finite positive scale. Returns the class count."""
    classes, scale = _plain(attrs.get("num_classes")), _plain(attrs.get("scale"))
    if not isinstance(classes, int) or classes < 1:
        raise _fail(path, f"has num_classes {classes!r}, not a positive integer")
    if not isinstance(scale, float) or not np.isfinite(scale) or scale <= 0:
        raise _fail(path, f"has scale {scale!r}, not a finite positive number")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if y.ndim != 1 or x.ndim < 2:
            raise _fail(path, f"has {split} inputs of shape {x.shape} and labels of shape "
                        f"{y.shape}: labels must be one number per input, (N,)")  # fmt: skip
        if len(x) != len(y) or len(x) == 0:
            raise _fail(path, f"has {len(x)} {split} inputs but {len(y)} labels")
        if y.dtype.kind not in "iu":
            raise _fail(path, f"has {split} labels of type {y.dtype}, not integers")
        if y.min() < 0 or y.max() >= classes:
            raise _fail(path, f"has {split} labels outside [0, {classes})")
        if x.dtype.kind not in "uif" or (x.dtype.kind == "f" and not np.isfinite(x).all()):
            raise _fail(path, f"has {split} inputs that are not finite numbers ({x.dtype})")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise _fail(path, "has train and test inputs of different shapes")
    return classes


def _plain(value: object) -> object:
    """An HDF5 attribute as a plain Python value (what the digest and the checks see)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


MEANING = ("format", "format_version", "num_classes", "scale", "transform", "input_shape",
           "n_train", "n_test")  # fmt: skip


def _header(arrays: Mapping[str, object], attrs: Mapping[str, object]) -> bytes:
    """What the bytes mean, hashed after them: each array's dtype (with byte order) and shape,
    and the attributes that say how to read them (not the provenance: the same images from
    another copy of the source are the same dataset)."""
    header = {
        "arrays": {k: [arrays[k].dtype.str, list(arrays[k].shape)] for k in SPLITS},
        "attrs": {k: _plain(attrs.get(k)) for k in MEANING},
    }
    return json.dumps(header, sort_keys=True, default=str).encode()


def _attrs_sha256(attrs: Mapping[str, object]) -> str:
    """SHA-256 of every attribute but itself (the provenance too: name, source, checksums)."""
    return json_sha256({k: _plain(v) for k, v in attrs.items() if k != "attrs_sha256"})


def content_digest(arrays: dict[str, np.ndarray], header: bytes) -> str:
    """The SHA-256 that `stream_dataset` records: each split's x then y as stored, then what
    they mean (`_header`: a flipped byte there would change every input silently)."""
    digest = hashlib.sha256()
    for split in ("train", "test"):
        for key in (f"x_{split}", f"y_{split}"):
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(arrays[key]))  # no copy: the buffer itself
    digest.update(header)
    return digest.hexdigest()


def legacy_sha256(path: str | Path) -> str:
    """The content_sha256 that format 1 recorded for the same arrays (arrays, class count,
    scale, transform), so that runs trained on a format-1 file still match it once re-created;
    only called on a file `load_dataset` has verified."""
    with open_h5(path, "r") as f:
        arrays = {k: read_array(f, k) for k in SPLITS}
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
    meaning = {"num_classes": attrs["num_classes"], "scale": attrs["scale"]}
    if attrs.get("transform", "none") != "none":
        meaning["transform"] = attrs["transform"]
    return content_digest(arrays, json.dumps(meaning).encode())


def _sha256_file(path: Path) -> str:
    return _digest_file(path, "sha256")


def _digest_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    note_input(path)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare_mnist(root: str | Path, out: str | Path, download: bool = True) -> None:
    """MNIST through torchvision (its IDX layout under ROOT/MNIST/raw) → dataset file.

    Downloads only when the files are missing and `download` is set; if that fails (offline),
    the error says where to put the files.
    """
    from torchvision.datasets import MNIST

    root = Path(root)
    raw = root / "MNIST" / "raw"

    def load(train: bool) -> MNIST:
        try:
            return MNIST(str(root), train=train, download=False)
        except RuntimeError:
            if not download:
                raise
        # torchvision prints download progress on stdout; keep our stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            return MNIST(str(root), train=train, download=True)

    for name, md5 in MNIST_MD5.items():  # before torchvision parses a damaged file
        path = raw / name
        if path.is_file() and path.stat().st_size != IDX_BYTES[name]:  # before reading it all
            raise UserError(
                f"MNIST file {path} is corrupted ({path.stat().st_size} bytes, not "
                f"{IDX_BYTES[name]}): replace it with the original file, or delete it to download"
            )
        found = _digest_file(path, "md5") if path.is_file() else md5
        if known_idx(found) and found != md5:
            raise UserError(
                f"MNIST file {path} is {known_idx(found)}, intact but of another dataset: put "
                "MNIST's files there (or prepare that dataset from them)"
            )
        if found != md5:
            raise UserError(
                f"MNIST file {path} is corrupted (truncated or altered: its MD5 is not the "
                "official one): replace it with the original file, or delete it to download"
            )
    try:
        train, test = load(True), load(False)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError offline
        raise UserError(
            f"MNIST not found in {raw} and not downloadable ({type(e).__name__}): put "
            f"{', '.join(MNIST_FILES)} there (or set data_root to a folder holding MNIST/raw)"
        ) from None
    arrays = {
        "x_train": train.data.numpy()[:, None],  # NCHW, uint8
        "y_train": train.targets.numpy(),
        "x_test": test.data.numpy()[:, None],
        "y_test": test.targets.numpy(),
    }
    checksums = {name: _sha256_file(raw / name) for name in MNIST_FILES if (raw / name).exists()}
    write_dataset(out, "mnist", arrays, 10, "torchvision.datasets.MNIST", 1 / 255, checksums)


CIFAR = {  # name -> torchvision class, classes, folder torchvision reads under the root
    "cifar10": ("CIFAR10", 10, "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", 100, "cifar-100-python"),
}


def cifar_arrays(x_train: np.ndarray, y_train, x_test: np.ndarray, y_test) -> dict[str, np.ndarray]:
    """torchvision's CIFAR arrays (N×32×32×3 uint8, label lists) → the dataset layout (NCHW)."""

    def nchw(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    return {
        "x_train": nchw(x_train),
        "y_train": np.asarray(y_train, dtype=np.int64),
        "x_test": nchw(x_test),
        "y_test": np.asarray(y_test, dtype=np.int64),
    }


def prepare_cifar(name: str, root: str | Path, out: str | Path, download: bool = True) -> None:
    """CIFAR-10/100 through torchvision (its python layout under ROOT) → dataset file.

    torchvision checks every file against the official MD5 before it unpickles anything (a
    pickle can run code), and downloads the official archive, checksummed, when files are
    missing and `download` is set.
    """
    import torchvision.datasets

    cls_name, classes, folder = CIFAR[name]
    cls = getattr(torchvision.datasets, cls_name)
    root = Path(root)
    found = (root / folder).is_dir()
    for path in (root / folder).iterdir() if found else ():
        note_input(path)  # what torchvision reads: never an output
    try:
        # torchvision prints download progress on stdout; keep our stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            train = cls(str(root), train=True, download=download)
            test = cls(str(root), train=False, download=download)
    except Exception as e:  # RuntimeError (missing/corrupt), URLError/OSError (offline)
        if found:
            raise UserError(
                f"{name} files in {root / folder} do not match the official checksums "
                f"({type(e).__name__}): delete that folder to download again, or put the "
                f"official python-version files there"
            ) from None
        raise UserError(
            f"{name} not found in {root / folder} and not downloadable ({type(e).__name__}): "
            f"put the official python-version archive's {folder}/ there (or set data_root)"
        ) from None
    arrays = cifar_arrays(train.data, train.targets, test.data, test.targets)
    files = [f for f, _ in train.train_list + train.test_list]
    checksums = {f: _sha256_file(root / folder / f) for f in files}
    write_dataset(
        out, name, arrays, classes, f"torchvision.datasets.{cls_name}", 1 / 255, checksums
    )


def make_synthetic(
    out: str | Path,
    n_train: int,
    n_test: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int = 0,
    noise: float = 1.0,
) -> None:
    """A small, seeded dataset of Gaussian class clusters for tests and demos.

    Class means are drawn with norm about 4 whatever the dimension, so with unit `noise` the
    classes overlap: the data are learnable but not solved in one epoch, like real data.
    """
    if min(n_train, n_test, num_classes, *input_shape) < 1:
        raise UserError("synthetic dataset sizes, shape and classes must all be positive")
    if not 0 <= noise <= 1e6:  # nan fails too; beyond 1e6 (the means' norm is 4) only noise
        raise UserError(f"--noise is {noise}: give a spread from 0 to 1e6")
    require_seed(seed)
    need = 12 * (n_train + n_test) * math.prod(input_shape)  # float32 inputs, a draw, a copy
    have = physical_memory()
    if need > have:
        raise UserError(
            f"a synthetic dataset of {n_train + n_test:,} examples of shape {input_shape} needs "
            f"about {need / 2**30:,.0f} GiB, more than this machine's {have / 2**30:.0f} GiB: "
            "give fewer examples"
        )
    rng = np.random.default_rng(seed)
    dim = int(np.prod(input_shape))
    means = (4 / np.sqrt(dim)) * rng.standard_normal((num_classes, dim)).astype(np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, n)
        x = means[y] + noise * rng.standard_normal((n, dim)).astype(np.float32)
        return x.reshape(n, *input_shape), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    write_dataset(out, "synthetic", arrays, num_classes, f"synthetic(seed={seed})")
