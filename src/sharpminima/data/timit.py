"""TIMIT from the LDC corpus, for users without Kaldi: fbank features, phone labels per frame.

Reads the corpus tree (NIST SPHERE `.WAV`, `.PHN`), computes Kaldi-compatible 40-bin log-mel
filterbank features (kaldi-native-fbank), applies per-speaker CMVN, splices ±k frames as the
Kaldi front end does (F2's 360 inputs) and labels each frame with the phone under its centre,
folded to the 39 (or 48, or all 61) phones of Lee & Hon (1989). Choices: docs/timit.md.
"""

from __future__ import annotations

import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..guard import note_input
from .dataset import stream_dataset
from .frames import apply_cmvn, check_options, cmvn_stats, splice

SAMPLE_RATE = 16000
FRAME_LENGTH, FRAME_SHIFT = 400, 160  # 25 ms and 10 ms at 16 kHz, Kaldi's defaults

# The 61 TIMIT phones → 48 (training set of Lee & Hon 1989) → 39 (their scoring set), as in
# Kaldi's egs/timit/s5/conf/phones.60-48-39.map. The glottal stop q has no 48/39 phone: its
# frames are dropped there, as Kaldi's recipe drops q from its transcripts.
PHONE_MAP = {
    "aa": ("aa", "aa"), "ae": ("ae", "ae"), "ah": ("ah", "ah"), "ao": ("ao", "aa"),
    "aw": ("aw", "aw"), "ax": ("ax", "ah"), "ax-h": ("ax", "ah"), "axr": ("er", "er"),
    "ay": ("ay", "ay"), "b": ("b", "b"), "bcl": ("vcl", "sil"), "ch": ("ch", "ch"),
    "d": ("d", "d"), "dcl": ("vcl", "sil"), "dh": ("dh", "dh"), "dx": ("dx", "dx"),
    "eh": ("eh", "eh"), "el": ("el", "l"), "em": ("m", "m"), "en": ("en", "n"),
    "eng": ("ng", "ng"), "epi": ("epi", "sil"), "er": ("er", "er"), "ey": ("ey", "ey"),
    "f": ("f", "f"), "g": ("g", "g"), "gcl": ("vcl", "sil"), "h#": ("sil", "sil"),
    "hh": ("hh", "hh"), "hv": ("hh", "hh"), "ih": ("ih", "ih"), "ix": ("ix", "ih"),
    "iy": ("iy", "iy"), "jh": ("jh", "jh"), "k": ("k", "k"), "kcl": ("cl", "sil"),
    "l": ("l", "l"), "m": ("m", "m"), "n": ("n", "n"), "ng": ("ng", "ng"),
    "nx": ("n", "n"), "ow": ("ow", "ow"), "oy": ("oy", "oy"), "p": ("p", "p"),
    "pau": ("sil", "sil"), "pcl": ("cl", "sil"), "q": (None, None), "r": ("r", "r"),
    "s": ("s", "s"), "sh": ("sh", "sh"), "t": ("t", "t"), "tcl": ("cl", "sil"),
    "th": ("th", "th"), "uh": ("uh", "uh"), "uw": ("uw", "uw"), "ux": ("uw", "uw"),
    "v": ("v", "v"), "w": ("w", "w"), "y": ("y", "y"), "z": ("z", "z"), "zh": ("zh", "sh"),
}  # fmt: skip
PHONE_SETS = (39, 48, 61)

# The core test set: 24 speakers, two men and a woman from each dialect region (Kaldi's
# conf/test_spk.list; the TIMIT documentation's "core test set").
CORE_TEST = frozenset(
    "mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0 "
    "mbpm0 mklt0 fnlp0 mcmj0 mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0".split()
)


def phone_set(phones: int) -> tuple[list[str], dict[str, int | None]]:
    """The chosen set's phones (sorted: a class is an index into them) and the class of each of
    the 61 TIMIT phones (None: its frames are dropped, q in the 48 and 39 sets)."""
    if phones not in PHONE_SETS:
        raise UserError(f"--phones must be one of {', '.join(map(str, PHONE_SETS))}, got {phones}")
    fold = {p: {61: p, 48: m48, 39: m39}[phones] for p, (m48, m39) in PHONE_MAP.items()}
    names = sorted({v for v in fold.values() if v is not None})
    return names, {p: None if v is None else names.index(v) for p, v in fold.items()}


def read_audio(path: Path) -> np.ndarray:
    """16-bit mono samples of a NIST SPHERE file (TIMIT's .WAV), or of a RIFF WAV converted
    from one (sph2pipe -f wav)."""
    note_input(path)
    with open(path, "rb") as f:
        head = f.read(1024)
        if head.startswith(b"RIFF"):
            f.seek(0)
            with wave.open(f) as w:
                if w.getsampwidth() != 2 or w.getnchannels() != 1:
                    raise UserError(f"{path}: expected 16-bit mono audio")
                return np.frombuffer(w.readframes(w.getnframes()), "<i2")
        if not head.startswith(b"NIST_1A"):
            raise UserError(f"{path} is neither NIST SPHERE nor RIFF WAV: is this TIMIT?")
        size = int(head.split(b"\n")[1])
        f.seek(0)
        fields = {}
        for line in f.read(size).decode("ascii", "replace").splitlines()[2:]:
            parts = line.split(None, 2)
            if parts and parts[0] == "end_head":
                break
            if len(parts) == 3:
                fields[parts[0]] = parts[2].strip()
        coding = fields.get("sample_coding", "pcm")
        if coding != "pcm" or fields.get("sample_n_bytes", "2") != "2":
            raise UserError(
                f"{path}: SPHERE coding {coding!r} with {fields.get('sample_n_bytes')} bytes per "
                "sample is not 16-bit PCM: convert it with `sph2pipe -f wav`"
            )
        order = "<" if fields.get("sample_byte_format", "01") == "01" else ">"
        return np.frombuffer(f.read(), f"{order}i2")


def read_phn(path: Path) -> list[tuple[int, int, str]]:
    """(first sample, end sample, phone) of a .PHN file."""
    segments = []
    note_input(path)
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise UserError(f"{path} line {n}: expected 'START END PHONE', got {line!r}")
        if parts[2] not in PHONE_MAP:
            raise UserError(f"{path} line {n}: {parts[2]!r} is not one of the 61 TIMIT phones")
        segments.append((int(parts[0]), int(parts[1]), parts[2]))
    return segments


def fbank(samples: np.ndarray, bins: int = 40) -> np.ndarray:
    """Kaldi's compute-fbank-feats with its defaults (25 ms Povey windows every 10 ms,
    pre-emphasis 0.97, log power mel energies) but no dither, so features are deterministic."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.mel_opts.num_bins = bins
    computer = knf.OnlineFbank(opts)
    computer.accept_waveform(SAMPLE_RATE, samples.astype(np.float32))
    computer.input_finished()
    frames = [computer.get_frame(i) for i in range(computer.num_frames_ready)]
    return np.asarray(frames, dtype=np.float32).reshape(len(frames), bins)


def frame_labels(segments: list[tuple[int, int, str]], frames: int, classes: dict) -> np.ndarray:
    """The class of the phone under each frame's centre sample; -1 where none (or q)."""
    centre = np.arange(frames) * FRAME_SHIFT + FRAME_LENGTH // 2
    labels = np.full(frames, -1, dtype=np.int64)
    for start, end, phone in segments:
        if classes[phone] is not None:
            labels[(centre >= start) & (centre < end)] = classes[phone]
    return labels


def _child(folder: Path, name: str) -> Path | None:
    """`folder/name` in any letter case (the LDC discs are upper case, many copies lower)."""
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.name.lower() == name:
            return p
    return None


def speakers(corpus: Path, split: str) -> dict[str, list[Path]]:
    """speaker → the .WAV files of their SI and SX sentences; SA sentences, read by every
    speaker, are left out as is standard. Test speakers: the core test set only."""
    top = _child(corpus, split)
    if top is None:
        raise UserError(
            f"no {split.upper()} folder in {corpus}: point --corpus (config `corpus`) at the "
            "TIMIT folder holding TRAIN/ and TEST/"
        )
    found: dict[str, list[Path]] = {}
    for region in sorted(p for p in top.iterdir() if p.name.lower().startswith("dr")):
        for spk in sorted(p for p in region.iterdir() if p.is_dir()):
            if split == "test" and spk.name.lower() not in CORE_TEST:
                continue
            utts = sorted(
                w
                for w in spk.iterdir()
                if w.suffix.lower() == ".wav" and w.stem.lower()[:2] in ("si", "sx")
            )
            if utts:
                found[spk.name.lower()] = utts
    if not found:
        raise UserError(f"no speakers with SI/SX sentences under {top}: is this the TIMIT tree?")
    return found


def _phn(wav: Path) -> Path:
    for suffix in (".PHN", ".phn"):
        if wav.with_suffix(suffix).is_file():
            return wav.with_suffix(suffix)
    raise UserError(f"{wav.with_suffix('.PHN')} is missing: each .WAV needs its transcription")


def _speaker_frames(
    utts: list[Path], classes: dict, context: int, cmvn: str, tally: dict
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One speaker's spliced frames with phone labels, CMVN over all the speaker's frames."""
    feats, labels = [], []
    for wav in utts:
        x = fbank(read_audio(wav))
        feats.append(x)
        labels.append(frame_labels(read_phn(_phn(wav)), len(x), classes))
    stats = cmvn_stats(np.concatenate(feats))
    for x, y in zip(feats, labels, strict=True):
        keep = y >= 0
        tally["utterances"] += 1
        tally["frames"] += int(keep.sum())
        tally["dropped_frames"] += int((~keep).sum())
        yield splice(apply_cmvn(x, stats, cmvn), context)[keep], y[keep]


def prepare_timit_raw(
    out: str | Path,
    corpus: str | Path,
    phones: int = 39,
    context: int = 4,
    cmvn: str = "mean",
    log: Callable[[str], None] = print,
) -> None:
    """The LDC TIMIT tree → dataset file: train = every TRAIN speaker's SI/SX sentences (3,696),
    test = the core test set's (192)."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise UserError(
            f"TIMIT corpus folder {corpus} does not exist: put the LDC93S1 TIMIT/ folder there "
            "(or set data_root / --corpus)"
        )
    check_options(context, cmvn)
    names, classes = phone_set(phones)
    splits = {s: speakers(corpus, s) for s in ("train", "test")}
    tallies = {
        s: {"speakers": len(v), "utterances": 0, "frames": 0, "dropped_frames": 0}
        for s, v in splits.items()
    }

    def pieces(split: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for n, utts in enumerate(splits[split].values(), 1):
            yield from _speaker_frames(utts, classes, context, cmvn, tallies[split])
            if n % 50 == 0:
                log(f"{split}: {n}/{len(splits[split])} speakers")

    def details() -> dict:
        return {
            "features": "kaldi-native-fbank, 40 log-mel bins, 25/10 ms, no dither",
            "context": context,
            "cmvn": cmvn,
            "phones": phones,
            "classes": names,
            "splits": tallies,
        }

    source = f"TIMIT corpus ({corpus.name}), {phones} phones"
    pieces_of = {s: pieces(s) for s in splits}
    stream_dataset(out, "timit", pieces_of, len(names), source, details=details)
    for split, t in tallies.items():
        log(
            f"{split}: {t['speakers']} speakers, {t['utterances']} utterances, {t['frames']} "
            f"frames ({t['dropped_frames']} unlabelled or q frames dropped)"
        )
