"""The large-batch methods since the paper: each update against a hand computation, ghost
BatchNorm's statistics, the learning-rate and batch-size schedules, and exact resume."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sharpminima.data.dataset import load_dataset
from sharpminima.store import Run
from sharpminima.train import modern
from sharpminima.train.trainer import TrainConfig, Trainer, train
from tests.conftest import assert_one_line_error, cli

QUIET = {"log": lambda m: None}


def tiny(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    return model, x, y


def grad_at(model: nn.Module, x, y, shift: list[torch.Tensor]) -> list[torch.Tensor]:
    """∇ of the batch loss at w + shift, on a copy (the hand computation's gradients)."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p, s in zip(other.parameters(), shift, strict=True):
            p.add_(s)
    return list(torch.autograd.grad(F.cross_entropy(other(x), y), list(other.parameters())))


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_and_asam_step_against_hand_computation(adaptive):
    model, x, y = tiny()
    rho, lr = 0.05 if not adaptive else 0.5, 0.1
    before = [p.detach().clone() for p in model.parameters()]
    g = grad_at(model, x, y, [torch.zeros_like(p) for p in before])
    names = [n for n, _ in model.named_parameters()]
    # T = |w| + η on weights, 1 on biases (ASAM); T = 1 (SAM)
    t = [
        (w.abs() + 0.01) if adaptive and n.endswith("weight") else torch.ones_like(w)
        for n, w in zip(names, before, strict=True)
    ]
    norm = math.sqrt(sum(float(((ti * gi) ** 2).sum()) for ti, gi in zip(t, g, strict=True)))
    eps = [rho * ti * ti * gi / norm for ti, gi in zip(t, g, strict=True)]
    g_sam = grad_at(model, x, y, eps)
    expected = [w - lr * gs for w, gs in zip(before, g_sam, strict=True)]

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = modern.sam_step(model, lambda: F.cross_entropy(model(x), y), rho, adaptive)
    assert loss.item() == F.cross_entropy(model(x), y).item()  # the loss at w
    for p, w in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, w)  # back at w before the step
    opt.step()
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(g_sam[0], g[0])  # the perturbation mattered


def test_sam_leaves_running_statistics_as_one_forward_pass_does():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    reference = copy.deepcopy(model)
    reference(x)  # one forward pass in training mode
    modern.sam_step(model, lambda: F.cross_entropy(model(x), y), 0.05, False)
    for (name, a), b in zip(model[1].named_buffers(), reference[1].buffers(), strict=True):
        assert torch.equal(a, b), name


def test_ghost_batchnorm_normalizes_each_virtual_batch():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3, eps=1e-3, momentum=0.1)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.randn(9, 3) * 3 + 1
    with modern.ghost_batches(bn, 4):
        out = bn(x)
    parts = [x[:4], x[4:]]  # 4 and 5: the single one left over joins the batch before
    for part, got in zip(parts, out.split([4, 5]), strict=True):
        mean, var = part.mean(0), part.var(0, correction=0)
        want = (part - mean) / torch.sqrt(var + 1e-3) * bn.weight + bn.bias
        torch.testing.assert_close(got, want)
    means = torch.stack([p.mean(0) for p in parts]).mean(0)
    variances = torch.stack([p.var(0) for p in parts]).mean(0)  # unbiased
    torch.testing.assert_close(bn.running_mean, 0.1 * means)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * variances)
    assert bn.num_batches_tracked.item() == 1
    # outside the block, and in evaluation, BatchNorm is PyTorch's own
    assert "forward" not in vars(bn)
    plain = nn.BatchNorm1d(3, eps=1e-3)
    plain.load_state_dict(bn.state_dict())
    torch.testing.assert_close(bn(x), plain(x))


def test_ghost_batchnorm_on_images_and_small_batches():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(2)
    x = torch.randn(6, 2, 3, 3)
    with modern.ghost_batches(bn, 3):
        out = bn(x)
        small = bn(x[:3])  # a batch no larger than the ghost size: as usual
    for part, got in zip(x.split(3), out.split(3), strict=True):
        mean = part.mean((0, 2, 3), keepdim=True)
        var = part.var((0, 2, 3), correction=0, keepdim=True)
        torch.testing.assert_close(got, (part - mean) / torch.sqrt(var + bn.eps))
    torch.testing.assert_close(small, out[:3])


def test_learning_rate_and_batch_schedules():
    assert modern.lr_factor("none", 5500, 256) == 1
    assert modern.lr_factor("linear", 1024, 256) == 4
    assert modern.lr_factor("sqrt", 1024, 256) == 2
    # Goyal et al.: η to kη linearly over the warm-up, then kη
    values = [modern.warmup_lr(0.1, 0.5, p, 5) for p in (0, 1, 2.5, 5, 7)]
    assert values == pytest.approx([0.1, 0.18, 0.3, 0.5, 0.5])
    assert modern.warmup_lr(0.1, 0.5, 0, 0) == 0.5  # no warm-up: the scaled lr at once
    # geometric from 256 to 4096 over epochs 1..5: ×2 each epoch
    assert [modern.ramp_batch(e, 256, 4096, 5) for e in range(1, 8)] == [
        256, 512, 1024, 2048, 4096, 4096, 4096,
    ]  # fmt: skip
    assert modern.ramp_batch(1, 256, 4096, 1) == 4096


def test_trainer_follows_the_schedules(tmp_path, mnist_like):
    cfg = TrainConfig(
        "F1", batch_size=400, max_epochs=3, stop="fixed", eval_chunk=200, lr=1e-3,
        lr_scaling="linear", lr_base_batch=100, warmup_epochs=2, ramp_start=100, ramp_epochs=3,
    )  # fmt: skip
    data, cpu = load_dataset(mnist_like), torch.device("cpu")
    trainer = Trainer(cfg, data, cpu, print)
    seen = []
    trainer.opt.step = lambda: seen.append(trainer.opt.param_groups[0]["lr"])  # no update
    for epoch in (1, 2, 3):
        trainer.epoch = epoch
        trainer.train_epoch()
    # batches of 100, 200, 400 over 600 examples: 6, 3, 2 steps; lr 1e-3 → 4e-3 over 2 epochs
    sizes = [6, 3, 2]
    want = [1e-3 + 3e-3 * min(1, (e + i / n) / 2) for e, n in enumerate(sizes) for i in range(n)]
    assert seen == pytest.approx(want)
    assert trainer.steps == 11
    run = Run(train(cfg, mnist_like, tmp_path / "r.h5", **QUIET))
    assert list(run.history["batch_size"]) == [100, 100, 200, 400]
    assert run.attrs["steps"] == 11 and run.attrs["peak_lr"] == pytest.approx(4e-3)


METHODS = {
    "sam": {"sam": 0.05},
    "asam": {"sam": 0.5, "sam_adaptive": True},
    "ghost": {"ghost_batch": 16},
    "scaling": {"lr_scaling": "sqrt", "warmup_epochs": 1.5},
    "ramp": {"ramp_start": 32, "ramp_epochs": 3},
    "sgd": {"optimizer": "sgd", "lr_scaling": "linear", "warmup_epochs": 1},
}


def two_epochs(data, cfg: TrainConfig, resume: bool = False) -> dict[str, torch.Tensor]:
    """The weights after epochs 1 and 2, the second (with `resume`) in a new Trainer restored
    from a checkpoint taken after the first."""
    cpu = torch.device("cpu")
    trainer = Trainer(cfg, data, cpu, print)
    trainer.epoch = 1
    trainer.train_epoch()
    if resume:
        saved = io.BytesIO()
        torch.save(trainer.checkpoint(), saved)
        saved.seek(0)
        trainer = Trainer(cfg, data, cpu, print)
        trainer.restore(torch.load(saved, weights_only=True))
    trainer.epoch = 2
    trainer.train_epoch()
    return trainer.model.state_dict()


@pytest.fixture(scope="module")
def plain(mnist_like):
    data = load_dataset(mnist_like)
    return data, two_epochs(data, TrainConfig("F1", batch_size=100, stop="fixed", eval_chunk=200))


@pytest.mark.parametrize("method", METHODS)
def test_each_method_resumes_bitwise_and_changes_the_run(plain, method):
    data, without = plain
    cfg = TrainConfig("F1", batch_size=100, stop="fixed", eval_chunk=200, **METHODS[method])
    straight, resumed = two_epochs(data, cfg), two_epochs(data, cfg, resume=True)
    for k, v in straight.items():
        assert torch.equal(v, resumed[k]), k
    assert not torch.equal(without["1.weight"], straight["1.weight"])


def test_methods_refuse_bad_settings(tmp_path, mnist_like):
    out = tmp_path / "r.h5"

    def run(*extra):
        proc = cli("train", "--network", "F1", "--data", mnist_like, "--out", out,
                   "--stop", "fixed", *extra, check=False)  # fmt: skip
        assert not out.exists() and not (tmp_path / "r.h5.partial").exists()
        return proc

    assert_one_line_error(run("--sam-adaptive"), "sam_adaptive (ASAM) needs sam > 0")
    assert_one_line_error(run("--sam", "-0.1"), "sam must be 0 (off) or positive")
    assert_one_line_error(run("--ghost-batch", "1"), "ghost_batch must be 0 (off) or at least 2")
    assert_one_line_error(run("--lr-scaling", "cubic"), "unknown lr_scaling 'cubic'", "sqrt")
    assert_one_line_error(
        run("--batch-size", "64", "--ramp-start", "128"), "ramp_start 128 is larger", "start below"
    )
    assert_one_line_error(run("--warmup-epochs", "nan"), "--warmup-epochs is nan")


def test_a_diverging_run_stops_and_says_so(tmp_path, mnist_like):
    cfg = TrainConfig("F1", batch_size=100, stop="fixed", max_epochs=5, eval_chunk=200,
                      optimizer="sgd", lr=1e30)  # fmt: skip
    run = Run(train(cfg, mnist_like, tmp_path / "r.h5", **QUIET))
    assert run.attrs["epochs"] == 1 and run.attrs["stop_reason"].startswith("diverged: train loss")
