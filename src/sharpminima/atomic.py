"""File safety: a finished path only ever holds a finished file; HDF5 opens that work on NFS;
partial grids of points that a killed job resumes."""

from __future__ import annotations

import contextlib
import faulthandler
import glob
import hashlib
import json
import math
import os
import signal
import socket
import sys
import warnings
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

    Writers get no chunk cache: HDF5 2.0 crashes the process (at close or at exit) after it
    fails to flush a cached chunk, as on a full disk; uncached, the write itself fails and
    raises, and the file closes cleanly (`test_faults`, full disks).
    """
    if mode == "r":
        require_file(path)
        _probe(Path(path))
    cache = {} if mode == "r" else {"rdcc_nbytes": 0}
    return h5py.File(path, mode, locking="best-effort", **cache)


_PROBED: set[tuple[int, ...]] = set()
PROBE_SECONDS = 120  # a header walk takes milliseconds; a slow network file system, seconds


def _probe(path: Path) -> None:
    """Read every header field of `path` in a child process before this one does: a damaged
    header can make the HDF5 library itself crash (a segmentation fault) or loop forever, as
    one flipped bit in its global heap does, and no exception catches either. Raises
    ValueError if the child died; any other defect is left to the reader, which reports it in
    its own words. Once per file version and process; Linux only (fork without exec is unsafe
    on macOS), about 20 ms."""
    if sys.platform != "linux":
        return
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _PROBED:
        return
    with warnings.catch_warnings():  # Python ≥ 3.12 warns of fork in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: walk the header, exit without any cleanup
        faulthandler.disable()  # a crash is reported by the parent, in one line
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a handler would never run in HDF5's loop
        signal.alarm(PROBE_SECONDS)
        try:
            _walk_header(path)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        how = f"hang (over {PROBE_SECONDS} s)" if sig == signal.SIGALRM else "crash"
        raise ValueError(f"its header makes the HDF5 library {how}: {signal.Signals(sig).name}")
    _PROBED.add(key)


def _walk_header(path: Path) -> None:
    """Touch what a reader can: every object, attribute, datatype, shape and chunk index."""
    with h5py.File(path, "r", locking="best-effort") as f:

        def visit(name: str, obj: h5py.HLObject) -> None:
            for key in obj.attrs:
                obj.attrs[key]
            if isinstance(obj, h5py.Dataset):
                nbytes = obj.size * obj.dtype.itemsize  # its datatype and dataspace
                if obj.chunks:
                    for i in range(obj.id.get_num_chunks()):
                        obj.id.get_chunk_info(i)
                elif nbytes <= 1 << 20:
                    obj[()]

        visit("/", f)
        f.visititems(visit)


def require_file(path: str | os.PathLike) -> None:
    """Refuse an input that is not a regular file, naming what it is: a folder or a device
    given as a file is not "unreadable", and a missing one is not "corrupted"."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p} is a folder, not a file: give the file inside it")
    if not p.exists():
        raise UserError(f"{p} does not exist: check the path")
    if not p.is_file():
        raise UserError(f"{p} is a device or a pipe, not a file: give a file")


def json_text(value: object) -> str:
    """JSON that every parser reads (no `NaN` or `Infinity` tokens): a non-finite number is
    written as null and, in a top-level object, listed under `non_finite` with what it was, so
    that the reason travels with it (`restore_non_finite` reads it back)."""
    found: dict[str, str] = {}

    def clean(v: object, where: str) -> object:
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            found[where] = str(v)
            return None
        if isinstance(v, dict):
            return {k: clean(x, f"{where}.{k}" if where else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{where}[{i}]") for i, x in enumerate(v)]
        return v

    out = clean(value, "")
    if found and isinstance(out, dict):
        out["non_finite"] = found
    return json.dumps(out, indent=2, allow_nan=False) + "\n"


def json_sha256(values: dict) -> str:
    """SHA-256 of `values` as sorted JSON (str for what JSON cannot hold): the digest of a
    dataset's or a run's attributes. Files already written carry it: it must not change."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def restore_non_finite(value: dict) -> dict:
    """The top-level numbers `json_text` wrote as null, as the floats they were (the
    `non_finite` list itself dropped: `value` is then what was written)."""
    found = value.pop("non_finite", None)
    for key, was in found.items() if isinstance(found, dict) else ():
        if key in value and value[key] is None and was in ("nan", "inf", "-inf"):
            value[key] = float(was)
    return value


def read_json(path: str | os.PathLike, need: Iterable[str], made_by: str) -> dict:
    """A result file's JSON object, with the keys `need`; anything else (a folder, an empty
    file, an HDF5 file, a list) is one UserError saying what it is and what `made_by` (the
    command that writes such files) is for."""
    if not Path(path).exists():
        raise UserError(f"{path} does not exist: compute it with `sharpminima {made_by}`")
    require_file(path)
    fix = f"pass the JSON that `sharpminima {made_by}` writes"
    data = Path(path).read_bytes()
    if data.startswith(b"\x89HDF"):
        raise UserError(f"{path} is an HDF5 file, not a JSON result: {fix}")
    if not data.strip():
        raise UserError(f"{path} is empty: {fix} (or compute it again)")
    try:
        value = json.loads(data)
    except ValueError as e:  # bad JSON, bad UTF-8
        raise UserError(f"{path} is not JSON ({e}): {fix} (or compute it again)") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} holds a JSON {type(value).__name__}, not an object: {fix}")
    missing = [k for k in need if k not in value]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: {fix}")
    return restore_non_finite(value)


# What h5py raises on a damaged file: a damaged header can make HDF5 report any of these.
DAMAGED = (OSError, KeyError, ValueError, TypeError, RuntimeError)


def read_array(group: h5py.Group, key: str) -> np.ndarray:
    """`group[key]` read whole, refused (ValueError) where a damaged header made it something
    else: not an array, or an array of more bytes than the file holds (which would otherwise
    ask for terabytes of memory)."""
    obj = group[key]
    if not isinstance(obj, h5py.Dataset):
        raise ValueError(f"{key} is not an array")
    if obj.size * obj.dtype.itemsize > obj.file.id.get_filesize():
        raise ValueError(f"{key} claims {obj.shape} {obj.dtype}, more than the file holds")
    return obj[()]


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
    host = socket.gethostname()
    _remove_orphans(dest, host)
    tmp = dest.with_name(f".{dest.name}.tmp-{host}-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, dest)
        created = []
    finally:
        tmp.unlink(missing_ok=True)
        for folder in created:  # deepest first: a failure leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def _remove_orphans(dest: Path, host: str) -> None:
    """Remove the temporaries of `dest` left by killed writers (SIGKILL runs no cleanup): those
    of this host whose process is gone. Another host's are left alone: on a shared file system
    its writer may still be at work."""
    for tmp in dest.parent.glob(f".{glob.escape(dest.name)}.tmp-{glob.escape(host)}-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
