"""The one exception type for input a user can fix, and the checks every settings class shares."""

import dataclasses
import math


class UserError(Exception):
    """Bad input (config, data file, CLI argument).

    The CLI prints the message as a single line and exits non-zero, so the message must name
    both the problem and the fix.
    """


def require_finite(settings: object) -> None:
    """Refuse nan and ±inf in any number of a settings dataclass: they pass every `<` and `>`
    check and then turn a run or a φ into nan (or 0) without a word."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            option = field.name.replace("_", "-")
            raise UserError(f"--{option} is {value}: give a finite number")
