"""`sharpminima prepare SOURCE`: one sub-command per dataset source, each with its own options."""

from __future__ import annotations

import argparse
import os

from ..errors import UserError
from .common import log


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--input-shape must be comma-separated integers, got {text!r}") from None


def cmd_prepare(args: argparse.Namespace) -> None:
    from ..data import dataset

    if args.source == "mnist":
        dataset.prepare_mnist(args.root, args.out, download=not args.no_download)
    elif args.source == "fashion-mnist":
        from ..data.fashion import prepare_fashion_mnist

        prepare_fashion_mnist(
            args.root, args.out, args.folder, args.transform, download=not args.no_download
        )
    elif args.source in dataset.CIFAR:
        dataset.prepare_cifar(args.source, args.root, args.out, download=not args.no_download)
    elif args.source == "timit-kaldi":
        from ..data.kaldi import KaldiSplit, prepare_timit_kaldi

        base = os.path.join(args.root, "timit-kaldi")
        splits = {
            split: KaldiSplit(
                getattr(args, split) or os.path.join(base, split),
                getattr(args, f"{split}_ali") or [os.path.join(base, split, "pdf.ark")],
            )
            for split in ("train", "test")
        }
        prepare_timit_kaldi(
            args.out,
            splits["train"],
            splits["test"],
            context=args.context,
            cmvn=args.cmvn,
            classes=args.classes,
            allow_pipes=args.allow_pipes,
            kaldi_root=args.kaldi_root,
            log=log,
        )
    elif args.source == "timit-raw":
        from ..data.timit import prepare_timit_raw

        corpus = args.corpus or os.path.join(args.root, "TIMIT")
        prepare_timit_raw(args.out, corpus, args.phones, args.context, args.cmvn, log=log)
    else:
        dataset.make_synthetic(
            args.out,
            args.n_train,
            args.n_test,
            _shape(args.input_shape),
            args.classes,
            seed=args.seed,
            noise=args.noise,
        )
    log(f"wrote {args.out}")


def _prepare_options(p: argparse.ArgumentParser) -> None:
    """One sub-command per dataset source, each with its own options only."""
    sources = p.add_subparsers(dest="source", required=True, metavar="SOURCE")

    def source(name: str, help: str, root: str | None) -> argparse.ArgumentParser:
        s = sources.add_parser(name, help=help)
        s.add_argument("--out", required=True, help="dataset file to write (.h5)")
        if root:
            s.add_argument("--root", default="data", help=f"folder holding {root}")
        return s

    images = {
        "mnist": "MNIST/raw",
        "cifar10": "cifar-10-batches-py",
        "cifar100": "cifar-100-python",
    }
    for name, folder in images.items():
        s = source(name, f"{name} (torchvision's files; downloaded if missing)", folder)
        s.add_argument("--no-download", action="store_true", help="never download")
    fashion = source(
        "fashion-mnist",
        "Fashion-MNIST (torchvision's raw files or Debian's .gz; downloaded if missing)",
        "FashionMNIST/raw",
    )
    fashion.add_argument("--no-download", action="store_true", help="never download")
    fashion.add_argument(
        "--folder",
        help="folder holding the four IDX files, plain or .gz, instead of ROOT/FashionMNIST/raw "
        "(Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist)",
    )
    fashion.add_argument(
        "--transform",
        default="none",
        choices=["none", "pad32-rgb"],  # fashion.TRANSFORMS, without importing numpy here
        help="none: 1x28x28 (F1); pad32-rgb: zero-padded to 32x32, gray repeated to 3 channels "
        "(C1-C4 unchanged; docs/formats.md)",
    )
    kaldi = source("timit-kaldi", "TIMIT frames from Kaldi tables (docs/timit.md)", "timit-kaldi/")
    for split in ("train", "test"):
        kaldi.add_argument(
            f"--{split}",
            help=f"{split} data directory, scp/ark or rspecifier (ROOT/timit-kaldi/{split})",
        )
        kaldi.add_argument(
            f"--{split}-ali",
            nargs="+",
            help=f"ali-to-pdf outputs (default ROOT/timit-kaldi/{split}/pdf.ark)",
        )
    kaldi.add_argument("--context", type=int, default=4, help="frames spliced each side (4)")
    kaldi.add_argument("--cmvn", default="none", help="none (default), mean or meanvar")
    kaldi.add_argument("--classes", type=int, default=0, help="pdfs (0: from the alignments)")
    kaldi.add_argument("--kaldi-root", default=None, help="folder relative scp paths start from")
    kaldi.add_argument("--allow-pipes", action="store_true", help="run 'command |' tables")
    raw = source("timit-raw", "TIMIT frames from the LDC corpus (docs/timit.md)", "TIMIT/")
    raw.add_argument("--corpus", help="the TIMIT folder (default ROOT/TIMIT)")
    raw.add_argument("--phones", type=int, default=39, help="39 (default), 48 or 61 classes")
    raw.add_argument("--context", type=int, default=4, help="frames spliced each side (4)")
    raw.add_argument("--cmvn", default="mean", help="none, mean (default) or meanvar")
    syn = source("synthetic", "Gaussian class clusters, for tests and demos", None)
    syn.add_argument("--n-train", type=int, default=1000, help="training examples (1000)")
    syn.add_argument("--n-test", type=int, default=200, help="test examples (200)")
    syn.add_argument("--input-shape", default="1,28,28", help="e.g. 1,28,28 (default)")
    syn.add_argument("--classes", type=int, default=10, help="number of classes (10)")
    syn.add_argument("--seed", type=int, default=0, help="random seed (0)")
    syn.add_argument("--noise", type=float, default=1.0, help="cluster spread (1.0)")


COMMANDS = {"prepare": (_prepare_options, cmd_prepare)}
