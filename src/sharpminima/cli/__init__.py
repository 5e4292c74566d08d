"""The `sharpminima` command: one subcommand per workflow stage.

Bad input ends in one line on stderr naming the problem and the fix, exit status 2, and no
traceback; nothing is written at the output path. This module is the entry point (the parser,
the error handling); the options and handlers of each family of subcommands live beside it:
data.py (prepare), train.py (train, models), measures.py (what measures one stored iterate or a
pair of runs), analysis.py (what reads finished results), and common.py what they share.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import sys

from .. import __version__
from ..errors import UserError, require_text
from ..registry import STAGES
from . import analysis, data, measures, train

# Before torch loads OpenMP (torch is imported by the stages that compute, never here: drawing a
# figure or a table does without its seconds of start-up): spin briefly, then sleep. With the
# default spin (300,000) several jobs sharing too few cores (snakemake --cores 8 on a 2-core
# laptop) ran F1 SB epochs 5-7x slower than their fair share; with 1,000 a lone job is as fast
# as before. See docs/training.md.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")


def _keep_freed_memory() -> None:
    """glibc hands every freed block over 32 MB back to the kernel, so each step of C1 at batch
    5,500 faulted gigabytes of fresh pages in again: about half its CPU time was spent in the
    kernel. Keep freed memory in the heap instead (C1 1.5x as fast to train, 2.3x to evaluate,
    measured in docs/performance.md; no result changes, the peak resident memory grows about a
    third). Setting MALLOC_MMAP_MAX_ in the environment keeps glibc's own behaviour."""
    if sys.platform != "linux" or "MALLOC_MMAP_MAX_" in os.environ:
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4  # glibc's malloc.h
        mallopt(m_mmap_max, 0)
        mallopt(m_trim_threshold, 2**31 - 1)
        mallopt(m_top_pad, 1 << 30)


# Stage -> (what adds its options, what runs it), from each family's module. Options are built
# for the chosen stage only: building them imports that stage's library module, and a job must
# import no other stage's.
COMMANDS = {**data.COMMANDS, **train.COMMANDS, **measures.COMMANDS, **analysis.COMMANDS}


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line, like every other error: the problem, and where help is."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line, with the options of `command` (None: of every stage)."""
    p = _Parser(prog="sharpminima", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, stage in STAGES.items():
        options, run = COMMANDS[name]
        stage_parser = sub.add_parser(name, help=stage.help)
        if command in (name, None):
            options(stage_parser)
        stage_parser.set_defaults(func=run)
    models = sub.add_parser("models", help="list the six networks and their parameter counts")
    models.set_defaults(func=train.cmd_models)
    return p


RESUMES = {"train", "trajectory", "landscape", "surface", "matched"}  # keep finished work


def _os_error(e: OSError, outputs: list[str], command: str) -> str:
    """One line for a failed read or write: what, where, and what to do."""
    what = os.strerror(e.errno) if e.errno else str(e)  # h5py's strerror is a page long
    where = e.filename or (outputs[0] if outputs else None)
    where = f" ({where})" if where else ""
    if e.errno == errno.ENOSPC:
        fix = "free space there and run the same command again"
        fix += ": finished work is resumed" if command in RESUMES else ""
    elif e.errno in (errno.EACCES, errno.EPERM) and not _writes(e.filename, outputs):
        fix = "make it readable (chmod u+r) or run as a user allowed to read it"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make it writable or choose another output"
    else:
        fix = "check the path and the disk, then run the same command again"
    return f"{what}{where}: {fix}"


# Files a command writes beside its --out, by suffix (measure: the table in Markdown too).
BESIDE = {"measure": (".md",), "figure": (".png", ".pdf")}


def _outputs(args: argparse.Namespace) -> list[str]:
    """Every file the command writes: --out and the files beside it."""
    out = getattr(args, "out", None)
    if not out:
        return []
    return [out, *(os.path.splitext(out)[0] + s for s in BESIDE.get(args.command, ()))]


def _writes(name: str | None, outputs: list[str]) -> bool:
    """Whether the file `name` is one the command writes: an output, its temporaries, lock
    and work folder beside it, or anything inside an output folder (None: it cannot be told)."""
    if name is None:
        return True
    name = os.path.abspath(name)
    for out in map(os.path.abspath, outputs):
        beside = os.path.dirname(name) == os.path.dirname(out)
        if name.startswith((out + ".partial", out + os.sep)) or name == out:
            return True
        if beside and os.path.basename(name).startswith("." + os.path.basename(out)):
            return True
    return False


def _refuse_out_over_input(args: argparse.Namespace, out: str) -> None:
    """An output naming one of the command's own input files given on the command line (the
    same path, a symlink or a hard link to it) is refused before any work: writing the result
    would replace its source. Files found inside an input folder are refused when read
    (`guard.note_input`), before anything replaces them."""
    if not os.path.isfile(out):
        return
    inputs = {k: v for k, v in vars(args).items() if k != "out"}
    for key, value in inputs.items():
        for given in value if isinstance(value, list) else [value]:
            if isinstance(given, (str, os.PathLike)) and os.path.isfile(given):
                if os.path.samefile(given, out):
                    raise UserError(
                        f"output {out} is the same file as the input {key} ({given}): writing "
                        "it would replace what the result is computed from; choose another --out"
                    )


def main(argv: list[str] | None = None) -> int:
    """Run one command. Ctrl-C at any moment (building the options imports the stage's modules,
    PyTorch among them) is one line saying what running it again does."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        return _run(argv)
    except KeyboardInterrupt:
        command = argv[0] if argv and argv[0] in (*STAGES, "models") else ""
        again = (
            "run the same command again: it goes on from its last finished step"
            if command in RESUMES
            else "run the same command again (it starts over)"
        )
        name = f"sharpminima {command}".strip()
        print(f"{name}: interrupted before it finished; {again}", file=sys.stderr)
        return 130


def _run(argv: list[str]) -> int:
    args = parser(argv[0] if argv else None).parse_args(argv)
    _keep_freed_memory()
    files, folder = _outputs(args), getattr(args, "out_dir", None)
    outputs = [*files, *filter(None, [folder])]
    try:
        from .. import guard

        for arg in argv:
            require_text(arg, "argument")
        for out in files:
            _refuse_out_over_input(args, out)
            guard.check_output(out)
        if folder:
            guard.check_output(folder, folder=True)
        with guard.reading(), guard.sole_writers(outputs):
            args.func(args)
    except (UserError, OSError) as e:  # OSError: a full disk, a read-only mount, …
        message = str(e) if isinstance(e, UserError) else _os_error(e, outputs, args.command)
        message = " ".join(message.split())  # one line, whatever a library put in the text
        print(f"sharpminima {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0
