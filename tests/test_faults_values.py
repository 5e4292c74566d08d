"""Values, hostile input's third round (docs/reliability.md): strings that come back from
storage exactly as given, or are refused before any work; numbers checked in the type the
computation uses."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sharpminima import store
from sharpminima.errors import UserError
from sharpminima.store import Run, write_run

from .conftest import REPO, assert_one_line_error, cli, snakemake
from .test_faults import TRAIN

# Any text HDF5 and JSON can hold: no lone surrogates (a byte that was not UTF-8) and no
# control characters, which the CLI refuses.
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


def write_minimal(path, attrs: dict) -> None:
    state = {"w": torch.arange(3.0)}
    settings = {"network": "F1", "epochs": 0, "seed": 0, "batch_size": 1}
    write_run(path, settings | attrs, state, [], state, pd.DataFrame({"epoch": [0]}))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(label=TEXT, path=TEXT)
@example(label="[SB", path="{data}.h5")
@example(label="[1, 2]", path='{"a": 1}')
@example(label="123", path="null")
def test_a_stored_string_comes_back_exactly_as_given(tmp_path, label, path):
    """Labels and paths come back as written whatever they start with (format 2 parsed any
    string starting with [ or { as JSON: "[SB" could not even be written); dicts and lists come
    back as dicts and lists."""
    out = tmp_path / "run.h5"
    versions = {"torch": "2.14.1", "label": label}
    write_minimal(out, {"label": label, "dataset_file": path, "versions": versions, "l": [path]})
    attrs = Run(out).attrs
    assert attrs["label"] == label and type(attrs["label"]) is str
    assert attrs["dataset_file"] == path and type(attrs["dataset_file"]) is str
    assert attrs["versions"] == versions and attrs["l"] == [path]


def test_a_run_of_format_2_is_read_as_format_2_wrote_it(tmp_path):
    """Format 2 stored dicts as JSON without naming them: its files are read as then (their
    settings digest was taken so), and stay valid."""
    out = tmp_path / "run.h5"
    write_minimal(out, {"label": "SB", "versions": {"torch": "2.14.1"}})
    with h5py.File(out, "r+") as f:
        del f.attrs["json_attrs"]
        f.attrs["format_version"] = 2
        f.attrs["attrs_sha256"] = store._attrs_digest(f.attrs)
    run = Run(out)
    assert run.version == 2 and run.attrs["versions"] == {"torch": "2.14.1"}


def test_a_label_starting_with_a_bracket_trains_and_reads_back(mnist_like, tmp_path):
    """The reported case: `train --label "[SB"` trained every epoch, then could never be
    written (and every rerun resumed into the same failure)."""
    for label in ("[SB", "{LB}"):
        out = tmp_path / f"{label}.h5"
        cli("train", *TRAIN, "--max-epochs", "1", "--data", mnist_like, "--label", label,
            "--out", out)  # fmt: skip
        assert Run(out).label == label


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--label", "SB|LB", "splits a Markdown table's cell"),
        ("--label", "SB\nLB", "control character '\\n'"),
        ("--label", "SB\x1b[31m", "control character '\\x1b'"),
        ("--label", "SB\udcff", "not UTF-8"),  # the byte 0xff in argv, as Python holds it
        ("--out", "run\udce9.h5", "not UTF-8"),
        ("--out", "run\r.h5", "control character '\\r'"),
        ("--data", "data\n.h5", "control character '\\n'"),
    ],
)
def test_a_string_that_cannot_be_stored_or_printed_is_refused_before_any_work(
    mnist_like, tmp_path, option, value, words
):
    """A label, output or data path holding a byte that is not UTF-8 or a control character
    (or, in a label, a |): one line before any work, and nothing written."""
    values = {"--label": "SB", "--out": "run.h5", "--data": str(mnist_like)} | {option: value}
    for key in ("--out",):
        values[key] = str(tmp_path / values[key])
    proc = cli("train", *TRAIN, *(x for kv in values.items() for x in kv), check=False)
    assert_one_line_error(proc, words)
    assert list(tmp_path.iterdir()) == []


def test_inputs_that_overflow_or_vanish_in_float32_are_refused(tmp_path):
    """Finite float64 inputs whose float32 value, scaled, is infinite trained a "diverged" run
    with exit 0; a scale that turns every input to 0 trained on blank images. Both are refused
    at load, naming the cause."""
    from sharpminima.data.dataset import load_dataset, make_synthetic

    base = tmp_path / "base.h5"
    make_synthetic(base, 20, 5, (1, 4, 4), 2, seed=0)
    cases = {"overflow": (1e39, 1.0), "scaled overflow": (1e30, 1e10), "underflow": (1.0, 1e-50)}
    for name, (value, scale) in cases.items():
        path = tmp_path / f"{name}.h5"
        path.write_bytes(base.read_bytes())
        _craft(path, value, scale)
        with pytest.raises(UserError, match="float32"):
            load_dataset(path)


def _craft(path, value: float, scale: float) -> None:
    """Replace the inputs with float64 `value`s and the scale, with consistent digests."""
    from sharpminima.data import dataset

    with h5py.File(path, "r+") as f:
        for split in ("x_train", "x_test"):
            shape = f[split].shape
            del f[split]
            f[split] = np.full(shape, value, dtype=np.float64)
        f.attrs["scale"] = scale
        arrays = {k: f[k][()] for k in dataset.SPLITS}
        f.attrs["content_sha256"] = dataset.content_digest(arrays, dataset._header(arrays, f.attrs))
        f.attrs["attrs_sha256"] = dataset._attrs_sha256(f.attrs)


@pytest.mark.parametrize(
    "setting, words",
    [
        ("training: {max_epochs: 2.0}", "training.max_epochs: 2.0 is not of type 'integer'"),
        ("training: {max_epochs: 2.5}", "training.max_epochs: 2.5 is not of type 'integer'"),
        ("sharpness: {dim: abc}", "sharpness.dim: 'abc' is not of type 'integer'"),
        ("panel: {bootstrap: 1000.0}", "panel.bootstrap: 1000.0 is not of type 'integer'"),
        ("networks: {F1: {training: {patience: 3.0}}}", "networks.F1.training.patience: 3.0"),
    ],
)
def test_an_integer_setting_written_otherwise_stops_before_any_job(tmp_path, setting, words):
    """JSON Schema counts 2.0 as an integer: such a config planned a study whose jobs then
    failed one by one on `--max-epochs 2.0`. Now the config check stops first, naming the key."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(setting + "\n")
    proc = snakemake(tmp_path, "-n", "--configfile", REPO / "config.yaml", overlay, check=False)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and words in lines[0], lines
