"""What a command may write: one writer per output at a time, and never over one of its own
inputs or over something that is not a file.

Two `train` runs given one `--out` used to share its `.partial/` folder and finish with a mix of
both runs; an output naming a FIFO or a device replaced it with a regular file; `prepare --out`
naming one of the raw files it read destroyed it. Each class has one mechanism here:
`sole_writer` (an exclusive lock beside the output, held while the output is written),
`check_output` (before any work: what the path is, whether it can be written, whether the names
written beside it fit) and `note_input` with `refuse_over_input` (every file a command reads is
remembered, and no write may replace one).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import os
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import UserError

NAME_MAX = 255  # bytes in one name, where the file system does not say
# The longest name a writer puts beside an output `<name>`: atomic_path's temporary
# `.<name>.tmp-<host>-<pid>` (pid_max is at most 2**22: 7 digits).
EXTRA_NAME = len(".") + len(".tmp-") + len(socket.gethostname()) + len("-") + 7


def _what(mode: int) -> str | None:
    """The kind of a file that is neither a regular file nor a folder, in words."""
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return None


def refuse_special(path: str | os.PathLike, role: str = "output") -> None:
    """Refuse a path that is (or links to) a FIFO, device or socket: opening one to write can
    block forever or send bytes to hardware, and replacing it destroys it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing, or a dangling link: a new file is made
        return
    kind = _what(mode)
    if kind:
        raise UserError(f"{role} {path} is {kind}, not a file: give the path of a regular file")


def check_output(path: str | os.PathLike, folder: bool = False) -> None:
    """Refuse, before any work, an output that could not be written or would destroy something:
    a FIFO, device or socket; a folder where a file belongs (or the reverse); a folder output
    holding one of those; a name too long for the temporary written beside it; a location where
    no file can be created (read-only, no permission). Probed by creating and removing a file,
    since `os.access` says yes to root on a read-only mount."""
    dest = Path(path)
    refuse_special(dest, "output folder" if folder else "output")
    if dest.is_dir() and not folder:
        raise UserError(f"output {dest} is an existing folder: give a file path instead")
    if dest.exists() and folder and not dest.is_dir():
        raise UserError(f"output folder {dest} is an existing file: give a folder instead")
    if folder and dest.is_dir():
        for entry in dest.iterdir():
            refuse_special(entry, f"output folder {dest} holds {entry.name}, and")
    base = dest if folder else dest.parent
    while not base.exists():
        base = base.parent
    _check_name_length(dest, base)
    try:
        probe = base / f".{dest.name[:64]}.probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(
            f"cannot write {dest}: {base} is not writable ({e.strerror}): choose another output "
            "or make it writable"
        ) from None


def _check_name_length(dest: Path, base: Path) -> None:
    try:
        limit = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = NAME_MAX
    for part in dest.parent.parts:
        if len(os.fsencode(part)) > limit:
            raise UserError(
                f"folder name {part[:40]}… is {len(os.fsencode(part))} bytes, over the file "
                f"system's limit of {limit}: shorten it"
            )
    size = len(os.fsencode(dest.name))
    if size + EXTRA_NAME > limit:
        raise UserError(
            f"output name {dest.name[:40]}… is {size} bytes; the temporary written beside it "
            f"takes {EXTRA_NAME} more, over the file system's limit of {limit}: shorten the name"
        )


# Inputs: what the command being run has read (device, inode), None outside a command.
_INPUTS: set[tuple[int, int]] | None = None


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """Remember every file noted as read in the block, so that no write replaces one."""
    global _INPUTS
    saved, _INPUTS = _INPUTS, set()
    try:
        yield
    finally:
        _INPUTS = saved


def note_input(path: str | os.PathLike) -> None:
    """Note `path` (the file it names, through any link) as read by the running command."""
    if _INPUTS is not None:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            _INPUTS.add((st.st_dev, st.st_ino))


def refuse_over_input(dest: str | os.PathLike) -> None:
    """Refuse to replace `dest` when it is (a link to) a file the command has read: the result
    would destroy what it was computed from."""
    if not _INPUTS:
        return
    with contextlib.suppress(OSError):
        st = os.stat(dest)
        if (st.st_dev, st.st_ino) in _INPUTS:
            raise UserError(
                f"output {dest} is one of the files this command read: writing it would replace "
                "what the result is computed from; choose another output"
            )


_HELD: set[Path] = set()  # the lock files this process holds


def lock_path(out: str | os.PathLike) -> Path:
    """`.<name>.lock` beside output `out`, in its folder's real path: every spelling of one
    output (relative, through a linked folder) has one lock."""
    out = Path(out)
    return Path(os.path.realpath(out.absolute().parent)) / f".{out.name}.lock"


@contextlib.contextmanager
def sole_writer(out: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on output `out` while the block writes it (its temporaries and
    `.partial/` work folder included). A second writer stops at once with one line naming the
    first (PID, host), before touching anything. The lock is `flock` on `.<name>.lock` beside
    the output, released by the kernel when the holder dies, so a killed run never leaves a
    stale lock; the file is removed by its holder. Where the file system has no locks (some
    NFS mounts), the block runs unlocked, as HDF5's best-effort locking does."""
    key = lock_path(out)
    if key in _HELD:  # this process holds it already (a library call inside a command)
        yield
        return
    created = [d for d in (key.parent, *key.parent.parents) if not d.exists()]
    fd = None
    try:
        fd = _acquire(key, Path(out))
        _HELD.add(key)
        yield
    finally:
        _HELD.discard(key)
        if fd is not None:
            with contextlib.suppress(OSError):
                key.unlink()  # while still held: a waiting opener sees another inode and retries
            os.close(fd)
        for folder in created:  # deepest first: a command that failed leaves no empty folder
            with contextlib.suppress(OSError):
                folder.rmdir()


def _acquire(lock: Path, out: Path) -> int | None:
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(
                f"{out} is being written by another process ({holder}): wait for it to finish, "
                "or choose another output"
            ) from None
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                return None
            raise
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # its last holder removed it after we opened it
            same = False
        if same:
            break
        os.close(fd)
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}, since {since}\n".encode())
    return fd


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it (one printable line, bounded)."""
    text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text or "it has not said which yet"


def writes(parameter: str = "out") -> Callable[[Callable], Callable]:
    """Decorate a function that writes the output named by its argument `parameter` (and works
    in a folder beside it): the call holds `sole_writer` on it throughout."""

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args, **kwargs):
            out = signature.bind(*args, **kwargs).arguments[parameter]
            with sole_writer(out):
                return function(*args, **kwargs)

        return locked

    return decorate


@contextlib.contextmanager
def sole_writers(outs: Iterable[str | os.PathLike]) -> Iterator[None]:
    """`sole_writer` on each of `outs` (the same output named twice, once)."""
    with contextlib.ExitStack() as stack:
        for out in sorted({str(Path(o).absolute()) for o in outs}):
            stack.enter_context(sole_writer(out))
        yield
