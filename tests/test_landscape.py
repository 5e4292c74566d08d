import math

import numpy as np
import pytest

from sharpminima.analysis.figures import parametric
from sharpminima.errors import UserError
from sharpminima.measures.landscape import LandscapeConfig, coefficients, landscape, read_landscape
from sharpminima.store import Run
from sharpminima.train.trainer import TrainConfig, train

from .conftest import cli

QUIET = {"log": lambda m: None}


@pytest.fixture(scope="module")
def trial(tmp_path_factory, mnist_like):
    """SB and LB runs of one trial (same seed, same initial point)."""
    folder = tmp_path_factory.mktemp("trial")
    runs = {}
    for regime, batch in (("SB", 32), ("LB", 0.1)):
        cfg = TrainConfig(
            "F1", batch_size=batch, seed=0, max_epochs=3, stop="fixed", eval_chunk=200
        )
        runs[regime] = train(cfg, mnist_like, folder / f"{regime}.h5", label=regime, **QUIET)
    return runs


def test_coefficients_hit_both_minimizers():
    for kind in ("linear", "curvilinear"):
        assert coefficients(kind, 0) == pytest.approx((1, 0))
        assert coefficients(kind, 1) == pytest.approx((0, 1), abs=1e-12)
    assert coefficients("linear", -1) == (2, -1)
    a, b = coefficients("curvilinear", 0.5)
    assert a == pytest.approx(math.sqrt(0.5)) and b == pytest.approx(math.sqrt(0.5))


@pytest.mark.parametrize("kind", ["linear", "curvilinear"])
def test_endpoints_are_the_runs_own_losses(tmp_path, trial, kind):
    cfg = LandscapeConfig(kind=kind, start=0, stop=1, points=3, chunk=200)
    out = landscape(trial["SB"], trial["LB"], tmp_path / "l.h5", cfg, **QUIET)
    attrs, d = read_landscape(out)
    for i, regime in ((0, "SB"), (-1, "LB")):
        last = Run(trial[regime]).history.iloc[-1]
        assert d["train_loss"][i] == pytest.approx(last.train_loss, rel=1e-5)
        assert d["test_acc"][i] == pytest.approx(last.test_acc)
    assert attrs["kind"] == kind and attrs["points"] == 3
    assert not (tmp_path / "l.h5.partial").exists()


def test_interrupted_landscape_recomputes_only_missing_points(tmp_path, trial):
    cfg = LandscapeConfig(points=6, chunk=200)
    ref = landscape(trial["SB"], trial["LB"], tmp_path / "ref.h5", cfg, **QUIET)

    class Stop(Exception):
        pass

    done = []

    def stop_after_three(message):
        done.append(message)
        if len(done) == 4:  # the header line, then three points
            raise Stop

    out = tmp_path / "l.h5"
    with pytest.raises(Stop):
        landscape(trial["SB"], trial["LB"], out, cfg, log=stop_after_three)
    assert not out.exists() and (tmp_path / "l.h5.partial").exists()
    messages = []
    landscape(trial["SB"], trial["LB"], out, cfg, log=messages.append)
    assert "3 of 6 α to do" in messages[0]
    for key, values in read_landscape(ref)[1].items():
        np.testing.assert_array_equal(values, read_landscape(out)[1][key])


def test_bad_pairs_and_figure(tmp_path, trial, mnist_like):
    other = train(
        TrainConfig(
            "F1", batch_size=32, max_epochs=1, stop="val_loss", val_size=50, eval_chunk=200
        ),
        mnist_like,
        tmp_path / "other.h5",
        **QUIET,
    )
    with pytest.raises(UserError, match="different data"):
        landscape(trial["SB"], other, tmp_path / "x.h5", LandscapeConfig(), **QUIET)
    with pytest.raises(UserError, match="unknown landscape kind"):
        landscape(trial["SB"], trial["LB"], tmp_path / "x.h5", LandscapeConfig(kind="x"), **QUIET)
    out = landscape(
        trial["SB"], trial["LB"], tmp_path / "l.h5", LandscapeConfig(points=5, chunk=200), **QUIET
    )
    written = parametric(out, tmp_path / "fig")
    assert [p.suffix for p in written] == [".png", ".pdf"]
    assert all(p.stat().st_size > 5000 for p in written)
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_landscape_and_figure(tmp_path, trial):
    out = tmp_path / "c.h5"
    cli(
        "landscape",
        "--sb",
        trial["SB"],
        "--lb",
        trial["LB"],
        "--kind",
        "curvilinear",
        "--points",
        "4",
        "--chunk",
        "200",
        "--buffers",
        "0",
        "--out",
        out,
    )
    attrs, d = read_landscape(out)
    assert not attrs["buffers"] and len(d["alpha"]) == 4
    cli("figure", "parametric", out, "--out", tmp_path / "fig.png")
    assert (tmp_path / "fig.pdf").exists()
