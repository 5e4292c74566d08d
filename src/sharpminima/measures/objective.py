"""f over a whole dataset for any `nn.Module`: its value, gradient and Hessian-vector products.

Every measure of sharpness (Metric 2.1, curvature, adaptive sharpness) is a question about one
function: the mean loss over all the examples, evaluated in chunks with BatchNorm in a fixed
mode (batch or running statistics, never updating the buffers). Defining it once keeps the
measures comparable; taking a tensor pair *or* a DataLoader lets users measure their own models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from torch.func import functional_call, grad, jvp
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.utils.data import DataLoader, RandomSampler

from ..errors import UserError, require_finite
from ..models import BN_MODES, evaluation
from ..runtime import chunks
from ..settings import setting
from .hvp import chunk_product

Data = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# One chunk's share of H·v: (v cut to the parameters' shapes, x, y) -> one tensor per parameter.
ChunkProduct = Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor], Sequence[torch.Tensor]]


@dataclass(frozen=True)
class Evaluation:
    """How f is evaluated, shared by the measures' settings: BatchNorm mode, chunk, seed."""

    bn: str = setting("batch", "BatchNorm statistics in f: batch (authors' Keras) or running")
    chunk: int = setting(5000, "examples per chunk of f")
    seed: int = setting(0, "seed of the random vectors")

    def check(self) -> None:
        require_finite(self)
        if self.bn not in BN_MODES:
            raise UserError(f"unknown BatchNorm mode {self.bn!r}: use 'batch' or 'running'")
        if self.chunk < 2:
            raise UserError(f"chunk must be at least 2 (BatchNorm needs two), got {self.chunk}")


@dataclass(frozen=True)
class Sampled(Evaluation):
    """For the measures that may work on subsets: the Monte Carlo ones (the trace, the average
    case) take each sample over its own random subset of the examples, so one sample costs
    sample/n of the whole set and the spread of the samples, hence their standard error,
    includes the subsampling; the worst cases ascend on subsets (adaptive.py), and λ_max
    may run on one fixed subset, by choice (curvature.py)."""

    sample: int = setting(0, "examples per Monte Carlo sample, each a fresh random subset (0: all)")

    def check(self) -> None:
        super().check()
        if self.sample == 1 or self.sample < 0:
            raise UserError(f"sample must be 0 (all examples) or at least 2, got {self.sample}")


def cross_entropy_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default loss: cross-entropy summed over a chunk (the mean is taken over all chunks)."""
    return F.cross_entropy(out, y, reduction="sum")


class Objective:
    """f(θ) = (1/n) Σ loss(model_θ(x_i), y_i) over `data`, at flat parameters θ.

    `data` is a pair (x, y), cut into chunks of `chunk`, or an iterable of (x, y) batches that
    can be iterated again, such as a DataLoader or a list (its batches are the chunks; it must
    not shuffle, or with batch-statistics BatchNorm f would change from call to call). `loss`
    returns the *sum* over a chunk.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Data,
        bn: str = "batch",
        chunk: int = 5000,
        loss: LossFn = cross_entropy_sum,
    ):
        self.model, self.data, self.bn, self.chunk, self.loss = model, data, bn, chunk, loss
        if isinstance(data, DataLoader) and isinstance(data.sampler, RandomSampler):
            raise UserError("the DataLoader shuffles: pass one with shuffle=False, so f is fixed")
        if not isinstance(data, tuple) and iter(data) is data:  # a generator: read once only
            raise UserError("data is a one-shot iterator: pass a DataLoader, a list or (x, y)")
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise UserError("the model has no trainable parameters: nothing to measure")
        self.theta0 = parameters_to_vector(self.params).detach().clone()
        self.device = self.theta0.device
        self.n = len(data[0]) if isinstance(data, tuple) else sum(len(y) for _, y in data)
        if self.n == 0:
            raise UserError("no examples to evaluate f on: pass a non-empty dataset")
        self.evaluations = 0
        self.parent: Objective | None = None

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.data, tuple):
            x, y = self.data
            for s in chunks(len(x), self.chunk):
                yield x[s], y[s]
        else:
            for x, y in self.data:
                yield x.to(self.device), y.to(self.device)

    def __call__(self, theta: torch.Tensor, grad: bool = True) -> tuple[float, torch.Tensor | None]:
        """f(θ), and ∇f(θ) if `grad`; the model keeps θ until `restore()`."""
        self._count()
        vector_to_parameters(theta, self.params)
        for p in self.params:
            p.grad = None
        total = 0.0
        with evaluation(self.model, self.bn), torch.set_grad_enabled(grad):
            for x, y in self.batches():
                value = self.loss(self.model(x), y) / self.n
                if grad:
                    value.backward()
                total += value.item()
        if not grad:
            return total, None
        return total, torch.cat([p.grad.reshape(-1) for p in self.params])

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """H v at θ0, H = ∇²f: the derivative of ∇f along v, chunk by chunk, by forward over
        reverse mode (hvp.py: 2.2-2.8 gradients on the paper's networks)."""

        def chunk(pieces: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> Sequence:
            return chunk_product(self.model, pieces, x, lambda out: self.loss(out, y) / self.n)

        return self._summed_over_chunks(v, chunk)

    def compiled_hvp(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """`hvp` by forward-over-reverse (`torch.func.jvp` of `grad`) under `torch.compile`,
        for models the rules of hvp.py do not cover, whose generic product it fuses; on the
        paper's networks it is no faster than the rules (docs/performance.md), after one
        compile per chunk shape. Equal to `hvp` up to float rounding; bitwise the same from run
        to run on one machine."""
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]

        def forward_over_reverse(theta: dict, v: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
            def f(q: dict) -> torch.Tensor:
                return self.loss(functional_call(self.model, q, (x,)), y) / self.n

            return jvp(grad(f), (theta,), (v,))[1]

        compiled = torch.compile(forward_over_reverse)

        def chunk(pieces: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> Sequence:
            theta = {n: p.detach() for n, p in zip(names, self.params, strict=True)}
            hv = compiled(theta, dict(zip(names, pieces, strict=True)), x, y)
            return [hv[n] for n in names]

        return lambda v: self._summed_over_chunks(v, chunk)

    def _summed_over_chunks(self, v: torch.Tensor, chunk: ChunkProduct) -> torch.Tensor:
        """Σ over the chunks of `chunk(pieces, x, y)`, each chunk's share of H v (one tensor per
        parameter; `pieces` is v cut to the parameters' shapes), at θ0, flattened."""
        vector_to_parameters(self.theta0, self.params)
        self._count()
        out = torch.zeros_like(self.theta0)
        parts = v.to(self.theta0).split([p.numel() for p in self.params])
        pieces = [t.view_as(p) for t, p in zip(parts, self.params, strict=True)]
        with evaluation(self.model, self.bn):
            for x, y in self.batches():
                out += torch.cat([h.reshape(-1) for h in chunk(pieces, x, y)])
        return out

    def restore(self) -> None:
        """Put θ0 back into the model."""
        vector_to_parameters(self.theta0, self.params)

    def _count(self) -> None:
        self.evaluations += 1
        if self.parent is not None:
            self.parent._count()

    def subset(self, index: torch.Tensor) -> Objective:
        """f over the examples `index` only, at the same θ0, in equal chunks of at most `chunk`
        (a short last chunk would give batch-statistics BatchNorm a noisier batch); its
        evaluations count as this f's too."""
        if not isinstance(self.data, tuple):
            raise UserError("sampling needs the examples as a pair (x, y), not batches")
        x, y = self.data
        pieces = -(-len(index) // self.chunk)
        index = index.to(x.device)
        sub = Objective(self.model, (x[index], y[index]), self.bn, -(-len(index) // pieces))
        sub.loss, sub.theta0, sub.parent = self.loss, self.theta0, self
        return sub


def resampled(f: Objective, size: int, seed: int) -> Callable[[], Objective]:
    """f over a fresh uniformly random subset of `size` examples at each call (0: f itself).
    The subsets come from their own stream of `seed`, apart from the measures' vectors, in
    random order: chunks of a sorted subset would inherit any order the data are stored in.
    With batch-statistics BatchNorm a subset holds a chunk at least, so each of its batches is
    at least half of f's."""
    if size == 0 or size == f.n:
        return lambda: f
    if size > f.n:
        raise UserError(f"sample {size} is more than the {f.n} examples: use at most {f.n}")
    batch_statistics = f.bn == "batch" and any(isinstance(m, _BatchNorm) for m in f.model.modules())
    if batch_statistics and size < min(f.chunk, f.n):
        raise UserError(
            f"sample {size} is less than a chunk ({min(f.chunk, f.n)}): with batch-statistics "
            "BatchNorm its batches would be smaller than f's, and a small batch's curvature is "
            "biased upward (docs/panel.md); raise sample to a chunk or more, or lower chunk"
        )
    rng = np.random.default_rng([seed, 1])
    return lambda: f.subset(torch.from_numpy(rng.permutation(f.n)[:size]))


# A measure: its settings class, and what it computes from f, the settings and a log.
Measures = dict[str, tuple[type, Callable[["Objective", Any, Callable[[str], None] | None], dict]]]


def measure(
    measures: Measures,
    model: nn.Module,
    data: Data,
    cfg: Evaluation,
    loss: LossFn = cross_entropy_sum,
    log: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """The measure of `measures` whose settings class is `cfg`'s, of `model`'s parameters on
    `data`, with its settings, the evaluations of f it took (for curvature: Hessian-vector
    products) and its seconds; the model is left unchanged."""
    cfg.check()
    what, (_, compute) = next((k, v) for k, v in measures.items() if type(cfg) is v[0])
    started = time.perf_counter()
    f = Objective(model, data, cfg.bn, cfg.chunk, loss)
    try:
        result = compute(f, cfg, log)
    finally:
        f.restore()
    return {"measure": what, **result, **asdict(cfg), "n_params": f.theta0.numel(),
            "n_examples": f.n, "evaluations": f.evaluations,
            "seconds": time.perf_counter() - started}  # fmt: skip


def standard_error(samples: list[float] | np.ndarray) -> float:
    """s/√m of a Monte Carlo mean (a measure's samples), widened so that ±2 and ±3 of it cover
    as a normal's would: by t(0.975, m − 1)/1.96 for the estimated s, and by 1 + |γ|·19/(18√m)
    for the samples' skewness γ (the Edgeworth term by which the studentized mean's quantile
    at z = 3 moves, γ(2z² + 1)/(6√m), as a fraction of 3; Hall 1992). The samples of a
    trained network's curvature are right-skewed: a few that missed the large values have a
    low mean and a small s together (docs/panel.md)."""
    x = np.asarray(samples, dtype=float)
    m = len(x)
    s = float(np.std(x, ddof=1))
    if s == 0:
        return 0.0
    skew = abs(float(np.mean((x - x.mean()) ** 3)) / float(np.var(x)) ** 1.5)
    widen = stats.t.ppf(0.975, m - 1) / 1.96 * (1 + skew * 19 / (18 * math.sqrt(m)))
    return s / math.sqrt(m) * float(widen)
