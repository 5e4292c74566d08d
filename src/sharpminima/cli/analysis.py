"""The subcommands that read finished results: measurements, figures, the sensitivity report,
the panel and its matched-loss comparison, and the paper's tables."""

from __future__ import annotations

import argparse
import os

from ..errors import UserError
from ..registry import FIGURES, MEASURES
from .common import add_settings, apply_threads, listing, log, runs_on, settings_from, write_csv


def cmd_measure(args: argparse.Namespace) -> None:
    from ..analysis import experiments
    from ..atomic import atomic_path

    needs = MEASURES[args.what].options
    missing = [f"--{name}" for name in needs if not getattr(args, name)]
    if missing:
        raise UserError(f"measure {args.what} needs {' and '.join(missing)}")
    if args.what == "curves":
        table = experiments.accuracy_curves(args.sb + args.lb)
    else:
        table = getattr(experiments, args.what)(*(getattr(args, name) for name in needs))
    write_csv(table, args.out)
    md = os.path.splitext(args.out)[0] + ".md"
    with atomic_path(md) as tmp:
        tmp.write_text(experiments.markdown(table, args.what))
    log(f"wrote {md}")


def _measure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        choices=MEASURES,
        metavar="WHAT",
        help=listing(MEASURES, lambda m: f"{m.about}, with --{' --'.join(m.options)}")
        + "; each also writes OUT.md, the table in Markdown",
    )
    p.add_argument("--sb", nargs="+", default=[], help="small-batch runs (warmstart: the source)")
    p.add_argument("--lb", nargs="+", default=[], help="large-batch runs (warmstart: warm runs)")
    p.add_argument("--runs", nargs="+", default=[], help="sweep, remedies: the runs")
    p.add_argument("--phi", nargs="+", default=[], help="sweep, warmstart, remedies: run φ JSONs")
    p.add_argument("--out", required=True, help="CSV to write")


def cmd_figure(args: argparse.Namespace) -> None:
    from ..analysis import figures

    draw = getattr(figures, FIGURES[args.kind].function)
    for path in draw(args.input, args.out, settings_from(figures.Style, args)):
        log(f"wrote {path}")


def _style_options(p: argparse.ArgumentParser) -> None:
    """Figure style: the config's `figures` section."""
    from ..analysis.figures import Style

    add_settings(p, Style)


def _figure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=FIGURES, metavar="KIND", help=listing(FIGURES))
    p.add_argument("input", help="input file (a .h5 or CSV, as KIND says)")
    p.add_argument("--out", required=True, help="output path; .png and .pdf are written")
    _style_options(p)


def cmd_sensitivity(args: argparse.Namespace) -> None:
    from ..analysis.figures import Style
    from ..analysis.sensitivity import report

    for path in report(args.sharpness, args.out_dir, settings_from(Style, args)):
        log(f"wrote {path}")


def _sensitivity_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("sharpness", nargs="+", help="sharpness JSON files of one network")
    p.add_argument("--out-dir", required=True, help="folder for sensitivity.{csv,md,png,pdf}")
    _style_options(p)


def cmd_panel(args: argparse.Namespace) -> None:
    from ..analysis.panel import write_panel

    written = write_panel(
        args.runs, args.results, args.density, args.matched, args.out_dir, args.sb, args.lb,
        args.bootstrap, args.seed,
    )  # fmt: skip
    for path in written:
        log(f"wrote {path}")


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


def cmd_matched(args: argparse.Namespace) -> None:
    from ..analysis.matched import matched, read_settings
    from ..workdir import finish

    apply_threads(args)
    table = matched(args.sb, args.lb, read_settings(args.settings), args.levels, args.out,
                    args.device, log)  # fmt: skip
    write_csv(table, args.out)
    finish(args.out)


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
    runs_on(p)


def cmd_tables(args: argparse.Namespace) -> None:
    import pandas as pd

    from ..analysis.tables import run_cells, sharpness_cells, write_tables

    cells = pd.concat([run_cells(args.runs), sharpness_cells(args.sharpness)], ignore_index=True)
    for path in write_tables(cells, args.out_dir):
        log(f"wrote {path}")


def _tables_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="*", default=[], help="run files (Table 2)")
    p.add_argument("--sharpness", nargs="*", default=[], help="sharpness JSON (Tables 3, 4)")
    p.add_argument("--out-dir", required=True, help="folder for tableN.csv and tableN.md")


COMMANDS = {
    "measure": (_measure_options, cmd_measure),
    "figure": (_figure_options, cmd_figure),
    "sensitivity": (_sensitivity_options, cmd_sensitivity),
    "matched": (_matched_options, cmd_matched),
    "panel": (_panel_options, cmd_panel),
    "tables": (_tables_options, cmd_tables),
}
