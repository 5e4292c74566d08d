"""Hessian-vector products of one chunk's loss, by forward-over-reverse rules written out for the
paper's layers.

H·v is the derivative of ∇f along v (Pearlmutter's R-operator): a forward pass that carries
each activation's tangent, then a backward pass that carries each gradient's tangent. PyTorch's
own forward-mode derivative of BatchNorm's backward is generic, dozens of elementwise passes over
the activations and half of a C1 product's time; written out below it takes about ten. The rules
also skip what H·v never needs, the gradient of the parameters themselves, so a conv layer costs
8 convolutions to a gradient's 3. A model made of other layers, or of these in another
arrangement, gets PyTorch's forward mode over its reverse mode (`generic`), the same product.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp
from torch.nn.modules.batchnorm import _BatchNorm

from ..models import SamePool, channels_last_on_cpu

Tensor = torch.Tensor
Loss = Callable[[Tensor], Tensor]  # the model's outputs -> this chunk's share of f
# (gradient at the output, its tangent) -> the same at the input (None for the data), and the
# tangent of the gradient of each of the layer's parameters: its share of H·v.
Back = Callable[[Tensor, Tensor], tuple[Tensor | None, Tensor | None, list[Tensor]]]
# (layer, tangents of its parameters, input, the input's tangent or None for the data)
Rule = Callable[[nn.Module, list[Tensor], Tensor, Tensor | None], tuple[Tensor, Tensor, Back]]


def _linear(m: nn.Linear, t: list[Tensor], x: Tensor, dx: Tensor | None):
    dw, db = t
    y = F.linear(x, m.weight, m.bias)
    dy = F.linear(x, dw, db)
    if dx is not None:
        dy += F.linear(dx, m.weight)

    def back(g: Tensor, dg: Tensor):
        hw, hb = dg.T @ x, dg.sum(0)
        if dx is None:
            return None, None, [hw, hb]
        hw.addmm_(g.T, dx)
        return g @ m.weight, torch.addmm(dg @ m.weight, g, dw), [hw, hb]

    return y, dy, back


def _same(m: nn.Conv2d) -> list[int]:
    return [(k - 1) // 2 for k in m.kernel_size] if m.padding == "same" else list(m.padding)


def _conv(m: nn.Conv2d, t: list[Tensor], x: Tensor, dx: Tensor | None):
    dw, db = t
    pad, layout = _same(m), _format(x)  # oneDNN slows down 1.5-2x on a mix of layouts
    dx = None if dx is None else dx.contiguous(memory_format=layout)
    y = F.conv2d(x, m.weight, m.bias, m.stride, pad)
    dy = F.conv2d(x, dw, db, m.stride, pad)
    if dx is not None:
        dy += F.conv2d(dx, m.weight, None, m.stride, pad)
    fixed = (m.stride, pad, m.dilation, False, [0, 0], m.groups)

    def back(g: Tensor, dg: Tensor):
        backward = torch.ops.aten.convolution_backward
        g, dg = g.contiguous(memory_format=layout), dg.contiguous(memory_format=layout)
        need = dx is not None
        gx_dg, hw, hb = backward(dg, x, m.weight, [dw.shape[0]], *fixed, [need, True, True])
        if not need:
            return None, None, [hw, hb]
        gx_dw, hw_dx, _ = backward(g, dx, dw, None, *fixed, [True, True, False])
        gx = backward(g, x, m.weight, None, *fixed, [True, False, False])[0]
        return gx, gx_dg + gx_dw, [hw + hw_dx, hb]

    return y, dy, back


def _batchnorm(m: _BatchNorm, t: list[Tensor], x: Tensor, dx: Tensor | None):
    """BatchNorm on its running buffers, or (where `evaluation` has set them to None) on each
    chunk's own statistics, through which every example's output depends on every other's."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    dims = (0, *range(2, x.dim()))
    gamma, dgamma, dbeta = m.weight.view(shape), t[0].view(shape), t[1].view(shape)
    dx = torch.zeros_like(x) if dx is None else dx
    if m.running_mean is not None:
        return _running_batchnorm(m, x, dx, dims, shape, dgamma, dbeta)
    y, mean, inv = torch.native_batch_norm(x, m.weight, m.bias, None, None, True, 0.0, m.eps)
    stats, count = (mean, inv, True, m.eps), x.numel() // x.shape[1]
    mean, inv = mean.view(shape), inv.view(shape)

    def xh_times(w: Tensor, out: Tensor) -> Tensor:
        """out + w·xh, xh = (x − mean)·inv, without keeping xh (as large as x)."""
        return out.sub_(mean * inv * w).addcmul_(x, inv * w)

    # x ↦ BatchNorm's normalized x is symmetric: its derivative along dx is its backward of dx,
    # a fused kernel (so are the products through it below: 2 passes where autograd takes 30)
    backward = torch.ops.aten.native_batch_norm_backward
    dxh, sum_dx_xh, _ = backward(dx, x, None, None, None, *stats, [True, True, False])
    dy = xh_times(dgamma, torch.addcmul(dbeta, dxh, gamma))
    s = (sum_dx_xh / count).view(shape)  # the std's derivative along dx, over the std

    def back(g: Tensor, dg: Tensor):
        # a·(dg − mean dg − xh·mean(dg·xh)), a = γ/σ; and g's the same without γ: ∂f/∂x / γ
        p, sum_dg_xh, hbeta = backward(dg, x, m.weight, None, None, *stats, [True, True, True])
        q, sum_g_xh, _ = backward(g, x, None, None, None, *stats, [True, True, False])
        sum_g_dxh = (g * dxh).sum(dims)
        a, c = gamma * inv, (sum_g_xh / count).view(shape)
        dgx = p.addcmul_(q, dgamma - a * s).addcmul_(dxh, -a * c)
        dgx = xh_times(-a * (sum_g_dxh / count).view(shape), dgx)
        return q.mul_(gamma), dgx, [sum_dg_xh + sum_g_dxh, hbeta]

    return y, dy, back


def _running_batchnorm(m, x, dx, dims, shape, dgamma, dbeta):
    """BatchNorm on its running buffers: an affine map per channel."""
    gamma, beta = m.weight.view(shape), m.bias.view(shape)
    inv = (m.running_var.view(shape) + m.eps).rsqrt()
    xh = torch.addcmul(-m.running_mean.view(shape) * inv, x, inv)
    dxh = dx * inv
    y = torch.addcmul(beta, xh, gamma)
    dy = torch.addcmul(torch.addcmul(dbeta, xh, dgamma), dxh, gamma)

    def back(g: Tensor, dg: Tensor):
        hgamma, hbeta = (dg * xh).sum(dims) + (g * dxh).sum(dims), dg.sum(dims)
        a = gamma * inv
        return g * a, torch.addcmul(dg * a, g, dgamma * inv), [hgamma, hbeta]

    return y, dy, back


def _relu(m: nn.ReLU, t: list[Tensor], x: Tensor, dx: Tensor | None):
    mask = x > 0  # where autograd's ReLU passes the gradient (nowhere at 0)
    y = x.clamp_min(0)

    def back(g: Tensor, dg: Tensor):
        return g.mul_(mask), dg.mul_(mask), []  # g and dg are this step's own: no copies

    return y, (None if dx is None else dx * mask), back


def _maxpool(m: nn.Module, t: list[Tensor], x: Tensor, dx: Tensor | None):
    """nn.MaxPool2d (no padding) or SamePool: the tangent and the gradient flow through the
    element each window picked, the one autograd's max pooling picks."""
    pads = m.padding(x) if isinstance(m, SamePool) else [0, 0, 0, 0]
    k, s = (m.kernel, m.stride) if isinstance(m, SamePool) else (m.kernel_size, m.stride)
    xp = F.pad(x, pads, value=-math.inf) if any(pads) else x
    y, idx = F.max_pool2d(xp, k, s, return_indices=True)
    dy = None
    if dx is not None:
        dxp = F.pad(dx, pads) if any(pads) else dx
        dy = dxp.flatten(2).gather(2, idx.flatten(2)).view(y.shape)
        dy = dy.contiguous(memory_format=_format(y))
    height, width = x.shape[-2:]

    def unpool(g: Tensor) -> Tensor:
        gp = torch.ops.aten.max_pool2d_with_indices_backward(g, xp, k, s, 0, 1, False, idx)
        gx = gp[..., pads[2] : pads[2] + height, pads[0] : pads[0] + width]
        return gx.contiguous(memory_format=_format(x))

    def back(g: Tensor, dg: Tensor):
        return unpool(g), unpool(dg), []

    return y, dy, back


def _format(x: Tensor) -> torch.memory_format:
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl and not x.is_contiguous() else torch.contiguous_format


def _flatten(m: nn.Flatten, t: list[Tensor], x: Tensor, dx: Tensor | None):
    layout = _format(x)

    def back(g: Tensor, dg: Tensor):
        gx, dgx = (z.reshape(x.shape).contiguous(memory_format=layout) for z in (g, dg))
        return gx, dgx, []

    return x.flatten(1), (None if dx is None else dx.flatten(1)), back


def _identity(m: nn.Module, t: list[Tensor], x: Tensor, dx: Tensor | None):
    """Dropout in evaluation, which `Objective` always evaluates in."""
    return x, dx, lambda g, dg: (g, dg, [])


RULES: dict[type, Rule] = {
    nn.Linear: _linear,
    nn.Conv2d: _conv,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.ReLU: _relu,
    nn.MaxPool2d: _maxpool,
    SamePool: _maxpool,
    nn.Flatten: _flatten,
    nn.Dropout: _identity,
}


def _fits(m: nn.Module) -> bool:
    """Whether `m` is a layer that RULES computes exactly as its own forward does."""
    if type(m) not in RULES or m._forward_hooks or m._forward_pre_hooks:
        return False
    if any(not p.requires_grad for p in m.parameters()):
        return False
    if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is None:
        return False
    if isinstance(m, nn.Conv2d):
        odd = m.padding != "same" or all(k % 2 for k in m.kernel_size)
        return odd and m.padding_mode == "zeros" and m.groups == 1 and m.dilation == (1, 1)
    if isinstance(m, _BatchNorm):
        return m.affine
    if isinstance(m, nn.MaxPool2d):
        return m.padding == 0 and m.dilation == 1 and not m.ceil_mode and not m.return_indices
    if isinstance(m, nn.Flatten):
        return m.start_dim == 1 and m.end_dim == -1
    return True


def ruled(model: nn.Module) -> bool:
    """Whether H·v of `model` can go by RULES: a plain nn.Sequential in evaluation mode (as
    `evaluation` puts it: the rules know no training-mode dropout or buffer updates) of layers
    they cover, each with parameters of its own, whose only hook is a forward pre-hook that
    changes the input's layout alone (models.py's)."""
    if type(model) is not nn.Sequential or model._forward_hooks or model.training:
        return False
    hooks = all(h is channels_last_on_cpu for h in model._forward_pre_hooks.values())
    shared = len(list(model.parameters())) < sum(len(list(m.parameters())) for m in model)
    return hooks and not shared and all(_fits(m) for m in model)


def ruled_product(
    model: nn.Sequential, tangents: dict[nn.Parameter, Tensor], x: Tensor, loss: Loss
) -> dict[nn.Parameter, Tensor]:
    """H·v of loss(model(x)) at the model's parameters, per parameter; `tangents` is v."""
    for hook in model._forward_pre_hooks.values():  # the layout the model itself chooses
        x = (hook(model, (x,)) or (x,))[0]
    backs = []
    with torch.no_grad():
        h, dh = x, None
        for m in model:
            h, dh, back = RULES[type(m)](m, [tangents[p] for p in m.parameters()], h, dh)
            backs.append((m, back))
    g, dg = jvp(grad(loss), (h,), (dh,))
    out = {}
    with torch.no_grad():
        while backs:  # each layer's saved tensors are freed once its step back is done
            m, back = backs.pop()
            g, dg, hs = back(g, dg)
            out.update(zip(m.parameters(), hs, strict=True))
            if g is None:  # the layers before take the data alone and have no parameters
                break
    return out


def generic_product(
    model: nn.Module, tangents: dict[str, Tensor], x: Tensor, loss: Loss
) -> dict[str, Tensor]:
    """The same H·v for any model, by forward-mode AD over reverse mode: the parameters as dual
    tensors (value, tangent), then the gradient of the loss, whose tangents are H·v."""
    params = dict(model.named_parameters())
    with fwAD.dual_level():
        duals = {n: fwAD.make_dual(params[n].detach(), t) for n, t in tangents.items()}
        duals = {n: d.requires_grad_() for n, d in duals.items()}
        value = loss(functional_call(model, duals, (x,)))
        grads = torch.autograd.grad(value, list(duals.values()))
        return {n: fwAD.unpack_dual(g).tangent for n, g in zip(duals, grads, strict=True)}


def chunk_product(
    model: nn.Module, pieces: Sequence[Tensor], x: Tensor, loss: Loss
) -> list[Tensor]:
    """H·v of loss(model(x)) (its trainable parameters, in order; `pieces` is v cut to their
    shapes): by RULES where `ruled(model)`, else generically."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if ruled(model):
        out = ruled_product(model, dict(zip((p for _, p in named), pieces, strict=True)), x, loss)
        return [out[p] for _, p in named]
    out = generic_product(model, dict(zip((n for n, _ in named), pieces, strict=True)), x, loss)
    return [out[n] for n, _ in named]
