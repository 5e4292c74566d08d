"""A folder of finished points beside an output that takes many long computations.

Figure 6's trajectory and the matched-loss comparison each compute tens of measures (minutes
each on a CPU). Every finished point is kept in `<out>.partial/` as one JSON file, so a killed
job resumes with the points still missing; the folder is valid only for the settings it was
made with, and is removed once the output is written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from .atomic import atomic_path, json_text, restore_non_finite


def folder(out: str | Path) -> Path:
    return Path(out).with_name(Path(out).name + ".partial")


def read_json(path: Path) -> object:
    """A JSON file's content, or None when it is missing or damaged."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # bad JSON or UTF-8; nested past the parser
        return None


def prepare(work: Path, identity: dict, log: Callable[[str], None]) -> None:
    """Keep the points cached in `work` only if they were computed with these settings."""
    marker = work / "settings.json"
    if read_json(marker) == identity:
        log(f"resuming from {work}: {len(list(work.glob('[0-9]*.json')))} points done")
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(identity))


def cached(path: Path, key: str, log: Callable[[str], None]) -> dict | None:
    """A finished point (a dict whose `key` is a float), or None: missing, or damaged (then
    removed and computed again)."""
    point = read_json(path)
    if isinstance(point, dict) and isinstance(restore_non_finite(point).get(key), float):
        return point
    if path.exists():
        log(f"{path} is damaged; computing that point again")
        path.unlink()
    return None


def keep(path: Path, point: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(point))


def finish(out: str | Path) -> None:
    """Drop the work folder of an output that has been written."""
    shutil.rmtree(folder(out), ignore_errors=True)
