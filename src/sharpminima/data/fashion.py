"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): 70,000 real 28×28 grayscale images of 10
clothing classes, the real-image stand-in for CIFAR-10 on machines that cannot fetch it.

Read from torchvision's raw folder (uncompressed IDX files) or from Debian's
`dataset-fashion-mnist` (the same files gzipped). Debian recompressed the archives, so the
upstream `.gz` MD5s do not apply: every file is checked against the MD5 of its *uncompressed*
contents before a byte of it is parsed. `pad32-rgb` makes the conv-shaped variant that C1-C4
take unchanged (docs/formats.md says why this transform).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..guard import note_input
from .dataset import FASHION_MD5, IDX_BYTES, known_idx, write_dataset

FILES = FASHION_MD5  # uncompressed IDX file -> MD5 of its contents
DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
SIZE = 28


def pad32_rgb(x: np.ndarray) -> np.ndarray:
    """N×1×28×28 → N×3×32×32: two zero pixels on every side (the images' own background, so the
    border adds no edge), the gray channel repeated three times (the first conv layer then has
    CIFAR's 3 input channels, its parameter count and its Glorot fan-in)."""
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(padded, 3, axis=1))


# Transform name -> function of the N×1×28×28 uint8 images; the dataset file records the name.
TRANSFORMS = {"none": lambda x: x, "pad32-rgb": pad32_rgb}


def default_folder(root: str | Path) -> Path:
    return Path(root) / "FashionMNIST" / "raw"


def _found(folder: Path, name: str) -> Path | None:
    """The file itself, or its gzipped copy (Debian's layout)."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _contents(path: Path) -> bytes:
    """The uncompressed bytes of an IDX file, checked against their MD5 before anything parses
    them; a damaged gzip stream is named as such. The sizes are known, so neither the file nor
    what it inflates to is read past them (a small .gz can inflate to any size)."""
    name = path.name.removesuffix(".gz")
    note_input(path)
    limit = IDX_BYTES[name]
    try:
        if path.stat().st_size > limit + (1 << 20):
            raise ValueError(f"{path.stat().st_size} bytes, more than the {limit} it holds")
        raw = path.read_bytes()
        data = _inflate(raw, limit) if path.suffix == ".gz" else raw
    except PermissionError:
        raise  # not damaged: the command line says to make it readable
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise UserError(
            f"Fashion-MNIST file {path} is unreadable ({e}): replace it with the original "
            f"(Debian: apt-get install --reinstall dataset-fashion-mnist)"
        ) from None
    found = hashlib.md5(data).hexdigest()
    if found != FILES[name] and known_idx(found):
        raise UserError(
            f"Fashion-MNIST file {path} is {known_idx(found)}, intact but of another dataset: "
            "put Fashion-MNIST's files there (or prepare that dataset from them)"
        )
    if found != FILES[name]:
        raise UserError(
            f"Fashion-MNIST file {path} is damaged (truncated or altered: the MD5 of its "
            f"contents is not {FILES[name]}): replace it with the original file"
        )
    return data


def _inflate(raw: bytes, limit: int) -> bytes:
    """gzip.decompress, but refused past `limit` bytes before they are inflated."""
    data, rest = b"", raw
    while rest:
        member = zlib.decompressobj(wbits=31)
        data += member.decompress(rest, limit + 1 - len(data))
        if len(data) > limit:
            raise ValueError(f"it inflates past the {limit} bytes the file holds")
        if not member.eof:
            raise EOFError("the gzip stream is cut")
        rest = member.unused_data
    return data


def parse_idx(data: bytes, shape: tuple[int, ...], what: str) -> np.ndarray:
    """An IDX array of unsigned bytes whose dimensions after the first are `shape`."""
    ndim = len(shape) + 1
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes([0, 0, 8, ndim]):
        raise UserError(f"{what} is not an IDX file of unsigned bytes with {ndim} dimensions")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != shape or len(data) != header + int(np.prod(dims)):
        raise UserError(f"{what} has dimensions {dims} and {len(data) - header} data bytes")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _download(root: Path) -> None:
    """torchvision's download of the upstream archives (their .gz MD5s checked by it) into
    ROOT/FashionMNIST/raw; our own check of the contents follows."""
    from torchvision.datasets import FashionMNIST

    with contextlib.redirect_stdout(io.StringIO()):  # its progress would fill our stdout
        FashionMNIST(str(root), train=True, download=True)


def _files(root: Path, folder: Path | None, download: bool) -> dict[str, Path]:
    where = folder or default_folder(root)
    if where.exists() and not where.is_dir():
        raise UserError(f"Fashion-MNIST folder {where} is a file, not a folder: name the folder")
    found = {name: _found(where, name) for name in FILES}
    if None in found.values() and download and folder is None:
        with contextlib.suppress(Exception):  # offline: URLError, OSError, RuntimeError
            _download(root)
        found = {name: _found(where, name) for name in FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        get = "" if _found(DEBIAN, missing[0]) else "apt-get install dataset-fashion-mnist and "
        raise UserError(
            f"Fashion-MNIST not found in {where}: put {', '.join(missing)} there, uncompressed "
            f"or .gz, or {get}read Debian's copies with --folder {DEBIAN} (config: the "
            f"dataset's folder key)"
        )
    return found


def prepare_fashion_mnist(
    root: str | Path,
    out: str | Path,
    folder: str | Path | None = None,
    transform: str = "none",
    download: bool = True,
) -> None:
    """Fashion-MNIST's four IDX files (under ROOT/FashionMNIST/raw, or `folder`) → dataset file,
    NCHW uint8 scaled by 1/255 at load, through `transform`."""
    if transform not in TRANSFORMS:
        raise UserError(f"unknown transform {transform!r}: choose one of {', '.join(TRANSFORMS)}")
    files = _files(Path(root), Path(folder) if folder else None, download)
    contents = {name: _contents(path) for name, path in files.items()}  # all checked, then parsed
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = parse_idx(contents[f"{prefix}-images-idx3-ubyte"], (SIZE, SIZE), f"{split} images")
        y = parse_idx(contents[f"{prefix}-labels-idx1-ubyte"], (), f"{split} labels")
        arrays[f"x_{split}"] = TRANSFORMS[transform](x[:, None])
        arrays[f"y_{split}"] = y.astype(np.int64)
    checksums = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files.values()
    }
    write_dataset(
        out,
        "fashion-mnist",
        arrays,
        10,
        f"Fashion-MNIST IDX files in {files['train-images-idx3-ubyte'].parent}",
        1 / 255,
        checksums,
        transform=transform,
    )
