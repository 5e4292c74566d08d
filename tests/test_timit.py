"""TIMIT without Kaldi: SPHERE/PHN reading, frame labels, fbank, split and CMVN, on a tiny
corpus generated in the LDC layout (TIMIT itself is licensed and not here)."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import h5py
import numpy as np
import pytest

from sharpminima.cli import main
from sharpminima.data.dataset import load_dataset
from sharpminima.data.frames import apply_cmvn, cmvn_stats, splice
from sharpminima.data.timit import PHONE_MAP, fbank, frame_labels, phone_set, read_audio, read_phn

# 3,600 samples = 21 frames; centres at 200 + 160 t.
PHN = "0 1000 h#\n1000 2000 aa\n2000 2500 q\n2500 3600 sh\n"


def sphere(samples: np.ndarray, byte_format: str = "01", coding: str = "pcm") -> bytes:
    """A NIST SPHERE file as on the TIMIT discs: a 1024-byte ASCII header, then the samples."""
    fields = [
        "database_id -s5 TIMIT",
        f"sample_count -i {len(samples)}",
        "sample_rate -i 16000",
        "channel_count -i 1",
        "sample_n_bytes -i 2",
        f"sample_byte_format -s2 {byte_format}",
        f"sample_coding -s{len(coding)} {coding}",
        "end_head",
    ]
    header = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\n").encode().ljust(1024, b" ")
    order = "<" if byte_format == "01" else ">"
    return header + samples.astype(f"{order}i2").tobytes()


def riff(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def write_utt(folder: Path, name: str, rng: np.random.Generator, upper: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    samples = (rng.standard_normal(3600) * rng.uniform(200, 2000)).astype(np.int16)
    wav, phn = (
        (f"{name}.WAV", f"{name}.PHN") if upper else (f"{name.lower()}.wav", f"{name.lower()}.phn")
    )
    (folder / wav).write_bytes(sphere(samples))
    (folder / phn).write_text(PHN)


@pytest.fixture
def corpus(tmp_path):
    """Two training speakers, the core-test speaker MDAB0 and a non-core test speaker; each
    reads SA1 (to be left out) and SI/SX sentences."""
    rng = np.random.default_rng(0)
    root = tmp_path / "TIMIT"
    speakers = {
        "TRAIN/DR1/FCJF0": ["SA1", "SI648", "SX38"],
        "TRAIN/DR2/MKLN0": ["SA1", "SX12"],
        "TEST/DR1/MDAB0": ["SA1", "SI1039", "SX49"],
        "TEST/DR1/MREB0": ["SI1375"],  # not in the core test set
    }
    for folder, utts in speakers.items():
        for utt in utts:
            write_utt(root / folder, utt, rng)
    return tmp_path


def test_sphere_and_riff_samples_are_read_exactly(tmp_path):
    samples = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    for name, payload in [
        ("le.wav", sphere(samples, "01")),
        ("be.wav", sphere(samples, "10")),
        ("riff.wav", riff(samples)),
    ]:
        (tmp_path / name).write_bytes(payload)
        assert read_audio(tmp_path / name).tolist() == samples.tolist(), name


def test_frame_labels_follow_the_phone_under_each_centre(tmp_path):
    (tmp_path / "a.phn").write_text(PHN)
    segments = read_phn(tmp_path / "a.phn")
    names, classes = phone_set(39)
    labels = frame_labels(segments, 21, classes)
    sil, aa, sh = names.index("sil"), names.index("aa"), names.index("sh")
    # centres 200..840 in h#, 1000..1960 in aa, 2120..2440 in q (dropped: -1), 2600..3400 in sh
    assert labels.tolist() == [sil] * 5 + [aa] * 7 + [-1] * 3 + [sh] * 6
    names61, classes61 = phone_set(61)
    assert frame_labels(segments, 21, classes61).tolist()[12:15] == [names61.index("q")] * 3


def test_phone_sets_fold_as_lee_and_hon():
    for size in (39, 48, 61):
        names, classes = phone_set(size)
        assert len(names) == size and set(classes) == set(PHONE_MAP)
    names, classes = phone_set(39)
    for a, b in [("ao", "aa"), ("ix", "ih"), ("el", "l"), ("zh", "sh"), ("pcl", "h#")]:
        assert classes[a] == classes[b]
    assert classes["q"] is None


def test_fbank_puts_a_tone_in_its_mel_bin():
    t = np.arange(16000) / 16000
    bins = []
    for hz in (500, 1000, 4000):
        feats = fbank((np.sin(2 * np.pi * hz * t) * 10000).astype(np.int16))
        assert feats.shape == (1 + (16000 - 400) // 160, 40)
        bins.append(int(np.median(feats.argmax(1))))

    def mel(f):
        return 1127 * np.log(1 + f / 700)

    centres = np.linspace(mel(20), mel(8000), 42)[1:-1]  # Kaldi's 40 triangular bins
    assert bins == [int(np.abs(centres - mel(hz)).argmin()) for hz in (500, 1000, 4000)]


def test_prepare_splits_labels_and_normalizes_per_speaker(corpus, capsys):
    out = corpus / "timit.h5"
    assert main(["prepare", "timit-raw", "--root", str(corpus), "--out", str(out)]) == 0
    ds = load_dataset(out)
    assert ds.num_classes == 39 and ds.input_shape == (360,)
    # train: FCJF0 SI648, SX38 and MKLN0 SX12 (no SA1); test: MDAB0 only (core), 18 frames each
    assert len(ds.x_train) == 3 * 18 and len(ds.x_test) == 2 * 18
    root = corpus / "TIMIT" / "TEST" / "DR1" / "MDAB0"
    feats = [fbank(read_audio(root / f"{u}.WAV")) for u in ("SI1039", "SX49")]
    stats = cmvn_stats(np.concatenate(feats))
    keep = frame_labels(read_phn(root / "SI1039.PHN"), 21, phone_set(39)[1]) >= 0
    expected = splice(apply_cmvn(feats[0], stats, "mean"), 4)[keep]
    np.testing.assert_allclose(ds.x_test[:18].numpy(), expected, atol=1e-5)
    with h5py.File(out) as f:
        details = json.loads(f.attrs["details"])
    assert details["splits"]["train"] == {
        "speakers": 2,
        "utterances": 3,
        "frames": 54,
        "dropped_frames": 9,
    }
    assert details["classes"] == phone_set(39)[0]
    assert "test: 1 speakers, 2 utterances, 36 frames" in capsys.readouterr().err


def test_lower_case_copies_and_61_phones(tmp_path):
    rng = np.random.default_rng(1)
    write_utt(tmp_path / "timit" / "train" / "dr1" / "fcjf0", "SI648", rng, upper=False)
    write_utt(tmp_path / "timit" / "test" / "dr1" / "mdab0", "SX49", rng, upper=False)
    out = tmp_path / "t.h5"
    args = ["--corpus", str(tmp_path / "timit"), "--phones", 61, "--context", 1, "--cmvn", "none"]
    assert main(["prepare", "timit-raw", "--out", str(out), *map(str, args)]) == 0
    ds = load_dataset(out)
    assert ds.num_classes == 61 and ds.input_shape == (120,) and len(ds.x_train) == 21


def one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.mark.parametrize(
    "damage, words",
    [
        ("nothing-there", "does not exist"),
        ("shorten", "sph2pipe"),
        ("bad-phn", "SX38.PHN line 2"),
        ("no-phn", "SX38.PHN is missing"),
        ("phones", "--phones must be one of"),
    ],
)
def test_bad_corpus_is_one_line(corpus, capsys, damage, words):
    spk = corpus / "TIMIT" / "TRAIN" / "DR1" / "FCJF0"
    args = ["--root", str(corpus)]
    if damage == "nothing-there":
        args = ["--corpus", str(corpus / "elsewhere")]
    elif damage == "shorten":
        samples = read_audio(spk / "SX38.WAV")
        (spk / "SX38.WAV").write_bytes(sphere(samples, coding="pcm,embedded-shorten-v2.00"))
    elif damage == "bad-phn":
        (spk / "SX38.PHN").write_text("0 1000 h#\n1000 aa\n")
    elif damage == "no-phn":
        (spk / "SX38.PHN").unlink()
    else:
        args += ["--phones", "40"]
    out = corpus / "timit.h5"
    assert main(["prepare", "timit-raw", "--out", str(out), *args]) == 2
    assert words in one_line(capsys)
    assert not out.exists()
