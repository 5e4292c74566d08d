"""TIMIT as a Kaldi recipe prepared it (the paper's F2 input) → dataset file.

Per split: features (a data directory's feats.scp, or any scp/ark, compressed matrices too),
optional per-speaker CMVN (the directory's cmvn.scp and utt2spk), and frame-level pdf
alignments as `ali-to-pdf` writes them. Frames are spliced ±k and streamed to the dataset file
utterance by utterance, so memory stays far below the output's size. Layout and options:
docs/formats.md.
"""

from __future__ import annotations

import gzip
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kaldiio
import numpy as np

from ..errors import UserError
from ..guard import note_input
from .dataset import _sha256_file, stream_dataset
from .frames import apply_cmvn, check_options, splice

# What kaldiio raises on a truncated or damaged table: struct.error, a failed assert on a
# header, RuntimeError on an unknown type, IndexError past the end, besides the usual ones.
UNREADABLE = (OSError, ValueError, EOFError, struct.error, AssertionError, RuntimeError, IndexError)

# "path", "path:offset", "path[slices]" or "path:offset[slices]": an scp value's file part, as
# kaldiio cuts it, and the rest.
SCP_VALUE = re.compile(r"^(?P<path>.*?)(?P<rest>(:\d+)?(\[[^\]]*\])?)$")


@dataclass
class KaldiSplit:
    """One split: `feats` is a data directory, an scp or ark file, or an rspecifier (scp:…,
    ark:…); `ali` are ali-to-pdf outputs (binary or text ark, .gz too)."""

    feats: str
    ali: list[str] = field(default_factory=list)


def runs_shell(value: str) -> bool:
    """Whether kaldiio could hand `value` (an rspecifier's target or an scp entry) to a shell.

    kaldiio's `open_like_kaldi` runs a command when a name, stripped of whitespace, starts or
    ends with '|'. `load_mat` asks it about the whole entry ('cmd |', '| cmd') and, failing
    that, about what is left once it cuts a '[slices]' suffix and a ':offset' ('cmd |:12',
    'cmd |[0:3]', 'cmd|:12[0:3]'). Rather than mirror that parsing (and each future kaldiio's),
    any '|' counts: it is the one character a command needs, and no Kaldi file name needs it.
    """
    return "|" in value


def _refuse_pipe(value: str, where: str, allow: bool) -> None:
    """Refuse a command unless allowed, and standard input ('-', with ':offset' or '[slices]'
    as kaldiio cuts them) always: a job would wait on it forever."""
    if runs_shell(value) and not allow:
        raise UserError(
            f"{where} is a shell command ({value.strip()!r}), which Kaldi would run: write the "
            "table to a file first (e.g. copy-feats … ark,scp:FILE.ark,FILE.scp), or pass "
            "--allow-pipes if you trust it"
        )
    if SCP_VALUE.match(value.strip())["path"].strip() == "-":
        raise UserError(f"{where} reads standard input ('-'): give the table's file instead")


def _rspecifier(spec: str) -> tuple[str, str]:
    """(scp|ark, target) of a directory, a file or a Kaldi rspecifier such as ark,t:FILE."""
    m = re.match(r"^(scp|ark)(,[a-z,]*)?:(.*)$", spec)
    if m:
        return m.group(1), m.group(3)
    if Path(spec).is_dir():
        return "scp", str(Path(spec) / "feats.scp")
    return ("scp" if spec.endswith(".scp") else "ark"), spec


def read_table(
    spec: str, allow_pipes: bool = False, kaldi_root: str | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """(utterance, matrix or vector) in the table's order, read lazily.

    Relative paths inside an scp are resolved against `kaldi_root` (default: the current
    directory, as Kaldi does; recipes run from their s5/ folder).
    """
    kind, target = _rspecifier(spec)
    _refuse_pipe(target, spec, allow_pipes)
    piped = runs_shell(target)
    if not piped and not Path(target).is_file():
        raise UserError(f"Kaldi table {target} does not exist: check the path (or data_root)")
    if not piped:
        note_input(target)
    try:
        if kind == "ark" and piped:
            with kaldiio.ReadHelper(f"ark:{target}") as reader:
                yield from reader
        elif kind == "ark":
            opener = gzip.open if target.endswith(".gz") else open
            with opener(target, "rb") as fd:
                yield from kaldiio.load_ark(fd)
        else:
            yield from _read_scp(target, allow_pipes, kaldi_root)
    except UserError:
        raise
    except UNREADABLE as e:
        raise UserError(f"Kaldi table {target} is unreadable ({type(e).__name__}: {e})") from None


def _read_scp(
    path: str, allow_pipes: bool, kaldi_root: str | None
) -> Iterator[tuple[str, np.ndarray]]:
    with open(path) as lines:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            utt, _, value = line.strip().partition(" ")
            value = value.strip()
            _refuse_pipe(value, f"{path} line {n}", allow_pipes)
            if not runs_shell(value):
                if kaldi_root:
                    m = SCP_VALUE.match(value)
                    value = str(Path(kaldi_root) / m["path"]) + m["rest"]
                note_input(SCP_VALUE.match(value)["path"])
            yield utt, kaldiio.load_mat(value)


def read_alignments(specs: list[str], allow_pipes: bool = False) -> dict[str, np.ndarray]:
    """Every utterance's pdf ids from ali-to-pdf outputs (small: 4 bytes a frame)."""
    ali: dict[str, np.ndarray] = {}
    for spec in specs:
        for utt, pdfs in read_table(spec, allow_pipes):
            pdfs = np.asarray(pdfs)
            if pdfs.ndim != 1 or not np.issubdtype(pdfs.dtype, np.integer) or (pdfs < 0).any():
                raise UserError(
                    f"{spec}: utterance {utt} is not a vector of pdf ids: give ali-to-pdf's "
                    "output (not the transition-id alignments ali.*.gz)"
                )
            if utt in ali:
                raise UserError(f"utterance {utt} is aligned twice (in {spec} and before)")
            ali[utt] = pdfs.astype(np.int64)
    return ali


def _speaker_stats(
    feats: str, cmvn: str, allow_pipes: bool, kaldi_root: str | None
) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """utt2spk and each speaker's CMVN statistics, from the split's data directory."""
    folder = Path(feats)
    if not (folder / "cmvn.scp").is_file() or not (folder / "utt2spk").is_file():
        raise UserError(
            f"--cmvn {cmvn} needs a data directory with cmvn.scp and utt2spk, and {feats} has "
            "none: run steps/compute_cmvn_stats.sh, or pass --cmvn none"
        )
    stats = dict(read_table(str(folder / "cmvn.scp"), allow_pipes, kaldi_root))
    return _utt2spk(folder / "utt2spk"), stats


def _utt2spk(path: Path) -> dict[str, str]:
    """'utterance speaker' per line, as Kaldi writes it; blank lines are skipped."""
    note_input(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path} is not UTF-8 text (byte {e.start}): give Kaldi's utt2spk"
        ) from None
    utt2spk = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise UserError(
                f"{path} line {n} has {len(fields)} fields, not 'utterance speaker': fix the line"
            )
        utt2spk[fields[0]] = fields[1]
    return utt2spk


@dataclass
class _Tally:
    """What one split's conversion met: reported in the log and stored with the dataset."""

    utterances: int = 0
    frames: int = 0
    no_alignment: list[str] = field(default_factory=list)
    no_features: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "utterances": self.utterances,
            "frames": self.frames,
            "features_without_alignment": len(self.no_alignment),
            "alignments_without_features": len(self.no_features),
            "examples_without_alignment": self.no_alignment[:10],
            "examples_without_features": self.no_features[:10],
        }


def _frames(
    split: KaldiSplit,
    ali: dict[str, np.ndarray],
    context: int,
    cmvn: str,
    allow_pipes: bool,
    kaldi_root: str | None,
    tally: _Tally,
    log: Callable[[str], None],
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Spliced frames and their pdf ids, one utterance at a time."""
    if cmvn != "none":
        utt2spk, stats = _speaker_stats(split.feats, cmvn, allow_pipes, kaldi_root)
    seen, dim = set(), None
    for utt, feats in read_table(split.feats, allow_pipes, kaldi_root):
        seen.add(utt)
        if utt not in ali:
            tally.no_alignment.append(utt)
            continue
        feats = np.asarray(feats, dtype=np.float32)
        dim = dim or (feats.shape[-1] if feats.ndim == 2 else -1)
        if feats.ndim != 2 or feats.shape[1] != dim:
            raise UserError(f"utterance {utt}: features of shape {feats.shape}, others {dim}-dim")
        if len(feats) != len(ali[utt]):
            raise UserError(
                f"utterance {utt}: {len(feats)} feature frames but {len(ali[utt])} aligned "
                "frames: the alignments were made from other features"
            )
        if cmvn != "none":
            spk = utt2spk.get(utt)
            if spk not in stats:
                raise UserError(f"utterance {utt}: no CMVN statistics for its speaker {spk!r}")
            feats = apply_cmvn(feats, stats[spk], cmvn)
        yield splice(feats, context), ali[utt]
        tally.utterances += 1
        tally.frames += len(feats)
        if tally.utterances % 1000 == 0:
            log(f"{tally.utterances} utterances, {tally.frames} frames")
    tally.no_features = sorted(set(ali) - seen)


def prepare_timit_kaldi(
    out: str | Path,
    train: KaldiSplit,
    test: KaldiSplit,
    context: int = 4,
    cmvn: str = "none",
    classes: int = 0,
    allow_pipes: bool = False,
    kaldi_root: str | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Kaldi features + pdf alignments → dataset file; classes from the alignments unless
    given (the paper's tree has 1973 pdfs)."""
    check_options(context, cmvn)
    splits = {"train": train, "test": test}
    for name, split in splits.items():
        if not split.ali:
            raise UserError(
                f"no alignments given for {name}: pass --{name}-ali (ali-to-pdf output)"
            )
    ali = {name: read_alignments(s.ali, allow_pipes) for name, s in splits.items()}
    top = max((int(a.max()) for split in ali.values() for a in split.values() if len(a)), default=0)
    if classes and top >= classes:
        raise UserError(f"the alignments hold pdf id {top}, beyond --classes {classes}: raise it")
    num_classes = classes or top + 1
    tallies = {name: _Tally() for name in splits}
    pieces = {
        name: _frames(s, ali[name], context, cmvn, allow_pipes, kaldi_root, tallies[name], log)
        for name, s in splits.items()
    }
    files = [spec for s in splits.values() for spec in (s.feats, *s.ali) if Path(spec).is_file()]
    checksums = {f: _sha256_file(Path(f)) for f in files}

    def details() -> dict:  # called once both splits are written: the tallies are complete
        return {
            "context": context,
            "cmvn": cmvn,
            "splits": {name: t.summary() for name, t in tallies.items()},
        }

    stream_dataset(out, "timit", pieces, num_classes, "kaldi", 1.0, checksums, details)
    for name, t in tallies.items():
        log(
            f"{name}: {t.utterances} utterances, {t.frames} frames; "
            f"{len(t.no_alignment)} with features but no alignment"
            + (f" (e.g. {t.no_alignment[0]})" if t.no_alignment else "")
            + f", {len(t.no_features)} aligned but without features"
            + (f" (e.g. {t.no_features[0]})" if t.no_features else "")
        )
