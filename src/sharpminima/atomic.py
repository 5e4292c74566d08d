"""File safety: a finished path only ever holds a finished file; HDF5 opens that work on NFS;
partial grids of points that a killed job resumes."""

from __future__ import annotations

import contextlib
import errno
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
from .guard import note_input, refuse_over_input, refuse_special


def open_h5(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """h5py.File with best-effort locking: HDF5 locks where the file system can, and carries on
    where it cannot (NFS and Lustre often refuse locks, and HDF5's default then fails every open).
    Nothing relies on them: each output has one writer (`guard.sole_writer`), readers open
    finished files, and a reader gets the version its header probe read, not one that replaced
    it in between.

    Writers get no chunk cache: HDF5 2.0 crashes the process (at close or at exit) after it
    fails to flush a cached chunk, as on a full disk; uncached, the write itself fails and
    raises, and the file closes cleanly (`test_faults`, full disks).
    """
    if mode != "r":
        return h5py.File(path, mode, locking="best-effort", rdcc_nbytes=0)
    require_file(path)
    for _ in range(3):  # the file replaced between probe and open: probe what was opened
        probed = _probe(Path(path))
        f = h5py.File(path, "r", locking="best-effort")
        if _version(os.fstat(f.id.get_vfd_handle())) == probed:
            return f
        f.close()
    raise OSError(errno.EAGAIN, "it keeps being replaced while read: wait for its writer", path)


_PROBED: set[tuple[int, ...]] = set()
PROBE_SECONDS = 120  # a header walk takes milliseconds; a slow network file system, seconds


def _probe(path: Path) -> tuple[int, ...]:
    """Read every header field of `path` in a child process before this one does: a damaged
    header can make the HDF5 library itself crash (a segmentation fault) or loop forever, as
    one flipped bit in its global heap does, and no exception catches either. Raises
    ValueError if the child died; any other defect is left to the reader, which reports it in
    its own words. Once per file version and process; Linux only (fork without exec is unsafe
    on macOS), about 20 ms. Returns the version probed."""
    key = _version(path.stat())
    if sys.platform != "linux" or key in _PROBED:
        return key
    with warnings.catch_warnings():  # Python ≥ 3.12 warns of fork in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: walk the header, exit without any cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to report
        faulthandler.disable()  # a crash is reported by the parent, in one line
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a handler would never run in HDF5's loop
        signal.alarm(PROBE_SECONDS)
        status = 0
        try:
            status = _walk_header(path)
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == ELSEWHERE:
        raise UserError(
            f"{path} keeps data in other files (an HDF5 external link, external storage or a "
            "virtual dataset), which sharpminima does not follow: give a self-contained copy "
            "(h5repack copies the data in)"
        )
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        how = f"hang (over {PROBE_SECONDS} s)" if sig == signal.SIGALRM else "crash"
        raise ValueError(f"its header makes the HDF5 library {how}: {signal.Signals(sig).name}")
    _PROBED.add(key)
    return key


def _version(st: os.stat_result) -> tuple[int, ...]:
    """What tells one version of a file from another: a replaced file is another inode."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


ELSEWHERE = 3  # the probe's exit status for a file that refers to data in other files


def _walk_header(path: Path) -> int:
    """Touch what a reader can: every object, attribute, datatype, shape and chunk index.
    Returns ELSEWHERE, before anything follows it, if the file refers to another: opening that
    one could read anything, or block for ever on a FIFO."""
    with h5py.File(path, "r", locking="best-effort") as f:
        links: list = []
        f.visititems_links(lambda name, link: links.append(link))
        if any(isinstance(link, h5py.ExternalLink) for link in links):
            return ELSEWHERE
        elsewhere = []

        def visit(name: str, obj: h5py.HLObject) -> None:
            for key in obj.attrs:
                obj.attrs[key]
            if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
                elsewhere.append(name)
            elif isinstance(obj, h5py.Dataset):
                nbytes = obj.size * obj.dtype.itemsize  # its datatype and dataspace
                if obj.chunks:
                    for i in range(obj.id.get_num_chunks()):
                        obj.id.get_chunk_info(i)
                elif nbytes <= 1 << 20:
                    obj[()]

        visit("/", f)
        f.visititems(visit)
        return ELSEWHERE if elsewhere else 0


def require_file(path: str | os.PathLike) -> None:
    """Refuse an input that is not a regular file, naming what it is: a folder or a device
    given as a file is not "unreadable", and a missing one is not "corrupted"."""
    p = Path(path)
    note_input(p)
    if p.is_dir():
        raise UserError(f"{p} is a folder, not a file: give the file inside it")
    if not p.exists():
        raise UserError(f"{p} does not exist: check the path")
    refuse_special(p, "input")
    try:
        with open(p, "rb"):
            pass
    except PermissionError:
        raise UserError(
            f"{p} cannot be read: permission denied: make it readable (chmod u+r) or run as a "
            "user allowed to read it"
        ) from None


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


JSON_BYTES = 64 << 20  # a result JSON is kilobytes; a trajectory's, with every φ path, a few MiB


def read_json(path: str | os.PathLike, need: Iterable[str], made_by: str) -> dict:
    """A result file's JSON object, with the keys `need`; anything else (a folder, an empty
    file, an HDF5 file, a list) is one UserError saying what it is and what `made_by` (the
    command that writes such files) is for."""
    if not Path(path).exists():
        raise UserError(f"{path} does not exist: compute it with `sharpminima {made_by}`")
    require_file(path)
    fix = f"pass the JSON that `sharpminima {made_by}` writes"
    size = Path(path).stat().st_size
    if size > JSON_BYTES:
        raise UserError(f"{path} is {size / 2**20:.0f} MiB, more than a result's JSON can be "
                        f"({JSON_BYTES >> 20} MiB): {fix}")  # fmt: skip
    data = Path(path).read_bytes()
    if data.startswith(b"\x89HDF"):
        raise UserError(f"{path} is an HDF5 file, not a JSON result: {fix}")
    if not data.strip():
        raise UserError(f"{path} is empty: {fix} (or compute it again)")
    try:
        value = json.loads(data)
    except ValueError as e:  # bad JSON, bad UTF-8
        raise UserError(f"{path} is not JSON ({e}): {fix} (or compute it again)") from None
    except RecursionError:
        raise UserError(f"{path} nests deeper than Python's parser goes: {fix}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} holds a JSON {type(value).__name__}, not an object: {fix}")
    missing = [k for k in need if k not in value]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: {fix}")
    return restore_non_finite(value)


# What h5py raises on a damaged file: a damaged header can make HDF5 report any of these.
DAMAGED = (OSError, KeyError, ValueError, TypeError, RuntimeError)


def read_array(group: h5py.Group, key: str) -> np.ndarray:
    """`group[key]` read whole, refused where a damaged header made it something else (not an
    array, or an uncompressed array of more bytes than the file holds: ValueError), where it
    needs an HDF5 filter this installation lacks, or where it declares more bytes than this
    machine has memory (a compressed array, or a sparse file, can declare terabytes in a small
    file): UserError, before anything is allocated."""
    obj = group[key]
    if not isinstance(obj, h5py.Dataset):
        raise ValueError(f"{key} is not an array")
    nbytes = obj.size * obj.dtype.itemsize
    dcpl = obj.id.get_create_plist()
    filters = [dcpl.get_filter(i) for i in range(dcpl.get_nfilters())]
    if not filters and nbytes > obj.file.id.get_filesize():
        raise ValueError(f"{key} claims {obj.shape} {obj.dtype}, more than the file holds")
    for code, _, _, name in filters:
        if not h5py.h5z.filter_avail(code):
            raise UserError(
                f"{obj.file.filename}: {key} is compressed with the HDF5 filter "
                f"{name.decode(errors='replace')!r} ({code}), which this installation cannot "
                "decode: rewrite the file without it (h5repack -f NONE IN OUT)"
            )
    have = available_memory() if nbytes > 1 << 26 else nbytes  # /proc/meminfo past 64 MiB
    if nbytes > have:
        raise UserError(
            f"{obj.file.filename}: {key} declares {obj.shape} {obj.dtype}, {nbytes / 2**30:.3g} "
            f"GiB, more than this machine's available memory ({have / 2**30:.3g} GiB): use a "
            "machine with more memory, or check the file"
        )
    return obj[()]


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int:
    """Bytes this process could still allocate: Linux's MemAvailable (and the cgroup's limit,
    where lower); elsewhere, physical memory."""
    limit = physical_memory()
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limit = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            limit = min(limit, int(text) - used)
    return limit


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
    refuse_special(dest)
    refuse_over_input(dest)
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    _remove_orphans(dest, host)
    tmp = dest.with_name(f".{dest.name}.tmp-{host}-{os.getpid()}")
    try:
        yield tmp
        refuse_over_input(dest)  # the command may have read more since it began
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
