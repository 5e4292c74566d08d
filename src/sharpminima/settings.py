"""Settings dataclasses carry each field's help, so the command line is generated from them.

`sharpminima train`, `sharpness`, `trajectory`, `landscape` and `figure` take one option per
field of TrainConfig, SharpnessConfig, LandscapeConfig and Style: name, type, default and help
come from the field, so the options and the dataclass cannot disagree (tests/test_settings.py
checks the config schema's defaults against the same fields).
"""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Any


def setting(default: Any = MISSING, help: str = "") -> Any:
    """A dataclass field with its command-line help (no default: a required option)."""
    return field(default=default, metadata={"help": help})
