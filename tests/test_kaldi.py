"""TIMIT from Kaldi: splicing, CMVN, alignments and the guards, on files written by kaldiio in
Kaldi's own formats (the corpus itself is licensed and not here)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import h5py
import kaldiio
import numpy as np
import pytest

from sharpminima.cli import main
from sharpminima.data.dataset import load_dataset
from sharpminima.data.frames import apply_cmvn, cmvn_stats, splice

DIM = 3


def write_split(
    folder: Path,
    utts: dict[str, tuple[str, int]],
    seed: int,
    compressed: bool = True,
    text_ali: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A Kaldi data directory for `utts` (id -> (speaker, frames)): feats.scp/ark, utt2spk,
    cmvn.scp/ark with per-speaker statistics, and pdf.ark as ali-to-pdf writes it.
    Returns each utterance's features (as stored) and pdf ids."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    feats = {
        u: (rng.standard_normal((n, DIM)) * 3 + 5).astype(np.float32) for u, (_, n) in utts.items()
    }
    ali = {u: rng.integers(0, 7, n).astype(np.int32) for u, (_, n) in utts.items()}
    method = 2 if compressed else None  # 2: Kaldi's kSpeechFeature compression
    kaldiio.save_ark(
        str(folder / "feats.ark"), feats, scp=str(folder / "feats.scp"), compression_method=method
    )
    stored = dict(kaldiio.load_scp(str(folder / "feats.scp")))  # compression is lossy
    (folder / "utt2spk").write_text("".join(f"{u} {s}\n" for u, (s, _) in sorted(utts.items())))
    speakers = {s for s, _ in utts.values()}
    stats = {
        s: cmvn_stats(np.concatenate([stored[u] for u, (sp, _) in utts.items() if sp == s]))
        for s in speakers
    }
    kaldiio.save_ark(str(folder / "cmvn.ark"), stats, scp=str(folder / "cmvn.scp"))
    kaldiio.save_ark(str(folder / "pdf.ark"), ali, text=text_ali)
    return {u: (stored[u], ali[u].astype(np.int64)) for u in utts}


@pytest.fixture
def corpus(tmp_path):
    """ROOT/timit-kaldi/{train,test} with a speaker of two utterances in each split, plus one
    utterance without alignment (train) and one alignment without features (test)."""
    base = tmp_path / "timit-kaldi"
    train = write_split(
        base / "train", {"s1_a": ("s1", 7), "s1_b": ("s1", 5), "s2_a": ("s2", 1)}, seed=1
    )
    test = write_split(
        base / "test",
        {"s3_a": ("s3", 4), "s3_b": ("s3", 6)},
        seed=2,
        compressed=False,
        text_ali=True,
    )
    # s2_a loses its alignment; the test alignments gain an utterance with no features.
    ali = dict(kaldiio.load_ark(str(base / "train" / "pdf.ark")))
    del ali["s2_a"]
    kaldiio.save_ark(str(base / "train" / "pdf.ark"), ali)
    with open(base / "test" / "pdf.ark", "a") as f:
        f.write("ghost 1 2 3\n")
    del train["s2_a"]
    return tmp_path, train, test


def prepare(root: Path, *extra: object) -> int:
    return main(["prepare", "timit-kaldi", "--root", str(root), *map(str, extra)])


def test_splice_repeats_edge_frames():
    feats = np.array([[1, 10], [2, 20], [3, 30]], dtype=np.float32)
    expected = [
        [1, 10, 1, 10, 2, 20],  # t=0: frame -1 is frame 0 repeated
        [1, 10, 2, 20, 3, 30],
        [2, 20, 3, 30, 3, 30],  # t=2: frame 3 is frame 2 repeated
    ]
    assert splice(feats, 1).tolist() == expected
    one = np.array([[7.0, 8.0]], dtype=np.float32)
    assert splice(one, 4).tolist() == [[7.0, 8.0] * 9]  # a one-frame utterance: 9 copies
    assert splice(feats, 0).tolist() == feats.tolist()


def test_cmvn_matches_kaldi_definitions():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 4)) * [1, 2, 3, 4] + [5, 6, 7, 8]).astype(np.float32)
    stats = cmvn_stats(x)
    assert stats.shape == (2, 5) and stats[0, -1] == 50
    mean = apply_cmvn(x, stats, "mean")
    np.testing.assert_allclose(mean, x - x.mean(0), atol=1e-5)
    meanvar = apply_cmvn(x, stats, "meanvar")
    np.testing.assert_allclose(meanvar, (x - x.mean(0)) / x.std(0), atol=1e-4)
    assert apply_cmvn(x, stats, "none") is x


@pytest.mark.parametrize("cmvn", ["none", "mean", "meanvar"])
def test_prepare_from_kaldi_directories(corpus, cmvn, capsys):
    root, train, test = corpus
    out = root / "timit.h5"
    assert prepare(root, "--out", out, "--cmvn", cmvn, "--context", 2) == 0
    ds = load_dataset(out)
    assert ds.input_shape == (5 * DIM,)
    assert ds.num_classes == 1 + max(int(a.max()) for _, a in [*train.values(), *test.values()])
    for split, utts in (("train", train), ("test", test)):
        stats = {}
        if cmvn != "none":  # each split's aligned utterances share one speaker
            stats = {u: cmvn_stats(np.concatenate([f for f, _ in utts.values()])) for u in utts}
        x = np.concatenate(
            [splice(apply_cmvn(f, stats.get(u), cmvn), 2) for u, (f, _) in utts.items()]
        )
        y = np.concatenate([a for _, a in utts.values()])
        np.testing.assert_allclose(getattr(ds, f"x_{split}").numpy(), x, atol=1e-5)
        assert getattr(ds, f"y_{split}").tolist() == y.tolist()
    with h5py.File(out) as f:
        details = json.loads(f.attrs["details"])
    assert details["splits"]["train"]["features_without_alignment"] == 1
    assert details["splits"]["train"]["examples_without_alignment"] == ["s2_a"]
    assert details["splits"]["test"]["alignments_without_features"] == 1
    assert details["splits"]["train"]["frames"] == 12 and details["cmvn"] == cmvn
    err = capsys.readouterr().err
    assert "train: 2 utterances, 12 frames; 1 with features but no alignment (e.g. s2_a)" in err
    assert "1 aligned but without features (e.g. ghost)" in err


def test_classes_from_config_and_rspecifiers(corpus):
    root, train, _ = corpus
    base = root / "timit-kaldi"
    out = root / "timit.h5"
    # rspecifiers and files instead of directories; the train alignments gzipped and split in
    # two files, as ali-to-pdf output per job often is.
    ali = list(kaldiio.load_ark(str(base / "train" / "pdf.ark")))
    parts = []
    for i, half in enumerate((ali[:1], ali[1:])):
        parts.append(base / f"pdf.{i}.ark.gz")
        with gzip.open(parts[-1], "wb") as f:
            kaldiio.save_ark(f, dict(half))
    args = ["--train", f"scp:{base / 'train' / 'feats.scp'}", "--test", base / "test" / "feats.ark"]
    args += ["--train-ali", *parts, "--test-ali", f"ark,t:{base / 'test' / 'pdf.ark'}"]
    assert prepare(root, "--out", out, *args, "--classes", 1973) == 0
    ds = load_dataset(out)
    assert ds.num_classes == 1973 and ds.input_shape == (9 * DIM,)
    assert len(ds.x_train) == sum(len(a) for _, a in train.values())
    assert ds.y_train.tolist() == np.concatenate([a for _, a in train.values()]).tolist()


def test_relative_scp_paths_start_from_kaldi_root(corpus, monkeypatch):
    root, _, _ = corpus
    base = root / "timit-kaldi" / "train"
    scp = base / "feats.scp"
    scp.write_text(scp.read_text().replace(str(base) + "/", "data/train/"))
    monkeypatch.chdir(root)  # Kaldi resolves them from the recipe folder; here it is elsewhere
    assert prepare(root, "--out", root / "a.h5") == 2
    kaldi = root / "recipe"
    (kaldi / "data").mkdir(parents=True)
    (kaldi / "data" / "train").symlink_to(base)
    assert prepare(root, "--out", root / "b.h5", "--kaldi-root", kaldi) == 0


def one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_frame_count_mismatch_names_the_utterance(corpus, capsys):
    root, _, _ = corpus
    ali_file = root / "timit-kaldi" / "train" / "pdf.ark"
    ali = dict(kaldiio.load_ark(str(ali_file)))
    ali["s1_b"] = ali["s1_b"][:-1]
    kaldiio.save_ark(str(ali_file), ali)
    out = root / "timit.h5"
    assert prepare(root, "--out", out) == 2
    assert "utterance s1_b: 5 feature frames but 4 aligned frames" in one_line(capsys)
    assert not out.exists() and not list(root.glob(".timit.h5*"))


def test_pipes_are_refused_unless_allowed(corpus, capsys):
    root, _, _ = corpus
    marker = root / "ran"
    ali = root / "timit-kaldi" / "train" / "pdf.ark"
    pipe = f"ark:touch {marker}; cat {ali} |"
    out = root / "timit.h5"
    assert prepare(root, "--out", out, "--train-ali", pipe) == 2
    assert "shell command" in one_line(capsys) and not marker.exists() and not out.exists()
    # A pipe inside an scp is refused the same way.
    scp = root / "timit-kaldi" / "test" / "feats.scp"
    scp.write_text(scp.read_text() + f"s3_c touch {marker}; true |\n")
    assert prepare(root, "--out", out) == 2
    assert "feats.scp line 3 is a shell command" in one_line(capsys) and not marker.exists()
    scp.write_text("".join(scp.read_text().splitlines(keepends=True)[:2]))
    assert prepare(root, "--out", out, "--train-ali", pipe, "--allow-pipes") == 0
    assert marker.exists() and out.exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--classes", 3], "beyond --classes 3"),
        (["--cmvn", "mean", "--train", "{base}/train/feats.ark"], "needs a data directory"),
        (["--cmvn", "global"], "unknown --cmvn"),
        (["--test-ali", "{base}/nowhere.ark"], "nowhere.ark does not exist"),
        (["--train-ali", "{base}/train/feats.ark"], "not a vector of pdf ids"),
    ],
)
def test_bad_input_is_one_line(corpus, capsys, args, words):
    root, _, _ = corpus
    base = root / "timit-kaldi"
    out = root / "timit.h5"
    assert prepare(root, "--out", out, *[str(a).format(base=base) for a in args]) == 2
    assert words in one_line(capsys)
    assert not out.exists()
