"""Training throughput: our trainer vs the plain PyTorch loop a user would write.

Both train F1 on the real MNIST training set with ADAM, same model, same batch size, same
threads, one epoch each after a short warm-up, side by side in one run. The plain loop reads
`torchvision.datasets.MNIST` through a `DataLoader` (ToTensor per example, default workers).
The floor (floor.py) is the samples/s the fp32 matmul rate would allow for a step's FLOPs;
"ours/floor" is how many times slower than that we are.

    python benchmarks/train_throughput.py --root ../shared/data [--epochs 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from floor import flops, matmul_rate
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from sharpminima.data.dataset import load_dataset, prepare_mnist
from sharpminima.models import build
from sharpminima.runtime import pick_device
from sharpminima.train.trainer import TrainConfig, Trainer

WARMUP_STEPS = 3


def plain_loop(root: str, batch: int, epochs: int, device: torch.device) -> float:
    """Samples/s of the textbook loop: Dataset + DataLoader + per-example ToTensor."""
    ds = datasets.MNIST(root, train=True, transform=transforms.ToTensor(), download=False)
    loader = DataLoader(ds, batch_size=batch, shuffle=True)
    model = build("F1", seed=0).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step(x, y):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i, (x, y) in enumerate(loader):  # warm-up: allocator, kernels
        step(x, y)
        if i + 1 == WARMUP_STEPS:
            break
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            step(x, y)
            seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def our_trainer(data_file: Path, batch: int, epochs: int, device: torch.device) -> float:
    """Samples/s of `Trainer.train_epoch` (in-memory tensors, index batches), no evaluation."""
    cfg = TrainConfig("F1", batch_size=batch, stop="fixed", max_epochs=epochs)
    trainer = Trainer(cfg, load_dataset(data_file), device, log=lambda m: None)
    x, y = trainer.x[: batch * WARMUP_STEPS], trainer.y[: batch * WARMUP_STEPS]
    for i in range(WARMUP_STEPS):
        loss = F.cross_entropy(
            trainer.model(x[i * batch : (i + 1) * batch]), y[i * batch : (i + 1) * batch]
        )
        trainer.opt.zero_grad()
        loss.backward()
        trainer.opt.step()
    seconds = sum(trainer.train_epoch() for _ in range(epochs))
    return epochs * trainer.n_train / seconds


def step_flops(batch: int, device: torch.device) -> int:
    """FLOPs of one training step of F1 (forward and backward; ADAM's update is not a matmul)."""
    model = build("F1", seed=0).to(device)
    x, y = torch.randn(batch, 784, device=device), torch.randint(0, 10, (batch,), device=device)
    return flops(lambda: F.cross_entropy(model(x), y).backward())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data", help="folder holding MNIST/raw")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "mnist.h5"
        prepare_mnist(args.root, data_file, download=False)
        print(
            f"F1 on MNIST (60,000 examples), ADAM, {device}, {torch.get_num_threads()} threads, "
            f"{args.epochs} epoch(s) each"
        )
        rate = matmul_rate(device)
        print(f"fp32 matmul: {rate / 1e12:.3g} TFLOP/s; floor = FLOPs of a step / that rate")
        print(f"{'batch':>6} {'ours (samples/s)':>17} {'plain loop (samples/s)':>23} {'ratio':>6} "
              f"{'floor (samples/s)':>18} {'ours/floor':>11}")  # fmt: skip
        for batch in (256, 6000):
            ours = our_trainer(data_file, batch, args.epochs, device)
            plain = plain_loop(args.root, batch, args.epochs, device)
            floor = rate * batch / step_flops(batch, device)
            print(f"{batch:>6} {ours:>17,.0f} {plain:>23,.0f} {ours / plain:>5.2f}x "
                  f"{floor:>18,.0f} {floor / ours:>10.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
