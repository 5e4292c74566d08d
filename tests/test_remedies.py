"""Appendix E's remedies: each transform and loss term against its definition, and training
with them on (seeded, resumable, combinable)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sharpminima.models import build
from sharpminima.store import Run
from sharpminima.train import remedies
from sharpminima.train.trainer import TrainConfig, train

from .conftest import assert_one_line_error, cli

QUIET = {"log": lambda m: None}


def images(n=4, size=8):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_affine_flips_rotates_and_shifts_exactly():
    x, n = images(), 4
    zero, none = torch.zeros(n), torch.zeros(n, 2)
    assert torch.allclose(remedies.affine(x, zero, none, torch.ones(n)), x, atol=1e-6)
    flipped = remedies.affine(x, zero, none, -torch.ones(n))
    assert torch.allclose(flipped, x.flip(-1), atol=1e-6)
    quarter = remedies.affine(x, torch.full((n,), math.pi / 2), none, torch.ones(n))
    assert torch.allclose(quarter, x.rot90(1, (2, 3)), atol=1e-5) or torch.allclose(
        quarter, x.rot90(-1, (2, 3)), atol=1e-5
    )
    # One pixel to the right: column j shows column j-1, the first column repeats (border).
    shift = torch.tensor([[1 / 8, 0.0]]).repeat(n, 1)
    moved = remedies.affine(x, zero, shift, torch.ones(n))
    expected = torch.cat([x[..., :1], x[..., :-1]], -1)
    assert torch.allclose(moved, expected, atol=1e-6) or torch.allclose(
        moved, torch.cat([x[..., 1:], x[..., -1:]], -1), atol=1e-6
    )


def test_augment_is_seeded_and_varies_per_image():
    x = images(64)
    a = remedies.augment(x, torch.Generator().manual_seed(1))
    b = remedies.augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    same = images(64).new_ones(64, 3, 8, 8) * x[:1]  # 64 copies of one image
    out = remedies.augment(same, torch.Generator().manual_seed(2))
    assert len({round(float(o.sum()), 4) for o in out}) > 50  # each drew its own transform
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6  # interpolation only


def test_objective_terms():
    model = build("F1", seed=0).eval()  # eval: the same function on every call
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 10
    gen = torch.Generator().manual_seed(0)
    plain = F.cross_entropy(model(x), y)
    assert torch.equal(remedies.objective(model, x, y, gen), plain)
    adv = remedies.fgsm(model, x, y, 0.05)
    assert torch.allclose((adv - x).abs(), torch.full_like(x, 0.05))
    assert F.cross_entropy(model(adv), y) > plain  # a step up the loss
    mixed = remedies.objective(model, x, y, gen, fgsm_eps=0.05, fgsm_weight=0.25)
    expected = 0.75 * plain + 0.25 * F.cross_entropy(model(adv), y)
    assert torch.allclose(mixed, expected, atol=1e-6)
    still = remedies.objective(model, x, y, gen, stability=1.0, sigma=0.0)
    assert torch.allclose(still, plain)  # no perturbation, no divergence
    assert remedies.objective(model, x, y, gen, stability=1.0, sigma=0.5) > plain
    params = [torch.ones(3), torch.zeros(2)]
    assert remedies.proximal(params, [torch.zeros(3), torch.zeros(2)], 0.1).item() == (
        pytest.approx(0.15)
    )


def test_conservative_training_takes_its_steps_per_batch(tmp_path, mnist_like):
    cfg = TrainConfig("F1", batch_size=100, max_epochs=1, stop="fixed", eval_chunk=200)
    plain = Run(train(cfg, mnist_like, tmp_path / "a.h5", **QUIET))
    prox = TrainConfig(**{**cfg.__dict__, "proximal": 1e-3, "proximal_steps": 3})
    state = Run(train(prox, mnist_like, tmp_path / "b.h5", **QUIET))
    assert state.attrs["proximal"] == 1e-3 and plain.attrs["proximal"] == 0
    # 6 batches of 100 and 3 ADAM steps each: 18 steps, visible as a larger move from x₀.
    names = [k for k, _ in build("F1").named_parameters()]

    def moved(r):
        a, b = r.state("init"), r.state("final")
        return sum(float((b[k] - a[k]).norm() ** 2) for k in names) ** 0.5

    assert moved(state) > 1.5 * moved(plain)


def test_a_resumed_run_draws_the_same_remedy_noise(mnist_like):
    import io

    from sharpminima.data.dataset import load_dataset
    from sharpminima.train.trainer import Trainer

    cfg = TrainConfig("F1", batch_size=100, stop="fixed", augment=True, stability=0.5)
    data, cpu = load_dataset(mnist_like), torch.device("cpu")
    first = Trainer(cfg, data, cpu, print)
    first.epoch = 1
    first.train_epoch()
    saved = io.BytesIO()
    torch.save(first.checkpoint(), saved)  # a copy: training goes on in place
    first.epoch = 2
    first.train_epoch()
    resumed = Trainer(cfg, data, cpu, print)
    saved.seek(0)
    resumed.restore(torch.load(saved, weights_only=True))
    resumed.epoch = 2
    resumed.train_epoch()
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


@pytest.mark.parametrize(
    "options",
    [["--augment"], ["--fgsm", "0.02"], ["--stability", "0.5"], ["--proximal", "0.001"]],
)
def test_each_remedy_trains_and_changes_the_run(tmp_path, mnist_like, options):
    base = ["train", "--network", "F1", "--data", mnist_like, "--stop", "fixed",
            "--max-epochs", 1, "--batch-size", 64, "--eval-chunk", 200]  # fmt: skip
    cli(*base, "--out", tmp_path / "plain.h5")
    cli(*base, *options, "--out", tmp_path / "remedy.h5")
    cli(*base, *options, "--out", tmp_path / "again.h5")
    plain, remedy, again = (Run(tmp_path / f"{n}.h5") for n in ("plain", "remedy", "again"))
    key = "1.weight"
    assert not torch.equal(plain.state()[key], remedy.state()[key])
    assert torch.equal(remedy.state()[key], again.state()[key])  # seeded


def test_remedies_refuse_bad_settings(tmp_path):
    from sharpminima.data.dataset import make_synthetic

    vectors = tmp_path / "vectors.h5"
    make_synthetic(vectors, 300, 50, (360,), 39, seed=0)
    out = tmp_path / "r.h5"
    proc = cli("train", "--network", "F2", "--data", vectors, "--out", out, "--augment",
               "--stop", "fixed", check=False)  # fmt: skip
    assert_one_line_error(proc, "augment", "(360,)", "turn augment off")
    proc = cli("train", "--network", "F2", "--data", vectors, "--out", out, "--fgsm", "-1",
               check=False)  # fmt: skip
    assert_one_line_error(proc, "fgsm must be 0 (off) or positive")
    assert not out.exists() and not (tmp_path / "r.h5.partial").exists()
