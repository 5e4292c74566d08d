"""SB/LB training with a documented stopping rule, resumable after any kill.

While a run is in progress its state lives in `<out>.partial/`: one `epoch_NNNNN.pt` per kept
iterate and `checkpoint.pt` (model, optimizer, RNG streams, history, stopping state), each
written atomically. Starting the same run again continues after the last checkpoint; on CPU
the result is bitwise that of an uninterrupted run. Only the finished run is written to `out`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..atomic import atomic_path
from ..data.dataset import Dataset, load_dataset
from ..errors import UserError, require_finite, require_text
from ..guard import writes
from ..models import build, check_fits
from ..runtime import chunks, device_name, evaluate, pick_device, versions
from ..settings import setting
from ..store import Run, write_run
from . import modern, remedies

OPTIMIZERS = {"adam": 1e-3, "sgd": 1e-2, "adagrad": 1e-2}  # Keras/PyTorch default learning rates
STOP_RULES = ("val_loss", "train_loss", "fixed")
VAL_SPLIT_SEED = 0  # the validation split is a property of the dataset, not of the trial


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes a run's result (documented in docs/training.md)."""

    network: str = setting(help="F1, F2, C1, C2, C3 or C4")
    batch_size: float = setting(256, "examples per batch, or a fraction of the training set")
    optimizer: str = setting("adam", "adam, sgd or adagrad")
    lr: float | None = setting(None, "learning rate (default: the optimizer's)")
    momentum: float = setting(0.9, "SGD momentum")
    seed: int = setting(0, "trial seed: fixes the initial point")
    max_epochs: int = setting(100, "epoch cap")
    stop: str = setting("val_loss", "val_loss, train_loss or fixed; see docs/training.md")
    patience: int = setting(5, "epochs without improvement")
    rel_tol: float = setting(0.0, "relative improvement needed")
    val_size: float = setting(5000, "validation examples (or fraction); val_loss only")
    save_every: int = setting(1, "keep every k-th epoch's iterate")
    eval_bn: str = setting("batch", "BatchNorm when measuring: batch or running")
    eval_chunk: int = setting(5000, "examples per evaluation chunk")
    # Appendix E's remedies (remedies.py, docs/remedies.md); the defaults switch them off.
    augment: bool = setting(False, "E.1: flips, rotations ≤ 10°, shifts ≤ 0.2 (images only)")
    proximal: float = setting(0.0, "E.2: λ of conservative training (paper 1e-3); 0: off")
    proximal_steps: int = setting(3, "E.2: ADAM iterations on each batch's sub-problem")
    fgsm: float = setting(0.0, "E.3: ε of FGSM examples mixed into each batch; 0: off")
    fgsm_weight: float = setting(0.5, "E.3: their share of the loss")
    stability: float = setting(0.0, "E.3: α of stability training's KL term; 0: off")
    stability_sigma: float = setting(0.04, "E.3: σ of its Gaussian input perturbation")
    # Methods since the paper (modern.py, docs/modern.md); the defaults switch them off.
    sam: float = setting(0.0, "SAM's ρ (Foret et al.; 0.05 typical); 0: off")
    sam_adaptive: bool = setting(False, "ASAM: ρ relative to |w| (Kwon et al.; ρ 0.5 typical)")
    ghost_batch: int = setting(0, "ghost BatchNorm: examples per virtual batch; 0: off")
    lr_scaling: str = setting("none", "scale the lr with the batch size: none, linear or sqrt")
    lr_base_batch: int = setting(256, "the batch size the lr is given for")
    warmup_epochs: float = setting(0.0, "epochs of linear warm-up from lr to the scaled lr")
    ramp_start: float = setting(0.0, "batch-size ramp: epoch 1's batch (or fraction); 0: off")
    ramp_epochs: int = setting(10, "the epoch at which the ramp reaches batch_size")

    def check(self) -> None:
        require_finite(self)
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            choices = ", ".join(OPTIMIZERS)
            raise UserError(f"unknown optimizer {self.optimizer!r}: use one of {choices}")
        if self.stop not in STOP_RULES:
            choices = ", ".join(STOP_RULES)
            raise UserError(f"unknown stopping rule {self.stop!r}: use one of {choices}")
        for name in ("proximal", "fgsm", "stability", "stability_sigma", "sam", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be 0 (off) or positive, got {getattr(self, name)}")
        if not 0 <= self.fgsm_weight <= 1:
            raise UserError(f"fgsm_weight must be in [0, 1], got {self.fgsm_weight}")
        if self.sam_adaptive and self.sam == 0:
            raise UserError("sam_adaptive (ASAM) needs sam > 0: set sam to ASAM's ρ, e.g. 0.5")
        if self.ghost_batch == 1 or self.ghost_batch < 0:
            raise UserError(f"ghost_batch must be 0 (off) or at least 2, got {self.ghost_batch}")
        if self.lr_scaling not in modern.LR_SCALINGS:
            choices = ", ".join(modern.LR_SCALINGS)
            raise UserError(f"unknown lr_scaling {self.lr_scaling!r}: use one of {choices}")
        if self.ramp_start < 0:
            raise UserError(f"ramp_start must be 0 (off) or a batch size, got {self.ramp_start}")
        for name in ("max_epochs", "patience", "save_every", "eval_chunk", "proximal_steps",
                     "lr_base_batch", "ramp_epochs"):  # fmt: skip
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_bn not in ("batch", "running"):
            raise UserError(f"eval_bn must be 'batch' or 'running', got {self.eval_bn!r}")


def resolve_count(value: float, n: int, what: str) -> int:
    """An integer count as given, or a fraction in (0, 1) of `n` (LB: batch 0.1 = 10%)."""
    if 0 < value < 1:
        count = max(1, round(value * n))
    elif value >= 1 and float(value).is_integer():
        count = int(value)
    else:
        raise UserError(f"{what} must be a positive integer or a fraction in (0, 1), got {value}")
    if count > n:
        raise UserError(
            f"{what} {count} is larger than the {n} examples it draws from: use at most {n} "
            "or a fraction such as 0.1"
        )
    return count


class Stopper:
    """'Until the loss ceased to improve': stop once the monitored loss has not gone below
    best × (1 − rel_tol) for `patience` consecutive epochs. Rule 'fixed' never stops early."""

    def __init__(self, rule: str, patience: int, rel_tol: float):
        self.rule, self.patience, self.rel_tol = rule, patience, rel_tol
        self.best, self.best_epoch, self.bad = math.inf, 0, 0

    def update(self, epoch: int, row: dict[str, float]) -> str | None:
        if self.rule == "fixed":
            return None
        value = row[self.rule]
        if value < self.best * (1 - self.rel_tol):
            self.best, self.best_epoch, self.bad = value, epoch, 0
            return None
        self.bad += 1
        if self.bad >= self.patience:
            return f"{self.rule} did not improve for {self.patience} epochs"
        return None


def make_optimizer(cfg: TrainConfig, params, lr: float) -> torch.optim.Optimizer:
    # fused kernels: one pass over all parameters per step (about 7% of an F1 SB epoch on CPU)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, fused=True)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, fused=True)


def split_train_val(n: int, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices of the examples trained on and of the validation split (stop == 'val_loss')."""
    if cfg.stop != "val_loss":
        return torch.arange(n), None
    n_val = resolve_count(cfg.val_size, n - 1, "val_size")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


@dataclass(frozen=True)
class WarmStart:
    """Start from a stored iterate of another run (Figure 5's piggybacking) instead of x₀."""

    run: str
    epoch: int

    def __post_init__(self) -> None:
        if self.epoch < 0:
            raise UserError(f"--warm-epoch is {self.epoch}: give 0 (the source's x0) or more")

    def state(self, network: str, data: Dataset) -> dict[str, torch.Tensor]:
        """The iterate, read in place from the run's HDF5, checked to fit this run."""
        source = Run(self.run)
        if source.attrs["network"] != network:
            raise UserError(
                f"{self.run} is a run of {source.attrs['network']}, not {network}: "
                "warm-start from a run of the same network"
            )
        if not data.matches(source.attrs["dataset_sha256"]):
            raise UserError(f"{self.run} was trained on other data: warm-start from a run on it")
        return source.state(self.epoch if self.epoch > 0 else "init")

    def attrs(self) -> dict[str, object]:
        """What the run file records, and a checkpoint must match: the source (its path, and
        its finishing time, which identifies it wherever it is moved and changes when it is
        retrained) and the epoch."""
        finished = Run(self.run).attrs["finished"]
        return {"warm_run": self.run, "warm_epoch": self.epoch, "warm_run_finished": finished}


class Trainer:
    """One run: a network, a dataset, a batch size, a seed (= the initial point, unless the run
    warm-starts from another's iterate; the seed still fixes the batches and dropout)."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: Dataset,
        device: torch.device,
        log: Callable,
        bar: bool = False,
        warm: WarmStart | None = None,
    ):
        cfg.check()
        check_fits(cfg.network, data.input_shape, data.num_classes)
        if cfg.augment and len(data.input_shape) != 3:
            raise UserError(
                f"augment flips, rotates and shifts images, but {data.name} has inputs of shape "
                f"{tuple(data.input_shape)}: turn augment off for it"
            )
        self.cfg, self.data, self.device, self.log = cfg, data, device, log
        self.bar = bar  # a progress bar within each epoch (terminals only; logs get lines)
        train_idx, self.val_idx = split_train_val(len(data.x_train), cfg)
        self.n_train = len(train_idx)
        self.batch = resolve_count(cfg.batch_size, self.n_train, "batch size")
        self.ramp = (
            resolve_count(cfg.ramp_start, self.n_train, "ramp_start") if cfg.ramp_start else 0
        )
        if min(self.batch, self.ramp or self.batch) < 2:  # every network has BatchNorm
            raise UserError("batch size 1 cannot train a network with BatchNorm: use at least 2")
        if self.ramp > self.batch:
            raise UserError(
                f"ramp_start {self.ramp} is larger than the batch size {self.batch}: the ramp "
                "grows the batch, so start below it"
            )
        self.lr = cfg.lr if cfg.lr is not None else OPTIMIZERS[cfg.optimizer]
        self.peak_lr = self.lr * modern.lr_factor(cfg.lr_scaling, self.batch, cfg.lr_base_batch)
        self.x = data.x_train[train_idx].to(device)
        self.y = data.y_train[train_idx].to(device)
        self.eval_sets = {"train": (self.x, self.y)}
        if self.val_idx is not None:
            self.eval_sets["val"] = (
                data.x_train[self.val_idx].to(device),
                data.y_train[self.val_idx].to(device),
            )
        self.eval_sets["test"] = (data.x_test.to(device), data.y_test.to(device))
        self.model = build(cfg.network, seed=cfg.seed, num_classes=data.num_classes)
        self.warm = None if warm is None else warm.attrs()  # read once, not at each checkpoint
        if warm is not None:
            self.model.load_state_dict(warm.state(cfg.network, data))
        self.model.to(device)
        self.opt = make_optimizer(cfg, self.model.parameters(), self.lr)
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        # The remedies' random draws, on the device; a stream of its own, so that switching a
        # remedy on leaves the run's batch order as it was.
        self.noise = torch.Generator(device=device).manual_seed(cfg.seed + 1_000_003)
        self.stopper = Stopper(cfg.stop, cfg.patience, cfg.rel_tol)
        self.history: list[dict[str, float]] = []
        self.epoch, self.steps, self.done = 0, 0, None
        torch.manual_seed(cfg.seed)  # dropout masks

    def identity(self) -> dict:
        """What a checkpoint must match to be resumed."""
        return {
            "config": dataclasses.asdict(self.cfg),
            "data": self.data.content_sha256,
            "warm": self.warm,
        }

    def batch_size(self) -> int:
        """This epoch's batch: the ramp's while it lasts, else the run's."""
        if not self.ramp:
            return self.batch
        epoch = max(self.epoch, 1)  # epoch 0 (x₀) is recorded with the first epoch's batch
        return modern.ramp_batch(epoch, self.ramp, self.batch, self.cfg.ramp_epochs)

    def train_epoch(self) -> float:
        self.model.train()
        start = time.perf_counter()
        perm = torch.randperm(self.n_train, generator=self.shuffle).to(self.device)
        batches = list(chunks(self.n_train, self.batch_size()))
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        shown = (
            tqdm(batches, f"epoch {self.epoch}", unit="batch", leave=False) if self.bar else None
        )
        with modern.ghost_batches(self.model, cfg.ghost_batch):
            for i, s in enumerate(shown or batches):
                progress = self.epoch - 1 + i / len(batches)
                lr = modern.warmup_lr(self.lr, self.peak_lr, progress, cfg.warmup_epochs)
                for group in self.opt.param_groups:
                    group["lr"] = lr
                self.step(perm[s], params)
        self.steps += len(batches)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def step(self, idx: torch.Tensor, params: list[torch.Tensor]) -> None:
        """One batch: its loss (with the remedies), then one optimizer step, or E.2's few."""
        cfg = self.cfg
        x, y = self.x[idx], self.y[idx]
        if cfg.augment:
            x = remedies.augment(x, self.noise)
        # E.2: x_{k+1} ≈ argmin f_B(x) + λ/2 ‖x − x_k‖², by a few optimizer steps
        anchor = [p.detach().clone() for p in params] if cfg.proximal > 0 else None

        def loss_fn() -> torch.Tensor:
            loss = remedies.objective(
                self.model, x, y, self.noise, cfg.fgsm, cfg.fgsm_weight,
                cfg.stability, cfg.stability_sigma,
            )  # fmt: skip
            return loss + remedies.proximal(params, anchor, cfg.proximal) if anchor else loss

        for _ in range(cfg.proximal_steps if anchor else 1):
            self.opt.zero_grad(set_to_none=True)
            if cfg.sam > 0:  # the gradient at the worst point of the ρ-ball, applied at w
                modern.sam_step(self.model, loss_fn, cfg.sam, cfg.sam_adaptive)
            else:
                loss_fn().backward()
            self.opt.step()

    def measure(self, seconds: float) -> dict[str, float]:
        start = time.perf_counter()
        row: dict[str, float] = {"epoch": self.epoch}
        for name, (x, y) in self.eval_sets.items():
            row[f"{name}_loss"], row[f"{name}_acc"] = evaluate(
                self.model, x, y, self.cfg.eval_chunk, self.cfg.eval_bn
            )
        if self.ramp:
            row["batch_size"] = self.batch_size()
        row["seconds"] = seconds
        row["eval_seconds"] = time.perf_counter() - start
        return row

    # --- checkpointing -------------------------------------------------------------------
    def checkpoint(self) -> dict:
        rng = {
            "shuffle": self.shuffle.get_state(),
            "noise": self.noise.get_state(),
            "torch": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "identity": self.identity(),
            "epoch": self.epoch,
            "steps": self.steps,
            "done": self.done,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": rng,
            "history": self.history,
            "stopper": vars(self.stopper),
        }

    def restore(self, ckpt: dict) -> None:
        self.epoch, self.done, self.history = ckpt["epoch"], ckpt["done"], ckpt["history"]
        self.steps = ckpt["steps"]
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        # RNG states must be CPU byte tensors; loading onto a GPU moved them there.
        rng = {k: v.cpu() for k, v in ckpt["rng"].items()}
        self.shuffle.set_state(rng["shuffle"])
        self.noise.set_state(rng["noise"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        vars(self.stopper).update(ckpt["stopper"])


def _save(obj: object, path: Path) -> None:
    """torch.save through memory: a full disk then raises OSError(ENOSPC), not a RuntimeError
    from deep inside PyTorch's zip writer."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _load_checkpoint(work: Path, trainer: Trainer) -> dict | None:
    path = work / "checkpoint.pt"
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=trainer.device, weights_only=True)
    except Exception as e:  # an unreadable checkpoint only costs the epochs since it
        trainer.log(f"ignoring unreadable checkpoint {path} ({e}); starting afresh")
        return None
    if ckpt.get("identity") != trainer.identity():
        trainer.log(f"checkpoint in {work} is for other settings or data; starting afresh")
        return None
    # The run file needs every kept iterate up to the checkpoint; one damaged on disk cannot
    # be remade from the one checkpoint kept, so the run starts again (exact, if slower).
    for path in sorted(work.glob("epoch_*.pt")):
        if int(path.stem.split("_")[1]) > ckpt["epoch"]:
            continue  # written just before a kill; trained again, and overwritten
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged zip raises many kinds
            trainer.log(f"ignoring {work}: {path.name} is unreadable ({e}); starting afresh")
            return None
    return ckpt


@writes()
def train(
    cfg: TrainConfig,
    dataset: str | Path,
    out: str | Path,
    device: str = "auto",
    log: Callable[[str], None] = print,
    label: str = "",
    bar: bool = False,
    warm: WarmStart | None = None,
) -> Path:
    """Train one run into `out` (HDF5), resuming from `<out>.partial/` if it holds a checkpoint.

    `label` names the regime in tables (e.g. 'SB'; see `Run.label`); it does not change the run.
    `bar` shows a progress bar over each epoch's batches (on stderr), besides the epoch lines.
    `warm` starts from another run's stored iterate (read in place) instead of the seed's x₀.
    """
    for text, what in ((label, "label"), (str(dataset), "dataset path"), (str(out), "output")):
        require_text(text, what)
    if "|" in label:
        raise UserError(f"label {label} holds |, which splits a Markdown table's cell: choose "
                        "another label")  # fmt: skip
    out = Path(out)
    data = load_dataset(dataset)
    dev = pick_device(device)
    trainer = Trainer(cfg, data, dev, log, bar, warm)
    log(f"training {out} on {device_name(dev)} ({torch.get_num_threads()} threads): {cfg}")
    work = out.with_name(out.name + ".partial")
    ckpt = _load_checkpoint(work, trainer)
    if ckpt is None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        _save(_cpu_state(trainer.model), work / "epoch_00000.pt")
        trainer.history.append(trainer.measure(0.0))
        _save(trainer.checkpoint(), work / "checkpoint.pt")
    else:
        trainer.restore(ckpt)
        log(f"resuming {out} after epoch {trainer.epoch}")
    started = time.perf_counter()
    first = trainer.epoch
    while trainer.done is None:
        trainer.epoch += 1
        row = trainer.measure(trainer.train_epoch())
        trainer.history.append(row)
        trainer.done = trainer.stopper.update(trainer.epoch, row)
        if not math.isfinite(row["train_loss"]):  # e.g. a learning rate scaled too far
            trainer.done = f"diverged: train loss {row['train_loss']} at epoch {trainer.epoch}"
        if trainer.done is None and trainer.epoch >= cfg.max_epochs:
            trainer.done = f"reached max_epochs={cfg.max_epochs}"
        if trainer.epoch % cfg.save_every == 0:
            _save(_cpu_state(trainer.model), work / f"epoch_{trainer.epoch:05d}.pt")
        _save(trainer.checkpoint(), work / "checkpoint.pt")
        per_epoch = (time.perf_counter() - started) / (trainer.epoch - first)
        log(_progress(trainer, per_epoch))
    log(f"stopped after epoch {trainer.epoch}: {trainer.done}")
    _finish(trainer, data, Path(dataset), dev, work, out, label)
    return out


def _progress(t: Trainer, per_epoch: float) -> str:
    row = t.history[-1]
    val = f" val_loss {row['val_loss']:.4g}" if "val_loss" in row else ""
    left = (t.cfg.max_epochs - t.epoch) * per_epoch
    return (
        f"epoch {t.epoch}/{t.cfg.max_epochs} train_loss {row['train_loss']:.4g} "
        f"train_acc {row['train_acc']:.2f}%{val} test_acc {row['test_acc']:.2f}% "
        f"{row['seconds']:.1f}s+{row['eval_seconds']:.1f}s eval (at most {left / 60:.1f} min left)"
    )


def _finish(
    t: Trainer, data: Dataset, dataset: Path, dev: torch.device, work: Path, out: Path, label: str
):
    """Assemble the kept iterates into the run file, then drop the work directory."""
    cfg = t.cfg
    attrs = {
        **{k: v for k, v in dataclasses.asdict(cfg).items() if v is not None},
        "lr": t.lr,
        "peak_lr": t.peak_lr,
        "batch_size": t.batch,
        "batch_size_spec": cfg.batch_size,
        "label": label,
        "dataset": data.name,
        "dataset_file": str(dataset),
        "dataset_sha256": data.content_sha256,
        "num_classes": data.num_classes,
        "n_train": t.n_train,
        "n_val": 0 if t.val_idx is None else len(t.val_idx),
        "n_test": len(data.x_test),
        "steps_per_epoch": len(list(chunks(t.n_train, t.batch))),
        "steps": t.steps,
        "epochs": t.epoch,
        "stop_reason": t.done,
        "best_epoch": t.stopper.best_epoch,
        **(t.warm or {}),
        "device": device_name(dev),
        "threads": torch.get_num_threads(),
        "versions": versions(),
        "host": socket.gethostname(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    kept = sorted(int(p.stem.split("_")[1]) for p in work.glob("epoch_*.pt"))

    def load(epoch: int) -> dict[str, torch.Tensor]:
        return torch.load(work / f"epoch_{epoch:05d}.pt", weights_only=True)

    iterates = ((e, load(e)) for e in kept if 0 < e <= t.epoch)
    val_index = None if t.val_idx is None else t.val_idx.numpy()
    history = pd.DataFrame(t.history)
    write_run(out, attrs, load(0), iterates, _cpu_state(t.model), history, val_index)
    shutil.rmtree(work)
