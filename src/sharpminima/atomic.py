"""File safety: a finished path only ever holds a finished file; HDF5 opens that work on NFS;
partial grids of points that a killed job resumes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from .errors import UserError


def open_h5(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """h5py.File with best-effort locking: HDF5 locks where the file system can, and carries on
    where it cannot (NFS and Lustre often refuse locks, and HDF5's default then fails every open).
    Nothing relies on the locks: each file has one writer, and readers open finished files.
    """
    return h5py.File(path, mode, locking="best-effort")


def open_point_cache(
    path: Path, identity: str, axes: dict[str, np.ndarray], columns: Iterable[str]
) -> h5py.File:
    """A grid of points still to evaluate (NaN) on `axes`, one dataset per column: the partial
    file at `path` if it is readable and was started for the same `identity`, else a fresh one,
    so a killed job resumes where it stopped and never mixes points of another computation."""
    shape = tuple(len(values) for values in axes.values())
    columns = tuple(columns)
    if path.exists():
        try:
            f = open_h5(path, "a")
            if f.attrs.get("identity") == identity and all(f[c].shape == shape for c in columns):
                return f
            f.close()
        except (OSError, KeyError):
            pass
        path.unlink()
    f = open_h5(path, "w")
    f.attrs["identity"] = identity
    for name, values in axes.items():
        f[name] = values
    for column in columns:
        f.create_dataset(column, data=np.full(shape, np.nan))
    return f


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    The sibling lives in the same directory so the final `os.replace` is atomic on POSIX.
    On any exception (or a kill) the destination is untouched and the temporary is removed
    when possible, and so are the folders made for it, if still empty.
    """
    dest = Path(path)
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, dest)
        created = []
    finally:
        tmp.unlink(missing_ok=True)
        for folder in created:  # deepest first: a failure leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_writable(path: str | os.PathLike, folder: bool = False) -> None:
    """Refuse, before any work, an output that could not be written: an existing folder where a
    file belongs (or the reverse), or a location where no file can be created (read-only,
    no permission). Probed by creating and removing a file, since `os.access` says yes to root
    on a read-only mount."""
    dest = Path(path)
    if dest.is_dir() and not folder:
        raise UserError(f"output {dest} is an existing folder: give a file path instead")
    if dest.exists() and folder and not dest.is_dir():
        raise UserError(f"output folder {dest} is an existing file: give a folder instead")
    base = dest if folder else dest.parent
    while not base.exists():
        base = base.parent
    try:
        probe = base / f".{dest.name}.probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(
            f"cannot write {dest}: {base} is not writable ({e.strerror}): choose another output "
            "or make it writable"
        ) from None
