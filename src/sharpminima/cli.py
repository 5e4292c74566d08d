"""The `sharpminima` command: one subcommand per workflow stage.

Bad input ends in one line on stderr naming the problem and the fix, exit status 2, and no
traceback; nothing is written at the output path.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import errno
import os
import sys
import typing
from collections.abc import Callable
from datetime import datetime

from . import __version__
from .cpus import usable_cpus
from .errors import UserError
from .registry import FIGURES, MEASURES, STAGES

# Before torch loads OpenMP (torch is imported by the stages that compute, never here: drawing a
# figure or a table does without its seconds of start-up): spin briefly, then sleep. With the
# default spin (300,000) several jobs sharing too few cores (snakemake --cores 8 on a 2-core
# laptop) ran F1 SB epochs 5-7x slower than their fair share; with 1,000 a lone job is as fast
# as before. See docs/training.md.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")


def _keep_freed_memory() -> None:
    """glibc hands every freed block over 32 MB back to the kernel, so each step of C1 at batch
    5,500 faulted gigabytes of fresh pages in again: about half its CPU time was spent in the
    kernel. Keep freed memory in the heap instead (C1 1.5x as fast to train, 2.3x to evaluate,
    measured in docs/performance.md; no result changes, the peak resident memory grows about a
    third). Setting MALLOC_MMAP_MAX_ in the environment keeps glibc's own behaviour."""
    if sys.platform != "linux" or "MALLOC_MMAP_MAX_" in os.environ:
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4  # glibc's malloc.h
        mallopt(m_mmap_max, 0)
        mallopt(m_trim_threshold, 2**31 - 1)
        mallopt(m_top_pad, 1 << 30)


def _log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--input-shape must be comma-separated integers, got {text!r}") from None


def _threads(args: argparse.Namespace) -> None:
    """PyTorch's threads: --threads, but never more than the CPUs this process may use (its
    affinity mask, cgroup quota: a SLURM allocation), where more would only slow it down."""
    if getattr(args, "threads", 0) < 0:
        raise UserError(f"--threads is {args.threads}: give 0 (PyTorch's default) or more")
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(min(args.threads, usable_cpus()))


def _write_csv(table, out: str) -> None:
    from .atomic import atomic_path

    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    _log(f"wrote {out}")


def _kinds(cls) -> dict[str, type]:
    """Each field's type, `X | None` read as X."""
    hints = typing.get_type_hints(cls)
    none = type(None)
    return {n: next((t for t in typing.get_args(h) if t is not none), h) for n, h in hints.items()}


def _settings(cls, args: argparse.Namespace, **overrides):
    """A settings dataclass from the options of the same names; --threads applied on the way."""
    _threads(args)
    kinds = _kinds(cls)
    given = {k: bool(v) if kinds[k] is bool else v for k, v in vars(args).items() if k in kinds}
    return cls(**given | overrides)


def cmd_prepare(args: argparse.Namespace) -> None:
    from . import data

    if args.source == "mnist":
        data.prepare_mnist(args.root, args.out, download=not args.no_download)
    elif args.source == "fashion-mnist":
        from .fashion import prepare_fashion_mnist

        prepare_fashion_mnist(
            args.root, args.out, args.folder, args.transform, download=not args.no_download
        )
    elif args.source in data.CIFAR:
        data.prepare_cifar(args.source, args.root, args.out, download=not args.no_download)
    elif args.source == "timit-kaldi":
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
            cmvn=args.cmvn,
            classes=args.classes,
            allow_pipes=args.allow_pipes,
            kaldi_root=args.kaldi_root,
            log=_log,
        )
    elif args.source == "timit-raw":
        from .timit import prepare_timit_raw

        corpus = args.corpus or os.path.join(args.root, "TIMIT")
        prepare_timit_raw(args.out, corpus, args.phones, args.context, args.cmvn, log=_log)
    else:
        data.make_synthetic(
            args.out,
            args.n_train,
            args.n_test,
            _shape(args.input_shape),
            args.classes,
            seed=args.seed,
            noise=args.noise,
        )
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
    from .sharpness import SharpnessConfig, run_sharpness

    cfg = _settings(SharpnessConfig, args)
    which = args.epoch if args.epoch is not None else "final"
    result = run_sharpness(args.run, cfg, which, args.data, args.device, args.cache_mb, _log)
    if "undefined" not in result:
        _log(f"phi {result['phi']:.6g} (f(x) {result['f_x']:.6g}, max f {result['f_max']:.6g}; "
             f"nit {result['nit']}, nfev {result['nfev']}, {result['seconds']:.1f}s)")  # fmt: skip
    _write_json(result, args.out)


def _write_json(result: dict, out: str) -> None:
    from .atomic import atomic_path, json_text

    with atomic_path(out) as tmp:
        tmp.write_text(json_text(result))
    _log(f"wrote {out}")


def cmd_measure_iterate(args: argparse.Namespace) -> None:
    """`sharpminima curvature|adaptive WHAT RUN`: the module of that name measures one iterate."""
    from importlib import import_module

    from .store import measure_iterate

    module = import_module(f"{__package__}.{args.command}")
    cfg = _settings(module.MEASURES[args.what][0], args)
    cfg.check()  # before the run is read: bad settings are one line and no work
    which = args.epoch if args.epoch is not None else "final"
    compute = getattr(module, args.command)  # curvature.curvature, adaptive.adaptive

    def measure(model, data):
        return compute(model, data, cfg, log=_log)

    result = measure_iterate(
        args.run, which, measure, cfg, args.data, args.device, _log, {"measure": args.what}
    )
    if "undefined" not in result:
        _log(f"{args.command} {args.what}: {result['evaluations']} evaluations of f (or its "
             f"Hessian-vector products), {result['seconds']:.1f}s")  # fmt: skip
    _write_json(result, args.out)


def cmd_surface(args: argparse.Namespace) -> None:
    from .surface import SurfaceConfig, merge, surface

    if args.action == "merge":
        merge(args.parts, args.out)
    else:
        cfg = _settings(SurfaceConfig, args)
        which = args.epoch if args.epoch is not None else "final"
        surface(args.run, args.out, cfg, args.part, args.parts, which, args.device, _log)
    _log(f"wrote {args.out}")


def cmd_trajectory(args: argparse.Namespace) -> None:
    from .sharpness import SharpnessConfig
    from .trajectory import trajectory
    from .workdir import finish

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

    cfg = _settings(LandscapeConfig, args)
    landscape(args.sb, args.lb, args.out, cfg, args.device, _log, args.other_starts)
    _log(f"wrote {args.out}")


def cmd_figure(args: argparse.Namespace) -> None:
    from . import figures

    draw = getattr(figures, FIGURES[args.kind].function)
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

    needs = MEASURES[args.what].options
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


def cmd_panel(args: argparse.Namespace) -> None:
    from .panel import write_panel

    written = write_panel(
        args.runs, args.results, args.density, args.matched, args.out_dir, args.sb, args.lb,
        args.bootstrap, args.seed,
    )  # fmt: skip
    for path in written:
        _log(f"wrote {path}")


def cmd_matched(args: argparse.Namespace) -> None:
    from .matched import matched, read_settings
    from .workdir import finish

    _threads(args)
    table = matched(args.sb, args.lb, read_settings(args.settings), args.levels, args.out,
                    args.device, _log)  # fmt: skip
    _write_csv(table, args.out)
    finish(args.out)


def cmd_sensitivity(args: argparse.Namespace) -> None:
    from .figures import Style
    from .sensitivity import report

    for path in report(args.sharpness, args.out_dir, _settings(Style, args)):
        _log(f"wrote {path}")


def _add_settings(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One option per field of a settings dataclass: its name, type, default and help."""
    kinds = _kinds(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, kind, help = "--" + f.name.replace("_", "-"), kinds[f.name], f.metadata["help"]
        if f.default is dataclasses.MISSING:
            p.add_argument(flag, type=kind, required=True, help=help)
        elif kind is bool and not f.default:
            p.add_argument(flag, action="store_true", help=help)
        elif kind is bool:
            p.add_argument(flag, type=int, choices=(0, 1), default=1, help=f"{help}: 1 or 0")
        else:
            shown = "" if f.default is None else f" (default {f.default})"
            p.add_argument(flag, type=kind, default=f.default, help=help + shown)


def _runs_on(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")


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


def _train_options(p: argparse.ArgumentParser) -> None:
    from .training import TrainConfig

    p.add_argument("--data", required=True, help="dataset file from `sharpminima prepare`")
    p.add_argument("--out", required=True, help="run file to write (.h5)")
    _add_settings(p, TrainConfig)
    p.add_argument("--warm-run", default=None, help="start from an iterate of this run file")
    p.add_argument("--warm-epoch", type=int, default=None, help="... at this epoch (0: its x0)")
    p.add_argument("--label", default="", help="regime name for tables, e.g. SB or LB")
    _runs_on(p)


def _sharpness_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    from .sharpness import SharpnessConfig

    _add_settings(p, SharpnessConfig, skip)
    p.add_argument("--cache-mb", type=float, default=2048, help="memory for A (else regenerated)")
    _runs_on(p)


def _sharpness_stage_options(p: argparse.ArgumentParser) -> None:
    _measured_iterate(p)
    _sharpness_options(p)


def _measured_iterate(p: argparse.ArgumentParser) -> None:
    """The run, iterate and output of a measure of one stored iterate."""
    p.add_argument("run", help="run file from `sharpminima train`")
    p.add_argument("--out", required=True, help="result file to write (.json)")
    p.add_argument("--epoch", type=int, default=None, help="a stored epoch (default: final)")
    p.add_argument("--data", default=None, help="dataset file (default: the run's)")


def _measures(p: argparse.ArgumentParser, measures: dict[str, tuple]) -> None:
    """One sub-command per measure, each with the options of its settings."""
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    for name, (cls, _) in measures.items():
        m = sub.add_parser(name, help=cls.__doc__)
        _measured_iterate(m)
        _add_settings(m, cls)
        _runs_on(m)


def _curvature_options(p: argparse.ArgumentParser) -> None:
    from .curvature import MEASURES

    _measures(p, MEASURES)


def _adaptive_options(p: argparse.ArgumentParser) -> None:
    from .adaptive import MEASURES

    _measures(p, MEASURES)


def _surface_options(p: argparse.ArgumentParser) -> None:
    from .surface import SurfaceConfig

    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    compute = actions.add_parser("compute", help="compute a surface (or one part of its grid)")
    compute.add_argument("run", help="run file from `sharpminima train`")
    compute.add_argument("--out", required=True, help="surface file to write (.h5)")
    compute.add_argument("--epoch", type=int, default=None, help="a stored epoch (default: final)")
    compute.add_argument("--part", type=int, default=0, help="this job's part (0-based)")
    compute.add_argument("--parts", type=int, default=1, help="parts the grid is split into")
    _add_settings(compute, SurfaceConfig)
    _runs_on(compute)
    merged = actions.add_parser("merge", help="join the parts of one surface")
    merged.add_argument("parts", nargs="+", help="every part file of one surface")
    merged.add_argument("--out", required=True, help="surface file to write (.h5)")


def _trajectory_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, help="run files (one trial's SB and LB)")
    p.add_argument("--bn", nargs="+", default=["batch"], help="BatchNorm modes: batch running")
    p.add_argument("--every", type=int, default=1, help="every k-th stored epoch (and the last)")
    p.add_argument("--out", required=True, help="CSV to write")
    _sharpness_options(p, skip=("bn",))


def _landscape_options(p: argparse.ArgumentParser) -> None:
    from .landscape import LandscapeConfig

    p.add_argument("--sb", required=True, help="SB run file of one trial")
    p.add_argument("--lb", required=True, help="LB run file of the same trial")
    p.add_argument("--out", required=True, help="landscape file to write (.h5)")
    _add_settings(p, LandscapeConfig)
    p.add_argument(
        "--other-starts", action="store_true", help="allow runs that start from different x0"
    )
    _runs_on(p)


def _measure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        choices=MEASURES,
        metavar="WHAT",
        help=_listing(MEASURES, lambda m: f"{m.about}, with --{' --'.join(m.options)}")
        + "; each also writes OUT.md, the table in Markdown",
    )
    p.add_argument("--sb", nargs="+", default=[], help="small-batch runs (warmstart: the source)")
    p.add_argument("--lb", nargs="+", default=[], help="large-batch runs (warmstart: warm runs)")
    p.add_argument("--runs", nargs="+", default=[], help="sweep, remedies: the runs")
    p.add_argument("--phi", nargs="+", default=[], help="sweep, warmstart, remedies: run φ JSONs")
    p.add_argument("--out", required=True, help="CSV to write")


def _directions_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, help="run files")
    p.add_argument("--phi", nargs="+", required=True, help="each run's full-space φ JSON")
    p.add_argument("--count", type=int, default=100, help="directions per run")
    p.add_argument("--seed", type=int, default=0, help="seed of the directions")
    p.add_argument("--out", required=True, help="CSV to write")
    _runs_on(p)


def _style_options(p: argparse.ArgumentParser) -> None:
    """Figure style: the config's `figures` section."""
    from .figures import Style

    _add_settings(p, Style)


def _listing(entries: dict, detail: Callable = lambda entry: entry.about) -> str:
    """`name (detail); ...` of a registry table: a --help listing what the command accepts."""
    return "; ".join(f"{name} ({detail(entry)})" for name, entry in entries.items())


def _figure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=FIGURES, metavar="KIND", help=_listing(FIGURES))
    p.add_argument("input", help="input file (a .h5 or CSV, as KIND says)")
    p.add_argument("--out", required=True, help="output path; .png and .pdf are written")
    _style_options(p)


def _sensitivity_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("sharpness", nargs="+", help="sharpness JSON files of one network")
    p.add_argument("--out-dir", required=True, help="folder for sensitivity.{csv,md,png,pdf}")
    _style_options(p)


def _panel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, help="run files: the population")
    p.add_argument(
        "--results",
        nargs="+",
        required=True,
        help="per run: its full-space φ JSON and its curvature/adaptive JSONs",
    )
    p.add_argument("--density", nargs="*", default=[], help="curvature density JSONs to draw")
    p.add_argument("--matched", nargs="*", default=[], help="CSVs of `sharpminima matched`")
    p.add_argument("--sb", default="SB", help="small-batch regime of the sign test (SB)")
    p.add_argument("--lb", default="LB", help="large-batch regime of the sign test (LB)")
    p.add_argument("--bootstrap", type=int, default=2000, help="resamples for τ's interval")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--out-dir", required=True, help="folder for panel, verdict and density files")


def _matched_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sb", required=True, help="SB run file of one trial")
    p.add_argument("--lb", required=True, help="LB run file of the same trial")
    p.add_argument(
        "--settings",
        required=True,
        help='JSON: measure -> its settings, e.g. \'{"phi": {"eps": 0.001}, "trace": {}}\' '
        "(measures: phi and the panel's; options of `sharpness`, `curvature`, `adaptive`)",
    )
    p.add_argument(
        "--levels", nargs="+", type=float, default=[0.1, 0.01, 0.001], help="training losses"
    )
    p.add_argument("--out", required=True, help="CSV to write")
    _runs_on(p)


def _tables_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="*", default=[], help="run files (Table 2)")
    p.add_argument("--sharpness", nargs="*", default=[], help="sharpness JSON (Tables 3, 4)")
    p.add_argument("--out-dir", required=True, help="folder for tableN.csv and tableN.md")


# Stage -> (what adds its options, what runs it). Options are built for the chosen stage only:
# building them imports that stage's module, and a job must import no other stage's.
COMMANDS = {
    "prepare": (_prepare_options, cmd_prepare),
    "train": (_train_options, cmd_train),
    "sharpness": (_sharpness_stage_options, cmd_sharpness),
    "curvature": (_curvature_options, cmd_measure_iterate),
    "adaptive": (_adaptive_options, cmd_measure_iterate),
    "surface": (_surface_options, cmd_surface),
    "trajectory": (_trajectory_options, cmd_trajectory),
    "landscape": (_landscape_options, cmd_landscape),
    "directions": (_directions_options, cmd_directions),
    "measure": (_measure_options, cmd_measure),
    "figure": (_figure_options, cmd_figure),
    "sensitivity": (_sensitivity_options, cmd_sensitivity),
    "matched": (_matched_options, cmd_matched),
    "panel": (_panel_options, cmd_panel),
    "tables": (_tables_options, cmd_tables),
}


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line, like every other error: the problem, and where help is."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line, with the options of `command` (None: of every stage)."""
    p = _Parser(prog="sharpminima", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, stage in STAGES.items():
        options, run = COMMANDS[name]
        stage_parser = sub.add_parser(name, help=stage.help)
        if command in (name, None):
            options(stage_parser)
        stage_parser.set_defaults(func=run)
    models = sub.add_parser("models", help="list the six networks and their parameter counts")
    models.set_defaults(func=cmd_models)
    return p


RESUMES = {"train", "trajectory", "landscape", "surface", "matched"}  # keep finished work


def _os_error(e: OSError, out: str | None, command: str) -> str:
    """One line for a failed read or write: what, where, and what to do."""
    what = os.strerror(e.errno) if e.errno else str(e)  # h5py's strerror is a page long
    where = e.filename or out
    where = f" ({where})" if where else ""
    if e.errno == errno.ENOSPC:
        fix = "free space there and run the same command again"
        fix += ": finished work is resumed" if command in RESUMES else ""
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make it writable or choose another output"
    else:
        fix = "check the path and the disk, then run the same command again"
    return f"{what}{where}: {fix}"


def _refuse_out_over_input(args: argparse.Namespace) -> None:
    """`--out` naming one of the command's own input files (the same path, a symlink or a hard
    link to it) is refused before any work: writing the result would replace its source."""
    out = getattr(args, "out", None)
    if not out or not os.path.isfile(out):
        return
    inputs = {k: v for k, v in vars(args).items() if k != "out"}
    for key, value in inputs.items():
        for given in value if isinstance(value, list) else [value]:
            if isinstance(given, (str, os.PathLike)) and os.path.isfile(given):
                if os.path.samefile(given, out):
                    raise UserError(
                        f"--out {out} is the same file as the input {key} ({given}): writing it "
                        "would replace what the result is computed from; choose another --out"
                    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser(argv[0] if argv else None).parse_args(argv)
    _keep_freed_memory()
    try:
        from .atomic import check_writable

        if getattr(args, "out", None):
            _refuse_out_over_input(args)
            check_writable(args.out)
        if getattr(args, "out_dir", None):
            check_writable(args.out_dir, folder=True)
        args.func(args)
    except (UserError, OSError) as e:  # OSError: a full disk, a read-only mount, …
        out = getattr(args, "out", None) or getattr(args, "out_dir", None)
        message = str(e) if isinstance(e, UserError) else _os_error(e, out, args.command)
        message = " ".join(message.split())  # one line, whatever a library put in the text
        print(f"sharpminima {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sharpminima {args.command}: interrupted; run it again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
