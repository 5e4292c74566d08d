"""Hostile Kaldi tables: no value runs a shell, no damaged table ends in a traceback.

Part of the fault matrix (docs/reliability.md). The corpus is `test_kaldi`'s, made afresh for
every generated case so that one case's edits never reach the next.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import kaldiio
import kaldiio.utils
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sharpminima.data.kaldi import runs_shell

from .test_kaldi import one_line, prepare, write_split

MARKER = "ran-a-shell"
# How a value may wrap a command, in every form kaldiio parses (docs/timit.md, "Pipes").
LEADS = st.sampled_from(["", " ", "|", " |", "| ", "\t|"])
TRAILS = st.sampled_from(["", "|", " |", "| ", "|\t", "||"])
SUFFIXES = st.sampled_from(["", ":0", ":12", " :12", "[0:3]", ":12[0:3]", "[:]"])
PREFIXES = st.sampled_from(["", "ark:", "ark,t:", "scp:", "scp,p:", "ark,s,cs:"])
PLACES = st.sampled_from(["train-ali", "train-feats", "feats.scp", "cmvn.scp"])


def make_corpus(root: Path) -> Path:
    base = root / "timit-kaldi"
    write_split(base / "train", {"s1_a": ("s1", 7), "s1_b": ("s1", 5)}, seed=1)
    write_split(base / "test", {"s3_a": ("s3", 4), "s3_b": ("s3", 6)}, seed=2)
    return base


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(place=PLACES, prefix=PREFIXES, lead=LEADS, trail=TRAILS, suffix=SUFFIXES)
@example(place="feats.scp", prefix="", lead="|", trail="", suffix="")  # '| cmd' in an scp
@example(place="feats.scp", prefix="", lead="", trail="|", suffix=":12")  # 'cmd |:12'
@example(place="train-ali", prefix="ark:", lead="| ", trail="", suffix="")
def test_no_table_value_runs_a_shell(capsys, place, prefix, lead, trail, suffix):
    root = Path(tempfile.mkdtemp())
    try:
        base = make_corpus(root)
        marker = root / MARKER
        command = f"{lead}touch {marker}{trail}{suffix}"
        args = []
        if place == "train-ali":
            args = ["--train-ali", prefix + command]
        elif place == "train-feats":
            args = ["--train", prefix + command]
        else:  # an entry inside a table the run reads
            scp = base / "test" / place
            scp.write_text(scp.read_text() + f"s3_c {command}\n")
            args = ["--cmvn", "mean"] if place == "cmvn.scp" else []
        out = root / "timit.h5"
        assert prepare(root, "--out", out, *args) == 2
        line = one_line(capsys)
        assert not marker.exists(), (command, line)
        assert not out.exists() and not list(root.glob(".timit.h5*"))
        if "|" in command:
            assert "shell command" in line and "--allow-pipes" in line, line
    finally:
        shutil.rmtree(root)


@settings(max_examples=300, deadline=None)
@given(value=st.text(alphabet=" |:[]0123456789abc-.\t", max_size=16))
@example(value="cmd |:12")
@example(value="cmd |[0:3]")
@example(value=" | cmd")
def test_every_value_kaldiio_would_pipe_is_refused(value):
    """Against kaldiio's own parsing: feed the value to `load_mat` with its popen replaced by a
    recorder, and whenever kaldiio asked for a command, the guard must have said so."""
    asked = []

    def record(cmd, mode, *args, **kwargs):
        asked.append(cmd)
        raise OSError("recorded, not run")

    original = kaldiio.utils.my_popen
    kaldiio.utils.my_popen = record
    try:
        with tempfile.TemporaryDirectory() as empty:  # no generated name exists there
            cwd = Path.cwd()
            os.chdir(empty)
            try:
                kaldiio.load_mat(value)
            except Exception:  # any failure is fine: only popen matters
                pass
            finally:
                os.chdir(cwd)
    finally:
        kaldiio.utils.my_popen = original
    if asked:
        assert runs_shell(value), (value, asked)


def test_standard_input_is_refused(tmp_path, capsys):
    base = make_corpus(tmp_path)
    scp = base / "test" / "feats.scp"
    for value in ("-", "-:12", "- [0:2]"):
        scp.write_text(f"s3_a {value}\n")
        assert prepare(tmp_path, "--out", tmp_path / "t.h5") == 2
        assert "reads standard input" in one_line(capsys)


@pytest.mark.parametrize("table", ["train/feats.ark", "train/pdf.ark", "test/cmvn.ark"])
def test_truncated_or_flipped_arks_are_one_line(tmp_path, capsys, table):
    """Every cut and many flipped bytes of a binary ark: exit 2 with one line, or, where the
    damage leaves a valid table (a flipped value byte), a finished dataset; never a traceback."""
    base = make_corpus(tmp_path)
    path = base / table
    good = path.read_bytes()
    cuts = sorted({*range(1, min(len(good), 40)), *range(40, len(good), max(1, len(good) // 25))})
    flips = range(0, len(good), max(1, len(good) // 25))
    damaged = [good[:n] for n in cuts] + [
        good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1 :] for i in flips
    ]
    args = ["--cmvn", "mean"] if "cmvn" in table else []
    for i, data in enumerate(damaged):
        path.write_bytes(data)
        out = tmp_path / f"t{i}.h5"
        code = prepare(tmp_path, "--out", out, *args)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if code != 0:
            assert code == 2 and not out.exists(), err
            assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err


@pytest.mark.parametrize(
    "content, words",
    [
        (b"s1_a s1\n\xff\xfe s1\n", "is not UTF-8"),
        (b"s1_a s1\ns1_b\n", "line 2 has 1 fields"),
        (b"s1_a s1 extra\n", "line 1 has 3 fields"),
    ],
)
def test_bad_utt2spk_is_one_line(tmp_path, capsys, content, words):
    base = make_corpus(tmp_path)
    (base / "train" / "utt2spk").write_bytes(content)
    out = tmp_path / "sub" / "dir" / "t.h5"
    assert prepare(tmp_path, "--out", out, "--cmvn", "mean") == 2
    assert words in one_line(capsys)
    assert not (tmp_path / "sub").exists()  # a failed conversion leaves no empty folder


def test_blank_utt2spk_lines_are_skipped(tmp_path):
    base = make_corpus(tmp_path)
    path = base / "train" / "utt2spk"
    path.write_text("\n" + path.read_text().replace("\n", "\n  \n"))
    assert prepare(tmp_path, "--out", tmp_path / "t.h5", "--cmvn", "mean") == 0
