"""Hessian-vector products by the written-out rules (measures/hvp.py) against autograd's double
backward, in float64: on the paper's six networks in both BatchNorm modes and both layouts, on
networks drawn at random, and through the generic path for models the rules do not cover."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sharpminima.measures.hvp import chunk_product, ruled
from sharpminima.models import NETWORKS, SamePool, build, evaluation


def double_backward(model: nn.Module, pieces: list[torch.Tensor], x, y) -> torch.Tensor:
    """H·v as the gradient of ∇f·v (what PyHessian computes)."""
    params = [p for p in model.parameters() if p.requires_grad]
    value = F.cross_entropy(model(x), y, reduction="sum") / len(y)
    grads = torch.autograd.grad(value, params, create_graph=True)
    dot = sum((g * p).sum() for g, p in zip(grads, pieces, strict=True))
    return torch.cat([h.reshape(-1) for h in torch.autograd.grad(dot, params)])


def products(model: nn.Module, x: torch.Tensor, classes: int, bn: str, seed: int = 0):
    """Ours and the double backward's H·v, at a random v, with BatchNorm's affine parameters
    and running buffers moved off their initial values (so every term of the rules counts)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ranges = ((m.weight, 0.5, 1.5), (m.bias, -0.3, 0.3), (m.running_mean, -0.5, 0.5),
                      (m.running_var, 0.5, 2.0))  # fmt: skip
            for t, low, high in ranges:
                t.data.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) * (high - low) + low)
    y = torch.randint(0, classes, (len(x),), generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]
    pieces = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    with evaluation(model, bn):
        loss = lambda out: F.cross_entropy(out, y, reduction="sum") / len(y)  # noqa: E731
        ours = torch.cat([h.reshape(-1) for h in chunk_product(model, pieces, x, loss)])
        reference = double_backward(model, pieces, x, y)
    return ours, reference


def assert_same(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert (ours - reference).norm() <= 1e-10 * reference.norm()


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("bn", ["batch", "running"])
def test_the_rules_give_the_double_backwards_product_on_every_network(name, bn):
    s = NETWORKS[name]
    model = build(name, seed=1).double()
    assert ruled(model.eval()) and not ruled(model.train())
    x = torch.randn(6 if s.family == "dense" else 3, *s.input_shape, dtype=torch.float64)
    assert_same(*products(model, x, s.num_classes, bn))
    if s.family != "dense":  # the same product in NCHW, without the channels-last hook
        model._forward_pre_hooks.clear()
        assert_same(*products(model, x, s.num_classes, bn))


def random_network(rng: random.Random) -> tuple[nn.Sequential, tuple[int, ...]]:
    """A network of the layers the rules cover, in an order, widths and shapes drawn at random."""
    layers: list[nn.Module] = []
    if rng.random() < 0.5:
        channels, size = rng.choice([1, 3]), rng.choice([6, 7, 9])
        shape: tuple[int, ...] = (channels, size, size)
        for _ in range(rng.randint(1, 3)):
            out, k = rng.randint(2, 5), rng.choice([1, 3, 5])
            padding = "same" if rng.random() < 0.5 else rng.randint(0, k // 2)
            layers.append(nn.Conv2d(channels, out, k, padding=padding))
            size = size if padding == "same" else size + 2 * padding - k + 1
            if rng.random() < 0.7:
                layers.append(nn.BatchNorm2d(out, eps=rng.choice([1e-5, 1e-3])))
            layers.append(nn.ReLU())
            if size >= 2 and rng.random() < 0.5:
                pool = SamePool(3, 2) if rng.random() < 0.5 else nn.MaxPool2d(2, 2)
                layers.append(pool)
                size = -(-size // 2) if isinstance(pool, SamePool) else size // 2
            channels = out
        layers.append(nn.Flatten())
        width = channels * size * size
    else:
        width = rng.randint(3, 12)
        shape = (width,)
    for _ in range(rng.randint(0, 3)):
        out = rng.randint(2, 10)
        layers += [nn.Linear(width, out)]
        if rng.random() < 0.6:
            layers.append(nn.BatchNorm1d(out))
        layers += [nn.ReLU(), nn.Dropout(0.3)] if rng.random() < 0.5 else [nn.ReLU()]
        width = out
    return nn.Sequential(*layers, nn.Linear(width, 4)).double(), shape


@pytest.mark.parametrize("seed", range(24))
def test_the_rules_hold_on_networks_drawn_at_random(seed):
    rng = random.Random(seed)
    model, shape = random_network(rng)
    assert ruled(model.eval()), model
    x = torch.randn(rng.randint(3, 9), *shape, dtype=torch.float64)
    for bn in ("batch", "running"):
        assert_same(*products(model, x, 4, bn, seed))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) + x)


def test_other_models_get_the_same_product_by_forward_over_reverse_mode():
    """A model of its own forward, a hook, a frozen layer, a layer the rules do not cover, a
    parameter shared by two layers: each goes the generic way, and gets the double backward's
    product."""
    hooked = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    hooked[0].register_forward_hook(lambda m, i, o: o * 2)
    frozen = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))
    frozen[0].requires_grad_(False)
    tanh = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    tied = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3))
    tied[2].weight = tied[0].weight  # one parameter in two layers: its products add up
    for model in (Residual(), hooked, frozen, tanh, tied):
        model = model.double()
        assert not ruled(model.eval())
        for bn in ("batch", "running"):
            assert_same(*products(model, torch.randn(7, 5, dtype=torch.float64), 3, bn))


def test_a_product_is_the_same_bits_every_time():
    model = build("C1", seed=0)
    x = torch.randn(4, 3, 32, 32)
    first, _ = products(model, x, 10, "batch")
    again, _ = products(model, x, 10, "batch")
    assert torch.equal(first, again)
