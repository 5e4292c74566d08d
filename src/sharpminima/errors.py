"""The one exception type for input a user can fix, and the checks every settings class shares."""

import dataclasses
import math
import unicodedata
from collections.abc import Hashable, Iterable


class UserError(Exception):
    """Bad input (config, data file, CLI argument).

    The CLI prints the message as a single line and exits non-zero, so the message must name
    both the problem and the fix.
    """


SEED_MAX = 2**32 - 1  # what every generator takes (numpy's legacy one, torch, random)


def require_finite(settings: object) -> None:
    """Refuse nan and ±inf in any number of a settings dataclass: they pass every `<` and `>`
    check and then turn a run or a φ into nan (or 0) without a word; and seeds outside what
    every generator takes."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        option = "--" + field.name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{option} is {value}: give a finite number")
        if field.name.endswith("seed") and isinstance(value, int):
            require_seed(value, option)


def require_seed(value: int, option: str = "--seed") -> None:
    if not 0 <= value <= SEED_MAX:
        raise UserError(f"{option} is {value}: give a seed from 0 to {SEED_MAX}")


def refuse_duplicates(items: Iterable[tuple[Hashable, object]], what: str) -> None:
    """Refuse two inputs with one identity (`items`: (identity, path) pairs): the same run or
    result given twice, by its path again or a copy, would count as two trials."""
    seen: dict = {}
    for key, path in items:
        if key in seen:
            name = " ".join(map(str, key)) if isinstance(key, tuple) else str(key)[:12]
            raise UserError(f"{seen[key]} and {path} are the same {what} ({name}): pass each once")
        seen[key] = path


def require_text(value: str, what: str) -> None:
    """Refuse a string that cannot be stored and printed as given: a byte that is not UTF-8
    (Python holds it as a lone surrogate, which HDF5 and JSON cannot write, after the work) or
    a control character other than tab (a newline splits the one-line error and every table
    it reaches; an escape sequence rewrites the terminal)."""
    shown = ascii(value)  # printable whatever it holds
    if any("\ud800" <= c <= "\udfff" for c in value):
        raise UserError(f"{what} {shown} holds a byte that is not UTF-8: rename it in UTF-8")
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c != "\t"), None)
    if bad is not None:
        raise UserError(f"{what} {shown} holds the control character {bad!r}: remove it")
