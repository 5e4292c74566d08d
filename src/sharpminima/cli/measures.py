"""The subcommands that measure stored iterates: φ (Metric 2.1), the panel's curvature and
adaptive measures, loss surfaces, the trajectory, the SB-LB landscape and random directions."""

from __future__ import annotations

import argparse

from ..errors import UserError
from .common import add_settings, apply_threads, log, runs_on, settings_from, write_csv, write_json


def cmd_sharpness(args: argparse.Namespace) -> None:
    from ..measures.sharpness import SharpnessConfig, run_sharpness

    cfg = settings_from(SharpnessConfig, args)
    which = args.epoch if args.epoch is not None else "final"
    result = run_sharpness(args.run, cfg, which, args.data, args.device, args.cache_mb, log)
    if "undefined" not in result:
        log(f"phi {result['phi']:.6g} (f(x) {result['f_x']:.6g}, max f {result['f_max']:.6g}; "
            f"nit {result['nit']}, nfev {result['nfev']}, {result['seconds']:.1f}s)")  # fmt: skip
    write_json(result, args.out)


def _sharpness_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    from ..measures.sharpness import SharpnessConfig

    add_settings(p, SharpnessConfig, skip)
    p.add_argument("--cache-mb", type=float, default=2048, help="memory for A (else regenerated)")
    runs_on(p)


def _sharpness_stage_options(p: argparse.ArgumentParser) -> None:
    _measured_iterate(p)
    _sharpness_options(p)


def _measured_iterate(p: argparse.ArgumentParser) -> None:
    """The run, iterate and output of a measure of one stored iterate."""
    p.add_argument("run", help="run file from `sharpminima train`")
    p.add_argument("--out", required=True, help="result file to write (.json)")
    p.add_argument("--epoch", type=int, default=None, help="a stored epoch (default: final)")
    p.add_argument("--data", default=None, help="dataset file (default: the run's)")


def cmd_measure_iterate(args: argparse.Namespace) -> None:
    """`sharpminima curvature|adaptive WHAT RUN`: the module of that name measures one iterate."""
    from importlib import import_module

    from ..store import measure_iterate

    module = import_module(f"..measures.{args.command}", __package__)
    cfg = settings_from(module.MEASURES[args.what][0], args)
    cfg.check()  # before the run is read: bad settings are one line and no work
    which = args.epoch if args.epoch is not None else "final"
    compute = getattr(module, args.command)  # curvature.curvature, adaptive.adaptive

    def measure(model, data):
        return compute(model, data, cfg, log=log)

    result = measure_iterate(
        args.run, which, measure, cfg, args.data, args.device, log, {"measure": args.what}
    )
    if "undefined" not in result:
        log(f"{args.command} {args.what}: {result['evaluations']} evaluations of f (or its "
            f"Hessian-vector products), {result['seconds']:.1f}s")  # fmt: skip
    write_json(result, args.out)


def _measures(p: argparse.ArgumentParser, measures: dict[str, tuple]) -> None:
    """One sub-command per measure, each with the options of its settings."""
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    for name, (cls, _) in measures.items():
        m = sub.add_parser(name, help=cls.__doc__)
        _measured_iterate(m)
        add_settings(m, cls)
        runs_on(m)


def _curvature_options(p: argparse.ArgumentParser) -> None:
    from ..measures.curvature import MEASURES

    _measures(p, MEASURES)


def _adaptive_options(p: argparse.ArgumentParser) -> None:
    from ..measures.adaptive import MEASURES

    _measures(p, MEASURES)


def cmd_surface(args: argparse.Namespace) -> None:
    from ..measures.surface import SurfaceConfig, merge, surface

    if args.action == "merge":
        merge(args.parts, args.out)
    else:
        cfg = settings_from(SurfaceConfig, args)
        which = args.epoch if args.epoch is not None else "final"
        surface(args.run, args.out, cfg, args.part, args.parts, which, args.device, log)
    log(f"wrote {args.out}")


def _surface_options(p: argparse.ArgumentParser) -> None:
    from ..measures.surface import SurfaceConfig

    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    compute = actions.add_parser("compute", help="compute a surface (or one part of its grid)")
    compute.add_argument("run", help="run file from `sharpminima train`")
    compute.add_argument("--out", required=True, help="surface file to write (.h5)")
    compute.add_argument("--epoch", type=int, default=None, help="a stored epoch (default: final)")
    compute.add_argument("--part", type=int, default=0, help="this job's part (0-based)")
    compute.add_argument("--parts", type=int, default=1, help="parts the grid is split into")
    add_settings(compute, SurfaceConfig)
    runs_on(compute)
    merged = actions.add_parser("merge", help="join the parts of one surface")
    merged.add_argument("parts", nargs="+", help="every part file of one surface")
    merged.add_argument("--out", required=True, help="surface file to write (.h5)")


def cmd_trajectory(args: argparse.Namespace) -> None:
    from ..measures.sharpness import SharpnessConfig
    from ..measures.trajectory import trajectory
    from ..workdir import finish

    cfg = settings_from(SharpnessConfig, args, bn="batch")  # each point sets its own mode
    table = trajectory(
        args.runs, args.bn, cfg, args.every, args.out, args.device, args.cache_mb, log
    )
    write_csv(table, args.out)
    finish(args.out)


def _trajectory_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, help="run files (one trial's SB and LB)")
    p.add_argument("--bn", nargs="+", default=["batch"], help="BatchNorm modes: batch running")
    p.add_argument("--every", type=int, default=1, help="every k-th stored epoch (and the last)")
    p.add_argument("--out", required=True, help="CSV to write")
    _sharpness_options(p, skip=("bn",))


def cmd_landscape(args: argparse.Namespace) -> None:
    from ..measures.landscape import LandscapeConfig, landscape

    cfg = settings_from(LandscapeConfig, args)
    landscape(args.sb, args.lb, args.out, cfg, args.device, log, args.other_starts)
    log(f"wrote {args.out}")


def _landscape_options(p: argparse.ArgumentParser) -> None:
    from ..measures.landscape import LandscapeConfig

    p.add_argument("--sb", required=True, help="SB run file of one trial")
    p.add_argument("--lb", required=True, help="LB run file of the same trial")
    p.add_argument("--out", required=True, help="landscape file to write (.h5)")
    add_settings(p, LandscapeConfig)
    p.add_argument(
        "--other-starts", action="store_true", help="allow runs that start from different x0"
    )
    runs_on(p)


def cmd_directions(args: argparse.Namespace) -> None:
    import pandas as pd

    from ..measures.directions import random_directions

    if len(args.runs) != len(args.phi):
        raise UserError(f"{len(args.runs)} runs but {len(args.phi)} --phi files: one per run")
    apply_threads(args)
    tables = [
        random_directions(run, phi, args.count, args.seed, args.device, log)
        for run, phi in zip(args.runs, args.phi, strict=True)
    ]
    write_csv(pd.concat(tables, ignore_index=True), args.out)


def _directions_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, help="run files")
    p.add_argument("--phi", nargs="+", required=True, help="each run's full-space φ JSON")
    p.add_argument("--count", type=int, default=100, help="directions per run")
    p.add_argument("--seed", type=int, default=0, help="seed of the directions")
    p.add_argument("--out", required=True, help="CSV to write")
    runs_on(p)


COMMANDS = {
    "sharpness": (_sharpness_stage_options, cmd_sharpness),
    "curvature": (_curvature_options, cmd_measure_iterate),
    "adaptive": (_adaptive_options, cmd_measure_iterate),
    "surface": (_surface_options, cmd_surface),
    "trajectory": (_trajectory_options, cmd_trajectory),
    "landscape": (_landscape_options, cmd_landscape),
    "directions": (_directions_options, cmd_directions),
}
