"""Filter-normalised surfaces: the directions, a grid split into parts and merged, resume after a
kill, and the figures."""

import numpy as np
import pytest
import torch
from torch import nn

from sharpminima.analysis.figures import loss_surface
from sharpminima.measures.surface import (
    SurfaceConfig,
    filter_normalised,
    merge,
    read_surface,
    surface,
)
from sharpminima.runtime import evaluate
from sharpminima.store import Run

from .conftest import assert_one_line_error, cli

SMALL = SurfaceConfig(dims=2, span=0.5, points=3, chunk=300)


def test_each_filter_of_a_direction_has_its_weights_norm_and_biases_none():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 5))
    d = filter_normalised(model, torch.Generator().manual_seed(1))
    conv, bias, gamma, beta, linear, linear_bias = d
    w = model[0].weight.detach()
    torch.testing.assert_close(conv.reshape(4, -1).norm(dim=1), w.reshape(4, -1).norm(dim=1))
    torch.testing.assert_close(linear.norm(dim=1), model[3].weight.detach().norm(dim=1))
    for zero in (bias, gamma, beta, linear_bias):
        assert not zero.any()
    again = filter_normalised(model, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(d, again, strict=True))  # seeded


def test_the_centre_is_the_minimizer_and_a_line_has_one_beta(trials, tmp_path):
    run = trials["SB"][0]
    cfg = SurfaceConfig(dims=1, span=1.0, points=5, chunk=300)
    attrs, d = read_surface(surface(run, tmp_path / "line.h5", cfg, log=lambda m: 0))
    assert d["train_loss"].shape == (5, 1) and list(d["beta"]) == [0.0]
    r = Run(run)
    data = r.data()
    centre = evaluate(r.model(), data.x_train, data.y_train, 300, "batch")
    assert d["train_loss"][2, 0] == pytest.approx(centre[0], rel=1e-6)
    assert d["train_loss"][0, 0] > d["train_loss"][2, 0] < d["train_loss"][4, 0]
    assert attrs["regime"] == "SB" and attrs["dims"] == 1 and attrs["device"]


def test_parts_merged_equal_one_job_and_a_killed_part_resumes(trials, tmp_path):
    run = trials["LB"][0]
    whole = read_surface(surface(run, tmp_path / "whole.h5", SMALL, log=lambda m: 0))[1]

    def killed_after_two(message):
        if message.startswith("point 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        surface(run, tmp_path / "p0.h5", SMALL, part=0, parts=2, log=killed_after_two)
    assert (tmp_path / "p0.h5.partial").exists() and not (tmp_path / "p0.h5").exists()
    lines = []
    surface(run, tmp_path / "p0.h5", SMALL, part=0, parts=2, log=lines.append)
    assert "3 of 5 points to do" in lines[0]  # points 0, 2, 4, 6, 8 of the 3 × 3 grid
    surface(run, tmp_path / "p1.h5", SMALL, part=1, parts=2, log=lambda m: 0)
    merged = read_surface(merge([tmp_path / "p0.h5", tmp_path / "p1.h5"], tmp_path / "s.h5"))[1]
    for key, value in whole.items():
        np.testing.assert_array_equal(merged[key], value, err_msg=key)


def test_merge_refuses_a_missing_part_and_the_figures_draw(trials, tmp_path):
    run = trials["LB"][1]
    parts = [tmp_path / f"p{i}.h5" for i in range(3)]
    for i, path in enumerate(parts):
        cli("surface", "compute", run, "--dims", "2", "--points", "3", "--chunk", "300",
            "--part", i, "--parts", 3, "--out", path)  # fmt: skip
    bad = cli("surface", "merge", *parts[:2], "--out", tmp_path / "s.h5", check=False)
    assert_one_line_error(bad, "do not cover the grid once each", "all 3 parts")
    assert not (tmp_path / "s.h5").exists()
    cli("surface", "merge", *parts, "--out", tmp_path / "s.h5")
    assert all(p.stat().st_size > 5000 for p in loss_surface(tmp_path / "s.h5", tmp_path / "f"))
    line = surface(run, tmp_path / "l.h5", SurfaceConfig(dims=1, points=4, chunk=300), log=print)
    assert all(p.stat().st_size > 5000 for p in loss_surface(line, tmp_path / "g"))
    bad = cli("surface", "compute", run, "--part", "2", "--parts", "2", "--out", tmp_path / "x",
              check=False)  # fmt: skip
    assert_one_line_error(bad, "--part must be in 0..1")
