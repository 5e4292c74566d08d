"""Large-batch training methods published after the paper, as parts of one training step.

Each is off by default and combines with any batch size, with the others and with Appendix E's
remedies (docs/modern.md): SAM and ASAM's two-step update (Foret et al. 2021; Kwon et al.
2021), ghost batch normalization (Hoffer et al. 2017), learning-rate scaling with gradual
warm-up (Goyal et al. 2017) and a batch-size ramp (Smith et al. 2018). None draws random
numbers: each is a function of the weights, the batch, the epoch and the step, so a run with
them resumes bitwise like any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

LR_SCALINGS = ("none", "linear", "sqrt")
ASAM_ETA = 0.01  # Kwon et al.'s η: T_w = |w| + η keeps weights at 0 perturbable


def lr_factor(scaling: str, batch: int, base_batch: int) -> float:
    """Goyal et al.'s linear rule (lr × B/B₀) or the square-root rule (× √(B/B₀))."""
    ratio = batch / base_batch
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]


def warmup_lr(lr: float, target: float, progress: float, epochs: float) -> float:
    """Gradual warm-up: the learning rate `progress` epochs into training (fractional, so a
    batch-size ramp's changing steps per epoch do not matter), rising linearly from the
    reference `lr` to `target` over `epochs` epochs (Goyal et al.: from η to kη in 5 epochs)."""
    if progress >= epochs:
        return target
    return lr + (target - lr) * progress / epochs


def ramp_batch(epoch: int, start: int, end: int, epochs: int) -> int:
    """Batch size of epoch `epoch` (1-based) of a ramp from `start` at epoch 1 to `end` at
    epoch `epochs` and after, growing by the same factor each epoch."""
    if epoch >= epochs:
        return end
    return round(start * (end / start) ** ((epoch - 1) / (epochs - 1)))


def _scales(model: nn.Module, adaptive: bool) -> list[torch.Tensor | None]:
    """ASAM's T_w per parameter: |w| + η for weights (BatchNorm's scale included, as in Kwon et
    al.'s code), none (the identity) for biases and for plain SAM."""
    return [
        (p.detach().abs() + ASAM_ETA) if adaptive and name.endswith("weight") else None
        for name, p in model.named_parameters()
        if p.requires_grad
    ]


def sam_step(
    model: nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    rho: float,
    adaptive: bool,
) -> torch.Tensor:
    """Leave in each parameter's .grad the gradient of the batch loss at w + ε̂, where
    ε̂ = ρ T² g / ‖T g‖ (T = I: SAM; T = diag(|w| + η): ASAM) and g the gradient at w; the
    weights and BatchNorm's running statistics end as they were (only the first pass, at w,
    updates the statistics, as in the SAM authors' code). Returns the loss at w."""
    params = [p for p in model.parameters() if p.requires_grad]
    scales = _scales(model, adaptive)
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    with torch.no_grad():
        scaled = [g if t is None else t * g for g, t in zip(grads, scales, strict=True)]
        norm = torch.linalg.vector_norm(torch.stack([s.norm() for s in scaled]))
        eps = [s if t is None else t * s for s, t in zip(scaled, scales, strict=True)]
        at_w = [p.detach().clone() for p in params]  # w + ε̂ − ε̂ is not w in floating point
        for p, e in zip(params, eps, strict=True):
            p.add_(e, alpha=rho / (norm + 1e-12))
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in bns]  # fmt: skip
    for p in params:
        p.grad = None
    loss_fn().backward()
    with torch.no_grad():
        for p, w in zip(params, at_w, strict=True):
            p.copy_(w)
        for m, (mean, var, count) in zip(bns, saved, strict=True):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
    return loss.detach()


def _ghost_forward(m: _BatchNorm, size: int, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm in training mode over virtual batches of `size` examples (the last one takes
    the remainder; one left over joins the one before). Running statistics move once per real
    batch, toward the mean of the virtual batches' means and unbiased variances (Hoffer et al.'s
    Algorithm 1)."""
    if not m.training or len(x) <= size:
        return type(m).forward(m, x)
    sizes = [size] * (len(x) // size) + ([len(x) % size] if len(x) % size else [])
    if sizes[-1] == 1:
        one = sizes.pop()
        sizes[-1] += one
    parts = x.split(sizes)
    out = torch.cat(
        [F.batch_norm(p, None, None, m.weight, m.bias, True, 0.0, m.eps) for p in parts]
    )
    if m.track_running_stats:
        dims = [d for d in range(x.dim()) if d != 1]
        with torch.no_grad():
            mean = torch.stack([p.mean(dims) for p in parts]).mean(0)
            var = torch.stack([p.var(dims, correction=1) for p in parts]).mean(0)
            m.num_batches_tracked.add_(1)
            momentum = m.momentum if m.momentum is not None else 1 / m.num_batches_tracked.item()
            m.running_mean.lerp_(mean, momentum)
            m.running_var.lerp_(var, momentum)
    return out


@contextmanager
def ghost_batches(model: nn.Module, size: int) -> Iterator[None]:
    """Within the block, every BatchNorm of `model` in training mode normalizes each virtual
    batch of `size` examples with its own statistics; size 0 leaves them as they are. Outside
    it (evaluation, sharpness) BatchNorm is PyTorch's own."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)] if size else []
    for m in bns:
        m.forward = lambda x, m=m: _ghost_forward(m, size, x)
    try:
        yield
    finally:
        for m in bns:
            del m.forward
