import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from sharpminima.data.dataset import make_synthetic
from sharpminima.errors import UserError
from sharpminima.models import build
from sharpminima.store import Run
from sharpminima.train.trainer import Stopper, TrainConfig, resolve_count, train

from .conftest import assert_one_line_error, cli

QUIET = {"log": lambda message: None}


def test_resolve_count():
    assert resolve_count(256, 60_000, "batch size") == 256
    assert resolve_count(0.1, 60_000, "batch size") == 6_000
    assert resolve_count(0.1, 55_000, "batch size") == 5_500
    with pytest.raises(UserError, match="larger than the 100 examples"):
        resolve_count(101, 100, "batch size")
    for bad in (0, -3, 2.5, 1.0000001):
        with pytest.raises(UserError, match="positive integer or a fraction"):
            resolve_count(bad, 100, "batch size")


def test_stopper_rules():
    rows = [{"val_loss": v, "train_loss": v} for v in (1.0, 0.5, 0.6, 0.55, 0.5, 0.49)]
    stop = Stopper("val_loss", patience=3, rel_tol=0.0)
    reasons = [stop.update(e, r) for e, r in enumerate(rows[:5], 1)]
    assert reasons[:4] == [None] * 4 and "3 epochs" in reasons[4] and stop.best_epoch == 2
    # A relative tolerance makes small decreases count as no improvement.
    stop = Stopper("train_loss", patience=2, rel_tol=0.1)
    assert stop.update(1, {"train_loss": 1.0}) is None
    assert stop.update(2, {"train_loss": 0.95}) is None  # -5%: not an improvement
    assert stop.update(3, {"train_loss": 0.92}) is not None and stop.best_epoch == 1
    fixed = Stopper("fixed", 1, 0.0)
    assert all(fixed.update(e, {"train_loss": 1.0}) is None for e in range(50))


def test_progress_bar_only_when_asked(tmp_path, mnist_like, capsys):
    cfg = TrainConfig("F1", batch_size=100, max_epochs=1, stop="fixed", eval_chunk=200)
    train(cfg, mnist_like, tmp_path / "quiet.h5", device="cpu", **QUIET)
    assert "batch" not in capsys.readouterr().err
    train(cfg, mnist_like, tmp_path / "bar.h5", device="cpu", bar=True, **QUIET)
    assert "/6 [" in capsys.readouterr().err  # a bar over the 6 batches of 100


def test_loss_falls_and_run_file_is_complete(tmp_path, mnist_like):
    cfg = TrainConfig(
        "F1", batch_size=32, seed=3, max_epochs=4, stop="fixed", save_every=2, eval_chunk=200
    )
    out = train(cfg, mnist_like, tmp_path / "run.h5", device="cpu", **QUIET)
    run = Run(out)
    h = run.history
    assert list(h.epoch) == [0, 1, 2, 3, 4]
    assert h.train_loss.iloc[-1] < 0.25 * h.train_loss.iloc[0]
    assert h.train_acc.iloc[-1] > h.train_acc.iloc[0] + 30
    assert run.epochs == [2, 4]
    a = run.attrs
    assert a["seed"] == 3 and a["batch_size"] == 32 and a["network"] == "F1"
    assert a["epochs"] == 4 and a["optimizer"] == "adam" and a["lr"] == 1e-3
    assert a["device"].startswith("cpu") and a["versions"]["torch"] == torch.__version__
    assert a["steps_per_epoch"] == 19 and a["n_train"] == 600
    assert a["label"] == "" and run.label == "batch 32"  # unlabelled: named by its batch size
    init = build("F1", seed=3).state_dict()
    for k, v in run.state("init").items():
        assert torch.equal(v, init[k]), k
    for k, v in run.state(4).items():
        assert torch.equal(v, run.state("final")[k]), k
    # Iterates load back into a working model (weights and BatchNorm buffers).
    model = run.model(2)
    assert model[2].num_batches_tracked.item() == 2 * 19
    with pytest.raises(UserError, match="no iterate for epoch 3"):
        run.state(3)
    assert not (tmp_path / "run.h5.partial").exists()


def test_val_loss_rule_carves_validation_split(tmp_path, mnist_like):
    cfg = TrainConfig(
        "F1",
        batch_size=0.1,
        max_epochs=30,
        stop="val_loss",
        patience=2,
        val_size=100,
        eval_chunk=200,
    )
    run = Run(train(cfg, mnist_like, tmp_path / "run.h5", device="cpu", **QUIET))
    assert run.attrs["n_train"] == 500 and run.attrs["n_val"] == 100
    assert run.attrs["batch_size"] == 50  # 10% of the examples trained on
    assert len(run.val_index) == 100 and len(set(run.val_index.tolist())) == 100
    assert "val_loss" in run.history
    epochs = run.attrs["epochs"]
    if epochs < 30:
        assert "did not improve" in run.attrs["stop_reason"]
        best = run.history.val_loss.iloc[1:].idxmin()
        assert epochs - best == 2


def test_sb_and_lb_share_the_initial_point(tmp_path, mnist_like):
    runs = [
        Run(
            train(
                TrainConfig("F1", batch_size=b, seed=5, max_epochs=1, stop="fixed", eval_chunk=200),
                mnist_like,
                tmp_path / f"{b}.h5",
                **QUIET,
            )
        )
        for b in (32, 0.1)
    ]
    for k, v in runs[0].state("init").items():
        assert torch.equal(v, runs[1].state("init")[k])
    assert not torch.equal(runs[0].state()["1.weight"], runs[1].state()["1.weight"])


def _train_args(data, out):
    return [
        "--network",
        "F1",
        "--data",
        data,
        "--out",
        out,
        "--batch-size",
        "16",
        "--max-epochs",
        "5",
        "--stop",
        "fixed",
        "--seed",
        "1",
        "--threads",
        "1",
        "--eval-chunk",
        "200",
    ]


@pytest.mark.parametrize("kill_after", ["epoch_00000.pt", "checkpoint.pt", "epoch_00003.pt"])
def test_resume_after_sigkill_equals_uninterrupted(tmp_path, mnist_like, kill_after):
    ref = tmp_path / "ref.h5"
    cli("train", *_train_args(mnist_like, ref))
    out = tmp_path / "run.h5"
    work = tmp_path / "run.h5.partial"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sharpminima", "train", *map(str, _train_args(mnist_like, out))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (work / kill_after).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run must not leave a file at the output path"
    had_checkpoint = (work / "checkpoint.pt").exists()
    assert had_checkpoint or kill_after == "epoch_00000.pt"
    resumed = cli("train", *_train_args(mnist_like, out))
    assert ("resuming" in resumed.stderr) == had_checkpoint
    a, b = Run(ref), Run(out)
    for k, v in a.state("final").items():
        assert torch.equal(v, b.state("final")[k]), k
    assert a.epochs == b.epochs
    for col in ("train_loss", "test_loss", "train_acc"):
        np.testing.assert_array_equal(a.history[col], b.history[col])
    assert not work.exists()


def test_checkpoint_for_other_settings_is_not_resumed(tmp_path, mnist_like):
    out = tmp_path / "run.h5"
    cfg = TrainConfig("F1", batch_size=32, max_epochs=2, stop="fixed", eval_chunk=200)
    train(cfg, mnist_like, out, **QUIET)
    messages = []
    (tmp_path / "run.h5.partial").mkdir()
    torch.save({"identity": "something else"}, tmp_path / "run.h5.partial" / "checkpoint.pt")
    train(cfg, mnist_like, out, log=messages.append)
    assert any("afresh" in m for m in messages)
    assert Run(out).attrs["epochs"] == 2


def test_bad_training_inputs(tmp_path, mnist_like):
    out = tmp_path / "run.h5"

    def run(*extra, data=mnist_like, network="F1"):
        args = ["train", "--network", network, "--data", data, "--out", out, *extra]
        proc = cli(*args, check=False)
        assert not out.exists() and not (tmp_path / "run.h5.partial").exists()
        return proc

    assert_one_line_error(run(network="F9"), "unknown network 'F9'")
    assert_one_line_error(
        run("--batch-size", "100000", "--stop", "fixed"),
        "batch size 100000 is larger than the 600 examples",
    )
    assert_one_line_error(run("--optimizer", "lbfgs"), "unknown optimizer 'lbfgs'")
    assert_one_line_error(run("--stop", "sometimes"), "unknown stopping rule")
    assert_one_line_error(run(data=tmp_path / "absent.h5"), "does not exist")
    cifar_like = tmp_path / "cifar.h5"
    make_synthetic(cifar_like, 20, 10, (3, 32, 32), 10)
    assert_one_line_error(run(data=cifar_like), "F1 takes inputs of shape (784,)", "(3, 32, 32)")
    assert_one_line_error(run(data=cifar_like, network="C3"), "C3 has 100 outputs")
