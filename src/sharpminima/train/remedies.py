"""Appendix E's attempts to remedy large-batch training, as parts of one training step.

Each is off by default and combines with any batch size and with the others (docs/remedies.md):
data augmentation (E.1), conservative training (E.2: a proximal sub-problem per batch), and the
robust-training variants of E.3, adversarial (FGSM) and stability training. Random draws come
from the trainer's own generator on the model's device, so they are seeded, resumable, and never
leave the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

MAX_DEGREES = 10.0  # E.1: rotations up to 10°
MAX_SHIFT = 0.2  # E.1: translations up to 0.2 of the image's width and height


def affine(x: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor):
    """Images x (N, C, H, W) each rotated by `angle` (radians), shifted by `shift` (N, 2:
    fractions of width and height) and mirrored left-right where `flip` is -1, in one batched
    resampling. Pixels brought in from outside repeat the border (Keras' default 'nearest')."""
    cos, sin = angle.cos(), angle.sin()
    tx, ty = 2 * shift[:, 0], 2 * shift[:, 1]  # grid coordinates span [-1, 1]
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """E.1: a random flip, rotation (≤ 10°) and translation (≤ 0.2) of each image."""
    n, dev = len(x), x.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=dev, generator=gen) * 2 - 1

    angle = uniform(n) * math.radians(MAX_DEGREES)
    shift = uniform(n, 2) * MAX_SHIFT
    flip = torch.where(uniform(n) < 0, -1.0, 1.0)
    return affine(x, angle, shift, flip)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Goodfellow et al.'s fast gradient sign examples: x + ε sign(∇ₓ loss)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).detach()


def objective(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Generator,
    fgsm_eps: float = 0.0,
    fgsm_weight: float = 0.5,
    stability: float = 0.0,
    sigma: float = 0.04,
) -> torch.Tensor:
    """The batch loss: cross-entropy, mixed with FGSM examples' (weight `fgsm_weight`) when
    fgsm_eps > 0, plus `stability` × KL(p(x) ‖ p(x + N(0, σ²))) (Zheng et al. 2016) when > 0."""
    if fgsm_eps > 0:
        adversarial = fgsm(model, x, y, fgsm_eps)
        out = model(torch.cat([x, adversarial]))
        clean, adv = out[: len(x)], out[len(x) :]
        loss = (1 - fgsm_weight) * F.cross_entropy(clean, y)
        loss = loss + fgsm_weight * F.cross_entropy(adv, y)
    else:
        clean = model(x)
        loss = F.cross_entropy(clean, y)
    if stability > 0:
        noise = torch.randn(x.shape, device=x.device, generator=gen, dtype=x.dtype)
        noisy = model(x + sigma * noise)
        kl = F.kl_div(
            F.log_softmax(noisy, 1), F.log_softmax(clean, 1), log_target=True, reduction="batchmean"
        )
        loss = loss + stability * kl
    return loss


def proximal(params: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor], lam: float):
    """E.2's penalty (λ/2) ‖x − x_k‖² that keeps the sub-problem's solution near x_k."""
    return lam / 2 * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
