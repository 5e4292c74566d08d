"""`sharpminima train` (one run into HDF5) and `sharpminima models` (the six networks)."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from .common import add_settings, log, runs_on, settings_from


def cmd_train(args: argparse.Namespace) -> None:
    from ..train.trainer import TrainConfig, WarmStart, train

    cfg = settings_from(TrainConfig, args)
    bar = sys.stderr.isatty()  # a terminal: a bar within epochs; a log file: plain lines only
    if (args.warm_run is None) != (args.warm_epoch is None):
        raise UserError("--warm-run and --warm-epoch go together: pass both or neither")
    warm = None if args.warm_run is None else WarmStart(args.warm_run, args.warm_epoch)
    train(cfg, args.data, args.out, args.device, log, args.label, bar, warm)
    log(f"wrote {args.out}")


def _train_options(p: argparse.ArgumentParser) -> None:
    from ..train.trainer import TrainConfig

    p.add_argument("--data", required=True, help="dataset file from `sharpminima prepare`")
    p.add_argument("--out", required=True, help="run file to write (.h5)")
    add_settings(p, TrainConfig)
    p.add_argument("--warm-run", default=None, help="start from an iterate of this run file")
    p.add_argument("--warm-epoch", type=int, default=None, help="... at this epoch (0: its x0)")
    p.add_argument("--label", default="", help="regime name for tables, e.g. SB or LB")
    runs_on(p)


def cmd_models(args: argparse.Namespace) -> None:
    from ..models import NETWORKS, build, count_params

    print(f"{'network':<8}{'dataset':<10}{'input':<14}{'classes':>8}{'parameters':>14}")
    for name, s in NETWORKS.items():
        shape = "x".join(map(str, s.input_shape))
        params = count_params(build(name))
        print(f"{name:<8}{s.dataset:<10}{shape:<14}{s.num_classes:>8}{params:>14,}")


COMMANDS = {"train": (_train_options, cmd_train)}
