"""What every family of subcommands shares: the log line, --threads, writing a result whole,
and options generated from a settings dataclass (name, type, default and help in one place)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable
from datetime import datetime

from ..cpus import usable_cpus
from ..errors import UserError


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def apply_threads(args: argparse.Namespace) -> None:
    """PyTorch's threads: --threads, but never more than the CPUs this process may use (its
    affinity mask, cgroup quota: a SLURM allocation), where more would only slow it down."""
    if getattr(args, "threads", 0) < 0:
        raise UserError(f"--threads is {args.threads}: give 0 (PyTorch's default) or more")
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(min(args.threads, usable_cpus()))


def write_csv(table, out: str) -> None:
    from ..atomic import atomic_path

    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    log(f"wrote {out}")


def write_json(result: dict, out: str) -> None:
    from ..atomic import atomic_path, json_text

    with atomic_path(out) as tmp:
        tmp.write_text(json_text(result))
    log(f"wrote {out}")


def field_types(cls) -> dict[str, type]:
    """Each field's type, `X | None` read as X."""
    hints = typing.get_type_hints(cls)
    none = type(None)
    return {n: next((t for t in typing.get_args(h) if t is not none), h) for n, h in hints.items()}


def settings_from(cls, args: argparse.Namespace, **overrides):
    """A settings dataclass from the options of the same names; --threads applied on the way."""
    apply_threads(args)
    kinds = field_types(cls)
    given = {k: bool(v) if kinds[k] is bool else v for k, v in vars(args).items() if k in kinds}
    return cls(**given | overrides)


def add_settings(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One option per field of a settings dataclass: its name, type, default and help."""
    kinds = field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, kind, help = "--" + f.name.replace("_", "-"), kinds[f.name], f.metadata["help"]
        if f.default is dataclasses.MISSING:
            p.add_argument(flag, type=kind, required=True, help=help)
        elif kind is bool and not f.default:
            p.add_argument(flag, action="store_true", help=help)
        elif kind is bool:
            p.add_argument(flag, type=int, choices=(0, 1), default=1, help=f"{help}: 1 or 0")
        else:
            shown = "" if f.default is None else f" (default {f.default})"
            p.add_argument(flag, type=kind, default=f.default, help=help + shown)


def runs_on(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")


def listing(entries: dict, detail: Callable = lambda entry: entry.about) -> str:
    """`name (detail); ...` of a registry table: a --help listing what the command accepts."""
    return "; ".join(f"{name} ({detail(entry)})" for name, entry in entries.items())
