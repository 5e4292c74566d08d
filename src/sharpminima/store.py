"""The iterate store: one HDF5 file per training run (layout in docs/formats.md).

Every later stage (sharpness, parametric plots, warm starts) reads runs through `Run`, so the
layout lives here alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch import nn

from .atomic import DAMAGED, atomic_path, json_sha256, open_h5, read_array
from .data.dataset import Dataset, load_dataset
from .errors import UserError, refuse_duplicates
from .models import NETWORKS, build
from .runtime import device_name, pick_device, versions

FORMAT = "sharpminima-run"
# 3: the settings that are dicts or lists are named in `json_attrs`, so every other string
# comes back as given (format 2 parsed any string starting with { or [ as JSON: a label "[x"
# trained every epoch and then could not be written); 2: the digests cover each array's dtype
# and shape, and all are required.
FORMAT_VERSION = 3
StateDict = Mapping[str, torch.Tensor]


def _digest(arrays: Iterable[tuple[str, np.ndarray]], version: int = FORMAT_VERSION) -> str:
    """SHA-256 over named arrays, by name: what a group's `sha256` attribute holds, so that a
    flipped byte in a stored weight or history value, or in the type or shape that says how to
    read it, is found, not used (format 1 hashed the bytes alone)."""
    digest = hashlib.sha256()
    for name, array in sorted(arrays, key=lambda item: item[0]):
        digest.update(name.encode())
        if version >= 2:
            digest.update(f"{array.dtype.str}{list(array.shape)}".encode())
        digest.update(np.ascontiguousarray(array))
    return digest.hexdigest()


def _attrs_digest(attrs: h5py.AttributeManager) -> str:
    """SHA-256 of the run's attributes (its settings), decoded, as sorted JSON."""
    return json_sha256({k: v for k, v in _settings(attrs).items() if k != "attrs_sha256"})


def _settings(attrs: h5py.AttributeManager) -> dict[str, object]:
    """The root attributes as written: the values named in `json_attrs` parsed, every other one
    as stored. Formats 1 and 2 did not say which strings were JSON: there, as then, a string
    starting with { or [ is parsed (their digests were taken so)."""
    if _plain(attrs.get("format_version")) in (1, 2):
        return {k: _legacy(_plain(v)) for k, v in attrs.items()}
    listed = json.loads(_plain(attrs["json_attrs"])) if "json_attrs" in attrs else []
    plain = {k: _plain(v) for k, v in attrs.items()}
    return {k: json.loads(v) if k in listed else v for k, v in plain.items()}


def _write_state(group: h5py.Group, state: StateDict) -> None:
    arrays = [(key, tensor.detach().cpu().numpy()) for key, tensor in state.items()]
    for key, array in arrays:
        group.create_dataset(key, data=array)
    group.attrs["sha256"] = _digest(arrays)


def write_run(
    path: str | Path,
    attrs: Mapping[str, object],
    init: StateDict,
    iterates: Iterable[tuple[int, StateDict]],
    final: StateDict,
    history: pd.DataFrame,
    val_index: np.ndarray | None = None,
) -> None:
    """Write a finished run atomically. `iterates` may be a generator, so that one state at a
    time is in memory however many epochs were kept."""
    with atomic_path(path) as tmp, open_h5(tmp, "w") as f:
        f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION)
        listed = [key for key, value in attrs.items() if isinstance(value, (dict, list))]
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value) if key in listed else value
        f.attrs["json_attrs"] = json.dumps(listed)
        _write_state(f.create_group("init"), init)
        group = f.create_group("iterates")
        for epoch, state in iterates:
            _write_state(group.create_group(f"{epoch:05d}"), state)
        _write_state(f.create_group("final"), final)
        hist = f.create_group("history")
        hist.attrs["columns"] = json.dumps(list(history.columns))
        columns = [(column, history[column].to_numpy()) for column in history.columns]
        for column, values in columns:
            hist.create_dataset(column, data=values)
        hist.attrs["sha256"] = _digest(columns)
        if val_index is not None:
            split = [("val_index", np.asarray(val_index, dtype=np.int64))]
            f.create_dataset("split/val_index", data=split[0][1])
            f["split"].attrs["sha256"] = _digest(split)
        f.attrs["attrs_sha256"] = _attrs_digest(f.attrs)


class Run:
    """Read access to a run file: attributes, history, and any stored iterate as a model."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open_h5(self.path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise UserError(f"{self.path} is not a {FORMAT} file: pass a training run")
                self.version = _plain(f.attrs.get("format_version"))
                if self.version not in (1, 2, FORMAT_VERSION):
                    raise self._unreadable(f"format version {self.version}")
                self._check(f.attrs, _attrs_digest(f.attrs), "attrs_sha256", "its settings")
                self.attrs = _settings(f.attrs)
                self.epochs = sorted(int(k) for k in f["iterates"])
                hist = f["history"]
                columns = [(k, read_array(hist, k)) for k in json.loads(hist.attrs["columns"])]
                self._check(hist.attrs, _digest(columns, self.version), "sha256", "its history")
                self.history = pd.DataFrame(dict(columns))
                self.val_index = None
                if "split" in f:
                    self.val_index = read_array(f, "split/val_index")
                    if self.version >= 2:  # format 1 did not cover it
                        split = [("val_index", self.val_index)]
                        self._check(f["split"].attrs, _digest(split), "sha256", "its split")
        except DAMAGED as e:
            raise self._unreadable(e) from None
        self._check_contents()

    def _check_contents(self) -> None:
        """What a consistent digest cannot vouch for (a file crafted, not damaged): a network
        this package has, whole numbers where they count, a history with rows of numbers."""
        network = self.attrs.get("network")
        if network not in NETWORKS:
            raise UserError(f"run file {self.path} names the network {network!r}, which is not "
                            f"one of {', '.join(NETWORKS)}: pass a run of one of them")  # fmt: skip
        for key in ("epochs", "seed", "batch_size"):
            value = self.attrs.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(f"run file {self.path} has {key} {value!r}, not a whole number: "
                                "train it again")  # fmt: skip
        numeric = all(pd.api.types.is_numeric_dtype(t) for t in self.history.dtypes)
        if self.history.empty or "epoch" not in self.history or not numeric:
            raise UserError(f"run file {self.path} has no history of numbers per epoch (columns "
                            f"{list(self.history.columns)[:6]}, {len(self.history)} rows): "
                            "train it again")  # fmt: skip

    def _unreadable(self, problem: object) -> UserError:
        return UserError(
            f"run file {self.path} is unreadable (truncated or corrupted? {problem}): "
            "train it again (the same --out replaces it)"
        )

    def _check(self, attrs: h5py.AttributeManager, digest: str, key: str, what: str) -> None:
        """Compare with the recorded checksum. A missing one is refused: a file without it was
        written by another program, by a sharpminima from before checksums, or damaged."""
        if key not in attrs:
            raise self._unreadable(
                f"{what} carry no checksum: written by another program or an older "
                "sharpminima, or damaged"
            )
        if _plain(attrs[key]) != digest:
            raise self._unreadable(f"{what} do not match their recorded checksum")

    def _group(self, which: str | int) -> str:
        if which in ("init", "final"):
            return str(which)
        if int(which) not in self.epochs:
            raise UserError(
                f"{self.path} stores no iterate for epoch {which}: stored epochs are "
                f"{self.epochs[:3]}…{self.epochs[-3:]} (see save_every)"
            )
        return f"iterates/{int(which):05d}"

    def state(self, which: str | int = "final") -> dict[str, torch.Tensor]:
        """The full model state (weights and BatchNorm buffers): 'init', 'final' or an epoch."""
        try:
            with open_h5(self.path, "r") as f:
                if _plain(f.attrs.get("attrs_sha256")) != self.attrs["attrs_sha256"]:
                    raise UserError(
                        f"{self.path} was replaced by another run while being read: run the "
                        "command again once its writer has finished"
                    )
                group = f[self._group(which)]
                arrays = [(k, np.asarray(read_array(group, k))) for k in group]
                digest = _digest(arrays, self.version)
                self._check(group.attrs, digest, "sha256", f"iterate {which}'s weights")
        except DAMAGED as e:
            raise self._unreadable(e) from None
        return {k: torch.from_numpy(a) for k, a in arrays}

    @property
    def label(self) -> str:
        """The regime name tables use: the training label, else the batch size as configured."""
        return str(self.attrs.get("label") or f"batch {self.attrs['batch_size_spec']:g}")

    def data(self, path: str | Path | None = None, all_training: bool = False) -> Dataset:
        """The run's dataset with its training set cut to the examples the run trained on
        (the validation split removed, unless `all_training`), checked against the hash
        recorded at training time."""
        path = Path(path or str(self.attrs["dataset_file"]))
        data = load_dataset(path)
        if not data.matches(self.attrs["dataset_sha256"]):
            raise UserError(
                f"{path} is not the dataset {self.path} was trained on (content hash differs): "
                "pass the right file with --data"
            )
        if self.val_index is not None and not all_training:
            keep = torch.ones(len(data.x_train), dtype=torch.bool)
            keep[torch.from_numpy(self.val_index)] = False
            data.x_train, data.y_train = data.x_train[keep], data.y_train[keep]
        return data

    def architecture(self) -> nn.Module:
        """An untrained network of the run's architecture (and number of classes)."""
        classes = self.attrs.get("num_classes")  # absent in runs from before F2 followed data
        return build(str(self.attrs["network"]), num_classes=classes)

    def model(self, which: str | int = "final") -> nn.Module:
        """A network of the run's architecture holding iterate `which`."""
        model = self.architecture()
        try:
            model.load_state_dict(self.state(which))
        except RuntimeError as e:  # a crafted file: weights of another shape, or missing
            problem = " ".join(str(e).split())[:300]
            network = self.attrs["network"]
            raise UserError(f"run file {self.path}: iterate {which} does not fit network "
                            f"{network} ({problem}): train it again") from None  # fmt: skip
        return model

    def provenance(self, which: str | int, n: int, device: torch.device) -> dict:
        """What identifies a number measured on iterate `which` of this run: the run and
        iterate, the data, the machine and the versions."""
        return {
            "run": str(self.path),
            "iterate": which,
            "network": self.attrs["network"],
            "regime": self.label,
            "dataset": self.attrs["dataset"],
            "batch_size": self.attrs["batch_size"],
            "run_seed": self.attrs["seed"],
            "n_examples": n,
            "device": device_name(device),
            "threads": torch.get_num_threads(),
            "versions": versions(),
        }


def open_runs(paths: Iterable[str | Path]) -> list[Run]:
    """The runs at `paths`; the same run twice (its path again, a link, a copy: one
    `attrs_sha256`) is refused, as it would count as two trials."""
    runs = [Run(p) for p in paths]
    refuse_duplicates(((r.attrs["attrs_sha256"], r.path) for r in runs), "run")
    return runs


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _legacy(value: object) -> object:
    if isinstance(value, str) and value.startswith(("{", "[")):
        return json.loads(value)
    return value


def non_finite(model: nn.Module) -> list[str]:
    """The names of `model`'s parameters and buffers holding a NaN or an infinity."""
    return [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()
    ]


def measure_iterate(
    run_path: str | Path,
    which: str | int,
    measure: Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], dict],
    settings: object,
    data_path: str | Path | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
    undefined: Mapping[str, object] | None = None,
) -> dict:
    """`measure(model, (x, y))` of iterate `which`, on the examples the run trained on, with
    the provenance that identifies the number; `settings` are logged.

    An iterate with non-finite weights (a run that diverged) has no sharpness: instead of
    measuring NaN at full cost, or failing the workflow, the result is `undefined` (the keys a
    reader expects, with NaN values), the settings, and `"undefined"`: why."""
    run = Run(run_path)
    data = run.data(data_path)
    dev = pick_device(device)
    model = run.model(which).to(dev)
    n = len(data.x_train)
    bad = non_finite(model)
    if bad:
        reason = (f"iterate {which} has non-finite weights ({', '.join(bad[:2])}"
                  f"{', ...' if len(bad) > 2 else ''}); the run stopped: "
                  f"{run.attrs.get('stop_reason', 'unknown')}")  # fmt: skip
        log(f"{run_path}: {reason}. Nothing to measure: the result says so.")
        return {**(undefined or {}), "undefined": reason, **asdict(settings)} | run.provenance(
            which, n, dev
        )
    log(f"measuring {run_path} ({which}) on {n} examples, {device_name(dev)}: {settings}")
    result = measure(model, (data.x_train.to(dev), data.y_train.to(dev)))
    return result | run.provenance(which, n, dev)
