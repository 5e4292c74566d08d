"""The `sharpminima` command: one subcommand per workflow stage.

Bad input ends in one line on stderr naming the problem and the fix, exit status 2, and no
traceback; nothing is written at the output path.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
from datetime import datetime

# Before torch loads OpenMP: spin briefly, then sleep. With the default spin (300,000) several
# jobs sharing too few cores (snakemake --cores 8 on a 2-core laptop) ran F1 SB epochs 5-7x
# slower than their fair share; with 1,000 a lone job is as fast as before. See docs/training.md.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import torch  # noqa: E402

from . import __version__
from .errors import UserError
from .registry import FIGURES, MEASURES, SOURCES, STAGES


def _log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--input-shape must be comma-separated integers, got {text!r}") from None


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)


def _write_csv(table, out: str) -> None:
    from .atomic import atomic_path

    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    _log(f"wrote {out}")


def _settings(cls, args: argparse.Namespace, **overrides):
    """A settings dataclass from the options of the same names; --threads applied on the way."""
    _threads(args)
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in fields} | overrides)


def cmd_prepare(args: argparse.Namespace) -> None:
    from . import data

    if args.name == "mnist":
        data.prepare_mnist(args.root, args.out, download=not args.no_download)
    elif args.name in data.CIFAR:
        data.prepare_cifar(args.name, args.root, args.out, download=not args.no_download)
    elif args.name == "timit-kaldi":
        from .kaldi import KaldiSplit, prepare_timit_kaldi

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
            cmvn=args.cmvn or "none",
            classes=args.classes or 0,
            allow_pipes=args.allow_pipes,
            kaldi_root=args.kaldi_root,
            log=_log,
        )
    elif args.name == "timit-raw":
        from .timit import prepare_timit_raw

        corpus = args.corpus or os.path.join(args.root, "TIMIT")
        cmvn = args.cmvn or "mean"
        prepare_timit_raw(args.out, corpus, args.phones, args.context, cmvn, log=_log)
    elif args.name == "synthetic":
        data.make_synthetic(
            args.out,
            args.n_train,
            args.n_test,
            _shape(args.input_shape),
            10 if args.classes is None else args.classes,
            seed=args.seed,
            noise=args.noise,
        )
    else:
        raise UserError(f"unknown dataset {args.name!r}: choose one of {', '.join(SOURCES)}")
    _log(f"wrote {args.out}")


def cmd_models(args: argparse.Namespace) -> None:
    from .models import NETWORKS, build, count_params

    print(f"{'network':<8}{'dataset':<10}{'input':<14}{'classes':>8}{'parameters':>14}")
    for name, s in NETWORKS.items():
        shape = "x".join(map(str, s.input_shape))
        params = count_params(build(name))
        print(f"{name:<8}{s.dataset:<10}{shape:<14}{s.num_classes:>8}{params:>14,}")


def cmd_train(args: argparse.Namespace) -> None:
    from .training import TrainConfig, WarmStart, train

    cfg = _settings(TrainConfig, args)
    bar = sys.stderr.isatty()  # a terminal: a bar within epochs; a log file: plain lines only
    if (args.warm_run is None) != (args.warm_epoch is None):
        raise UserError("--warm-run and --warm-epoch go together: pass both or neither")
    warm = None if args.warm_run is None else WarmStart(args.warm_run, args.warm_epoch)
    train(cfg, args.data, args.out, args.device, _log, args.label, bar, warm)
    _log(f"wrote {args.out}")


def cmd_sharpness(args: argparse.Namespace) -> None:
    from .atomic import atomic_path
    from .sharpness import SharpnessConfig, run_sharpness

    cfg = _settings(SharpnessConfig, args)
    which = args.epoch if args.epoch is not None else "final"
    result = run_sharpness(args.run, cfg, which, args.data, args.device, args.cache_mb, _log)
    _log(
        f"phi {result['phi']:.6g} (f(x) {result['f_x']:.6g}, max f {result['f_max']:.6g}; "
        f"nit {result['nit']}, nfev {result['nfev']}, {result['seconds']:.1f}s)"
    )
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")


def cmd_trajectory(args: argparse.Namespace) -> None:
    from .sharpness import SharpnessConfig
    from .trajectory import finish, trajectory

    cfg = _settings(SharpnessConfig, args, bn="batch")  # each point sets its own mode
    table = trajectory(
        args.runs, args.bn, cfg, args.every, args.out, args.device, args.cache_mb, _log
    )
    _write_csv(table, args.out)
    finish(args.out)


def cmd_tables(args: argparse.Namespace) -> None:
    import pandas as pd

    from .tables import run_cells, sharpness_cells, write_tables

    cells = pd.concat([run_cells(args.runs), sharpness_cells(args.sharpness)], ignore_index=True)
    for path in write_tables(cells, args.out_dir):
        _log(f"wrote {path}")


def cmd_landscape(args: argparse.Namespace) -> None:
    from .landscape import LandscapeConfig, landscape

    cfg = _settings(LandscapeConfig, args, buffers=bool(args.buffers))
    landscape(args.sb, args.lb, args.out, cfg, args.device, _log, args.other_starts)
    _log(f"wrote {args.out}")


def cmd_figure(args: argparse.Namespace) -> None:
    from . import figures

    if args.kind not in FIGURES:
        raise UserError(f"unknown figure {args.kind!r}: use one of {', '.join(FIGURES)}")
    draw = getattr(figures, FIGURES[args.kind])
    for path in draw(args.input, args.out, _settings(figures.Style, args)):
        _log(f"wrote {path}")


def cmd_directions(args: argparse.Namespace) -> None:
    import pandas as pd

    from .directions import random_directions

    if len(args.runs) != len(args.phi):
        raise UserError(f"{len(args.runs)} runs but {len(args.phi)} --phi files: one per run")
    _threads(args)
    tables = [
        random_directions(run, phi, args.count, args.seed, args.device, _log)
        for run, phi in zip(args.runs, args.phi, strict=True)
    ]
    _write_csv(pd.concat(tables, ignore_index=True), args.out)


def cmd_measure(args: argparse.Namespace) -> None:
    from . import experiments
    from .atomic import atomic_path

    if args.what not in MEASURES:
        raise UserError(f"unknown measurement {args.what!r}: use one of {', '.join(MEASURES)}")
    needs = MEASURES[args.what]
    missing = [f"--{name}" for name in needs if not getattr(args, name)]
    if missing:
        raise UserError(f"measure {args.what} needs {' and '.join(missing)}")
    if args.what == "curves":
        table = experiments.accuracy_curves(args.sb + args.lb)
    else:
        table = getattr(experiments, args.what)(*(getattr(args, name) for name in needs))
    _write_csv(table, args.out)
    md = os.path.splitext(args.out)[0] + ".md"
    with atomic_path(md) as tmp:
        tmp.write_text(experiments.markdown(table, args.what))
    _log(f"wrote {md}")


def cmd_sensitivity(args: argparse.Namespace) -> None:
    from .figures import Style
    from .sensitivity import report

    for path in report(args.sharpness, args.out_dir, _settings(Style, args)):
        _log(f"wrote {path}")


def _style_options(p: argparse.ArgumentParser) -> None:
    """Figure style: the config's `figures` section; unset options keep figures.Style's."""
    keep = argparse.SUPPRESS
    p.add_argument("--width", type=float, default=keep, help="inches (default: one column, 3.4)")
    p.add_argument("--height", type=float, default=keep, help="panel height, inches (2.4)")
    p.add_argument("--font-size", type=float, default=keep, help="points (8)")
    p.add_argument("--dpi", type=int, default=keep, help="PNG resolution (300)")


def _sharpness_options(p: argparse.ArgumentParser) -> None:
    """Metric 2.1's settings (all but the BatchNorm mode) and where it runs."""
    p.add_argument("--eps", type=float, default=1e-3, help="box size ε")
    p.add_argument("--space", default="full", help="full (A = I) or random (A: n×dim)")
    p.add_argument("--dim", type=int, default=100, help="random subspace dimension p")
    p.add_argument("--iters", type=int, default=10, help="L-BFGS-B iterations")
    p.add_argument("--chunk", type=int, default=5000, help="examples per chunk of f")
    p.add_argument("--start", default="zero", help="zero, random or multistart")
    p.add_argument("--starts", type=int, default=4, help="random starts of multistart")
    p.add_argument("--seed", type=int, default=0, help="seed of A and of random starts")
    p.add_argument("--gtol", type=float, default=0.0, help="L-BFGS-B gtol (0: never)")
    p.add_argument("--ftol", type=float, default=0.0, help="L-BFGS-B ftol (0: never)")
    p.add_argument("--cache-mb", type=float, default=2048, help="memory for A (else regenerated)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")


def _stage(sub, name: str) -> argparse.ArgumentParser:
    """The subcommand of a workflow stage, described as the registry describes it."""
    return sub.add_parser(name, help=STAGES[name].help)


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line, like every other error: the problem, and where help is."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sharpminima", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prep = _stage(sub, "prepare")
    prep.add_argument("name", help=f"dataset source: {', '.join(SOURCES)}")
    prep.add_argument("--out", required=True, help="dataset file to write (.h5)")
    prep.add_argument(
        "--root",
        default="data",
        help="mnist, cifar, timit: folder holding MNIST/raw, cifar-*-py*/, timit-kaldi/, TIMIT/",
    )
    prep.add_argument("--no-download", action="store_true", help="mnist, cifar: never download")
    for split in ("train", "test"):
        prep.add_argument(
            f"--{split}",
            help=f"timit-kaldi: {split} data directory, scp/ark or rspecifier "
            f"(default ROOT/timit-kaldi/{split})",
        )
        prep.add_argument(
            f"--{split}-ali",
            nargs="+",
            help=f"timit-kaldi: ali-to-pdf outputs (default ROOT/timit-kaldi/{split}/pdf.ark)",
        )
    prep.add_argument("--context", type=int, default=4, help="timit: frames spliced each side")
    prep.add_argument(
        "--cmvn", default=None, help="timit: none, mean or meanvar (default: kaldi none, raw mean)"
    )
    prep.add_argument("--corpus", help="timit-raw: the TIMIT folder (default ROOT/TIMIT)")
    prep.add_argument("--phones", type=int, default=39, help="timit-raw: 39, 48 or 61 classes")
    prep.add_argument(
        "--kaldi-root", default=None, help="timit-kaldi: folder relative scp paths start from"
    )
    prep.add_argument(
        "--allow-pipes", action="store_true", help="timit-kaldi: run 'command |' tables"
    )
    prep.add_argument("--n-train", type=int, default=1000, help="synthetic: training examples")
    prep.add_argument("--n-test", type=int, default=200, help="synthetic: test examples")
    prep.add_argument("--input-shape", default="1,28,28", help="synthetic: e.g. 1,28,28")
    prep.add_argument(
        "--classes",
        type=int,
        default=None,
        help="synthetic: number of classes (10); timit-kaldi: pdfs (default: from alignments)",
    )
    prep.add_argument("--seed", type=int, default=0, help="synthetic: random seed")
    prep.add_argument("--noise", type=float, default=1.0, help="synthetic: cluster spread")
    prep.set_defaults(func=cmd_prepare)

    sub.add_parser("models", help="list the six networks and their parameter counts").set_defaults(
        func=cmd_models
    )

    tr = _stage(sub, "train")
    tr.add_argument("--network", required=True, help="F1, F2, C1, C2, C3 or C4")
    tr.add_argument("--data", required=True, help="dataset file from `sharpminima prepare`")
    tr.add_argument("--out", required=True, help="run file to write (.h5)")
    tr.add_argument(
        "--batch-size",
        type=float,
        default=256,
        help="examples per batch, or a fraction of the training set (LB: 0.1)",
    )
    tr.add_argument("--optimizer", default="adam", help="adam, sgd or adagrad")
    tr.add_argument("--lr", type=float, default=None, help="learning rate (default: optimizer's)")
    tr.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    tr.add_argument("--seed", type=int, default=0, help="trial seed: fixes the initial point")
    tr.add_argument("--max-epochs", type=int, default=100, help="epoch cap")
    tr.add_argument(
        "--stop",
        default="val_loss",
        help="val_loss (default), train_loss or fixed; see docs/training.md",
    )
    tr.add_argument("--patience", type=int, default=5, help="epochs without improvement")
    tr.add_argument("--rel-tol", type=float, default=0.0, help="relative improvement needed")
    tr.add_argument(
        "--val-size",
        type=float,
        default=5000,
        help="validation examples (or fraction) carved from training, val_loss only",
    )
    tr.add_argument("--save-every", type=int, default=1, help="keep every k-th epoch's iterate")
    tr.add_argument("--eval-bn", default="batch", help="BatchNorm when measuring: batch|running")
    tr.add_argument("--eval-chunk", type=int, default=5000, help="examples per evaluation chunk")
    tr.add_argument("--augment", action="store_true", help="E.1: flips, rotations, shifts")
    tr.add_argument("--proximal", type=float, default=0.0, help="E.2: conservative λ (0: off)")
    tr.add_argument("--proximal-steps", type=int, default=3, help="E.2: steps per batch")
    tr.add_argument("--fgsm", type=float, default=0.0, help="E.3: ε of FGSM examples (0: off)")
    tr.add_argument("--fgsm-weight", type=float, default=0.5, help="E.3: their loss share")
    tr.add_argument("--stability", type=float, default=0.0, help="E.3: stability α (0: off)")
    tr.add_argument("--stability-sigma", type=float, default=0.04, help="E.3: its noise σ")
    tr.add_argument("--warm-run", default=None, help="start from an iterate of this run file")
    tr.add_argument("--warm-epoch", type=int, default=None, help="... at this epoch (0: its x0)")
    tr.add_argument("--label", default="", help="regime name for tables, e.g. SB or LB")
    tr.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    tr.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    tr.set_defaults(func=cmd_train)

    sh = _stage(sub, "sharpness")
    sh.add_argument("run", help="run file from `sharpminima train`")
    sh.add_argument("--out", required=True, help="result file to write (.json)")
    sh.add_argument("--epoch", type=int, default=None, help="a stored epoch (default: final)")
    sh.add_argument("--data", default=None, help="dataset file (default: the run's)")
    _sharpness_options(sh)
    sh.add_argument("--bn", default="batch", help="BatchNorm statistics in f: batch|running")
    sh.set_defaults(func=cmd_sharpness)

    tj = _stage(sub, "trajectory")
    tj.add_argument("--runs", nargs="+", required=True, help="run files (one trial's SB and LB)")
    tj.add_argument("--bn", nargs="+", default=["batch"], help="BatchNorm modes: batch running")
    tj.add_argument("--every", type=int, default=1, help="every k-th stored epoch (and the last)")
    tj.add_argument("--out", required=True, help="CSV to write")
    _sharpness_options(tj)
    tj.set_defaults(func=cmd_trajectory)

    la = _stage(sub, "landscape")
    la.add_argument("--sb", required=True, help="SB run file of one trial")
    la.add_argument("--lb", required=True, help="LB run file of the same trial")
    la.add_argument("--out", required=True, help="landscape file to write (.h5)")
    la.add_argument("--kind", default="linear", help="linear (Fig. 3) or curvilinear (Fig. 7)")
    la.add_argument("--start", type=float, default=-1.0, help="first α")
    la.add_argument("--stop", type=float, default=2.0, help="last α")
    la.add_argument("--points", type=int, default=25, help="number of α")
    la.add_argument("--bn", default="batch", help="BatchNorm statistics: batch|running")
    la.add_argument("--chunk", type=int, default=5000, help="examples per evaluation chunk")
    la.add_argument(
        "--buffers",
        type=int,
        choices=(0, 1),
        default=1,
        help="1: interpolate BatchNorm running statistics too; 0: keep SB's",
    )
    la.add_argument(
        "--other-starts", action="store_true", help="allow runs that start from different x0"
    )
    la.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    la.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    la.set_defaults(func=cmd_landscape)

    me = _stage(sub, "measure")
    me.add_argument(
        "what",
        help="curves (Figure 2: accuracy per epoch), distances (from x0), iterations (App. C), "
        "sweep (Figure 4: --runs, --phi), warmstart (Figure 5: --sb, --lb, --phi), "
        "remedies (Table 6: --runs, --phi); each also writes OUT.md, the table in Markdown",
    )
    me.add_argument("--sb", nargs="+", default=[], help="small-batch runs (warmstart: the source)")
    me.add_argument("--lb", nargs="+", default=[], help="large-batch runs (warmstart: warm runs)")
    me.add_argument("--runs", nargs="+", default=[], help="sweep, remedies: the runs")
    me.add_argument("--phi", nargs="+", default=[], help="sweep, warmstart, remedies: run φ JSONs")
    me.add_argument("--out", required=True, help="CSV to write")
    me.set_defaults(func=cmd_measure)

    di = _stage(sub, "directions")
    di.add_argument("--runs", nargs="+", required=True, help="run files")
    di.add_argument("--phi", nargs="+", required=True, help="each run's full-space φ JSON")
    di.add_argument("--count", type=int, default=100, help="directions per run")
    di.add_argument("--seed", type=int, default=0, help="seed of the directions")
    di.add_argument("--out", required=True, help="CSV to write")
    di.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    di.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    di.set_defaults(func=cmd_directions)

    fg = _stage(sub, "figure")
    fg.add_argument(
        "kind",
        help="parametric (Figs. 3, 7; landscape .h5); curves (Fig. 2), perfmodel (App. C) or "
        "directions, trajectory (Fig. 6), sweep (Fig. 4), warmstart (Fig. 5), remedies "
        "(App. E) (the CSVs of "
        "`measure`, `directions`, `trajectory`)",
    )
    fg.add_argument("input", help="input file (landscape .h5, or the CSV of `measure`)")
    fg.add_argument("--out", required=True, help="output path; .png and .pdf are written")
    _style_options(fg)
    fg.set_defaults(func=cmd_figure)

    se = _stage(sub, "sensitivity")
    se.add_argument("sharpness", nargs="+", help="sharpness JSON files of one network")
    se.add_argument("--out-dir", required=True, help="folder for sensitivity.{csv,md,png,pdf}")
    _style_options(se)
    se.set_defaults(func=cmd_sensitivity)

    tb = _stage(sub, "tables")
    tb.add_argument("--runs", nargs="*", default=[], help="run files (Table 2)")
    tb.add_argument("--sharpness", nargs="*", default=[], help="sharpness JSON (Tables 3, 4)")
    tb.add_argument("--out-dir", required=True, help="folder for tableN.csv and tableN.md")
    tb.set_defaults(func=cmd_tables)
    return p


def _os_error(e: OSError, out: str | None) -> str:
    """One line for a failed read or write: what, where, and what to do."""
    what = os.strerror(e.errno) if e.errno else str(e)  # h5py's strerror is a page long
    where = e.filename or out
    where = f" ({where})" if where else ""
    if e.errno == errno.ENOSPC:
        fix = "free space there and run the same command again: finished work is resumed"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make it writable or choose another output"
    else:
        fix = "check the path and the disk, then run the same command again"
    return f"{what}{where}: {fix}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from .atomic import check_writable

        if getattr(args, "out", None):
            check_writable(args.out)
        if getattr(args, "out_dir", None):
            check_writable(args.out_dir, folder=True)
        args.func(args)
    except (UserError, OSError) as e:  # OSError: a full disk, a read-only mount, …
        out = getattr(args, "out", None) or getattr(args, "out_dir", None)
        message = str(e) if isinstance(e, UserError) else _os_error(e, out)
        message = " ".join(message.split())  # one line, whatever a library put in the text
        print(f"sharpminima {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sharpminima {args.command}: interrupted; run it again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
