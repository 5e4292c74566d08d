"""The paper's six networks (Appendix B) and BatchNorm evaluation modes.

Layers follow the authors' Keras code: biases on every conv/dense layer, Glorot-uniform weights,
zero biases, 'same' padding, ReLU after BatchNorm. BatchNorm uses Keras's epsilon (1e-3) and
PyTorch's momentum (0.1); see docs/models.md for why.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import UserError

BN_EPS = 1e-3
BN_MOMENTUM = 0.1
BN_MODES = ("batch", "running")  # BatchNorm statistics when evaluating f: see `evaluation`
VGG_STACKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


@dataclass(frozen=True)
class NetSpec:
    """What a network expects: the shape of one input and the number of classes."""

    name: str
    family: str  # "dense" (F*), "shallow" (C1/C3) or "vgg" (C2/C4)
    input_shape: tuple[int, ...]
    num_classes: int
    dataset: str  # the paper's dataset for it
    # F2's classes are the pdfs of a Kaldi decision tree (1973 in the paper's), which another
    # recipe run or a phone-labelled corpus changes; other datasets fix their classes.
    classes_from_data: bool = False


NETWORKS = {
    s.name: s
    for s in (
        NetSpec("F1", "dense", (784,), 10, "mnist"),
        NetSpec("F2", "dense", (360,), 1973, "timit", classes_from_data=True),
        NetSpec("C1", "shallow", (3, 32, 32), 10, "cifar10"),
        NetSpec("C2", "vgg", (3, 32, 32), 10, "cifar10"),
        NetSpec("C3", "shallow", (3, 32, 32), 100, "cifar100"),
        NetSpec("C4", "vgg", (3, 32, 32), 100, "cifar100"),
    )
}
DENSE_DEPTH = {"F1": 5, "F2": 7}


def spec(name: str) -> NetSpec:
    if name not in NETWORKS:
        raise UserError(f"unknown network {name!r}: choose one of {', '.join(NETWORKS)}")
    return NETWORKS[name]


def check_fits(name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Refuse a dataset whose inputs or classes do not fit the network, before any work."""
    s = spec(name)
    fits = (
        math.prod(input_shape) == s.input_shape[0]
        if s.family == "dense"
        else tuple(input_shape) == s.input_shape
    )
    if not fits:
        hint = ""
        if s.family != "dense" and tuple(input_shape) == (1, 28, 28):
            hint = " (or prepare 28x28 grayscale images with --transform pad32-rgb)"
        raise UserError(
            f"network {name} takes inputs of shape {s.input_shape} but the dataset has "
            f"{tuple(input_shape)}: use a {s.dataset} dataset for {name}{hint}"
        )
    if num_classes != s.num_classes and not s.classes_from_data:
        raise UserError(
            f"network {name} has {s.num_classes} outputs but the dataset has {num_classes} "
            f"classes: use a {s.dataset} dataset for {name}"
        )


class SamePool(nn.Module):
    """Max-pooling with Keras/TensorFlow 'same' padding (extra padding on the bottom/right)."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def padding(self, x: torch.Tensor) -> list[int]:
        """F.pad's (left, right, top, bottom) for `x`: what 'same' adds around it."""
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, self.padding(x), value=-math.inf)
        return F.max_pool2d(padded, self.kernel, self.stride)


def _dense_bn_relu(n_in: int, n_out: int) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out, BN_EPS, BN_MOMENTUM), nn.ReLU()]


def _conv_bn_relu(n_in: int, n_out: int, k: int) -> list[nn.Module]:
    return [
        nn.Conv2d(n_in, n_out, k, padding="same"),
        nn.BatchNorm2d(n_out, BN_EPS, BN_MOMENTUM),
        nn.ReLU(),
    ]


def _dense_net(s: NetSpec) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Flatten()]
    width = s.input_shape[0]
    for _ in range(DENSE_DEPTH[s.name]):
        layers += _dense_bn_relu(width, 512)
        width = 512
    return layers + [nn.Linear(512, s.num_classes)]


def _shallow_net(s: NetSpec) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in in (3, 64):
        layers += _conv_bn_relu(n_in, 64, 5) + [SamePool(3, 2)]
    layers += [nn.Flatten()] + _dense_bn_relu(64 * 8 * 8, 384) + [nn.Dropout(0.5)]
    layers += _dense_bn_relu(384, 192) + [nn.Dropout(0.5)]
    return layers + [nn.Linear(192, s.num_classes)]


def _vgg_net(s: NetSpec) -> list[nn.Module]:
    layers: list[nn.Module] = []
    n_in = 3
    for width, depth in VGG_STACKS:
        for i in range(depth):
            layers += _conv_bn_relu(n_in, width, 3)
            if i < depth - 1:  # a conv not followed by a pool gets dropout
                layers.append(nn.Dropout(0.3 if n_in == 3 else 0.4))
            n_in = width
        layers.append(nn.MaxPool2d(2, 2))
    layers += [nn.Flatten(), nn.Dropout(0.5)] + _dense_bn_relu(512, 512) + [nn.Dropout(0.5)]
    return layers + [nn.Linear(512, s.num_classes)]


BUILDERS = {"dense": _dense_net, "shallow": _shallow_net, "vgg": _vgg_net}


def init_keras(model: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases (BatchNorm: gamma 1, beta 0)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def channels_last_on_cpu(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook of the conv networks: images on the CPU enter in channels-last layout,
    in which oneDNN's convolutions ran C1 1.4-2x as fast as in NCHW (docs/performance.md). The
    parameters keep their layout, so nothing that flattens or stores them changes."""
    x = args[0]
    if x.dim() == 4 and x.device.type == "cpu":
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def build(name: str, seed: int | None = None, num_classes: int | None = None) -> nn.Sequential:
    """Build network `name` (with `num_classes` outputs instead of the paper's: F2 only); with
    `seed`, its initial point depends on that seed alone and the global RNG is left as it was."""
    s = spec(name)
    if num_classes is not None:
        check_fits(name, s.input_shape, num_classes)
        s = replace(s, num_classes=num_classes)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = nn.Sequential(*BUILDERS[s.family](s))
        init_keras(model)
    if s.family != "dense":
        model.register_forward_pre_hook(channels_last_on_cpu)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def evaluation(model: nn.Module, bn: str) -> Iterator[nn.Module]:
    """Evaluate with dropout off and BatchNorm using running ('running') or batch ('batch') stats.

    'batch' is Keras's BatchNormalization(mode=2) at test time, which the authors used: each
    evaluation chunk is normalized with its own statistics. Running buffers are detached for the
    duration, so evaluation never changes them.
    """
    if bn not in BN_MODES:
        raise UserError(f"unknown BatchNorm mode {bn!r}: use 'running' or 'batch'")
    was_training = model.training
    model.eval()
    saved = []
    if bn == "batch":
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                saved.append((m, m.running_mean, m.running_var))
                m.running_mean = m.running_var = None
    try:
        yield model
    finally:
        for m, mean, var in saved:
            m.running_mean, m.running_var = mean, var
        model.train(was_training)
