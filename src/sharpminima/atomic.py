"""File safety: a finished path only ever holds a finished file; HDF5 opens that work on NFS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py


def open_h5(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """h5py.File with best-effort locking: HDF5 locks where the file system can, and carries on
    where it cannot (NFS and Lustre often refuse locks, and HDF5's default then fails every open).
    Nothing relies on the locks: each file has one writer, and readers open finished files.
    """
    return h5py.File(path, mode, locking="best-effort")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    The sibling lives in the same directory so the final `os.replace` is atomic on POSIX.
    On any exception (or a kill) the destination is untouched and the temporary is removed
    when possible.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
