"""Every stage of the workflow in one place, and the code each one runs.

The command line (`cli/`) builds its subcommands from STAGES and the rules in workflow/rules/
take their code inputs from `code_files`, so the two cannot drift apart. This module imports only
the standard library: Snakemake reads it while building the DAG, before any job (or torch) runs.

A job's code inputs are the library files its stage runs, found by following the package's
relative imports statically from the stage's modules, across its subpackages (and the
`__init__.py` of every package on the way, which Python runs too), plus the package data those
modules name. The command line, cpus.py and this module are never among them: they parse
arguments, cap --threads and pick what runs, and the rules pass every option explicitly, so
adding a stage or an option reruns nothing that exists.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Stage:
    """A `sharpminima` subcommand that a rule runs: the library modules it calls into and the
    config section that holds its settings (None: it has none of its own)."""

    modules: tuple[str, ...]
    section: str | None
    help: str


STAGES = {
    "prepare": Stage(
        ("data.dataset",), "datasets", "turn a dataset source into the dataset HDF5 format"
    ),
    "train": Stage(
        ("train.trainer",), "training", "train one run (network, batch, seed) into HDF5"
    ),
    "sharpness": Stage(
        ("measures.sharpness",), "sharpness", "Metric 2.1 of a stored iterate (L-BFGS-B)"
    ),
    # (+ store: the command measures a stored iterate with store.measure_iterate)
    "curvature": Stage(
        ("measures.curvature", "store"),
        "curvature",
        "Hessian eigenvalues, trace or spectral density",
    ),
    "adaptive": Stage(
        ("measures.adaptive", "store"),
        "adaptive",
        "scale-invariant (adaptive) sharpness of an iterate",
    ),
    "trajectory": Stage(
        ("measures.trajectory",), "trajectory", "φ of stored iterates along runs (Figure 6), as CSV"
    ),
    "landscape": Stage(
        ("measures.landscape",), "landscape", "loss and accuracy along a curve from SB to LB"
    ),
    "surface": Stage(
        ("measures.surface",),
        "surface",
        "filter-normalised 1-D or 2-D loss surface around an iterate",
    ),
    "directions": Stage(
        ("measures.directions",),
        "directions",
        "f along random unit directions at φ's radius, as CSV",
    ),
    "measure": Stage(("analysis.experiments",), None, "numbers read off finished runs, as CSV"),
    "figure": Stage(
        ("analysis.figures",), "figures", "draw a figure (PNG and PDF) from computed results"
    ),
    "sensitivity": Stage(
        ("analysis.sensitivity",),
        "sensitivity",
        "φ by BatchNorm mode x start x ε: table and figure",
    ),
    "matched": Stage(
        ("analysis.matched",), "panel", "SB vs LB at matched training loss, and f over all images"
    ),
    "panel": Stage(
        ("analysis.panel",), "panel", "every measure of every run, SB/LB sign test, τ with the gap"
    ),
    "tables": Stage(
        ("analysis.tables",), None, "Tables 2-4: mean ± std over trials beside the paper"
    ),
}

# Dataset source -> the modules that convert it (with `data.dataset`, which writes every dataset).
SOURCES = {
    "mnist": (),
    "fashion-mnist": ("data.fashion",),
    "cifar10": (),
    "cifar100": (),
    "timit-kaldi": ("data.kaldi",),
    "timit-raw": ("data.timit",),
    "synthetic": (),
}


# `sharpminima measure WHAT`: the options each measurement reads, and what it is (its --help).
@dataclass(frozen=True)
class Measurement:
    options: tuple[str, ...]
    about: str


MEASURES = {
    "curves": Measurement(("sb", "lb"), "Figure 2: accuracy per epoch"),
    "distances": Measurement(("sb", "lb"), "distances from x0"),
    "iterations": Measurement(("sb", "lb"), "Appendix C's performance model"),
    "sweep": Measurement(("runs", "phi"), "Figure 4: accuracy and φ by batch size"),
    "warmstart": Measurement(("sb", "lb", "phi"), "Figure 5: warm starts from SB iterates"),
    "remedies": Measurement(("runs", "phi"), "Table 6: Appendix E's remedies"),
}


# `sharpminima figure KIND`: the function of analysis/figures.py that draws it, and from what
# (--help).
@dataclass(frozen=True)
class Figure:
    function: str
    about: str


FIGURES = {
    "parametric": Figure("parametric", "Figures 3 and 7, from a landscape .h5"),
    "curves": Figure("accuracy_curves", "Figure 2, from measure curves"),
    "perfmodel": Figure("performance_model", "Appendix C, from measure iterations"),
    "directions": Figure("direction_rises", "rises along random directions, from directions"),
    "trajectory": Figure("trajectory_sharpness", "Figure 6, from trajectory"),
    "sweep": Figure("batch_sweep", "Figure 4, from measure sweep"),
    "warmstart": Figure("warm_start", "Figure 5, from measure warmstart"),
    "remedies": Figure("remedy_bars", "Appendix E, from measure remedies"),
    "panel": Figure("panel_scatter", "each measure against the gap, from panel's panel.csv"),
    "density": Figure("spectral_density", "spectral densities, from panel's density.csv"),
    "surface": Figure("loss_surface", "a loss surface, from a surface .h5"),
    "methods": Figure("method_bars", "the training methods, from panel's methods.csv"),
}


# The workflow's experiment switches (config `experiments:`): each writes
# experiments/{network}/{csv}.csv and, where it has one, figures/{network}/{figure}.png, which
# `sharpminima figure {kind}` draws from that CSV.
@dataclass(frozen=True)
class Experiment:
    csv: str | None  # None: its outputs are not a CSV (targets.smk names them)
    figure: str | None = None
    kind: str | None = None
    more: tuple[Experiment, ...] = ()  # further CSVs (and figures) the same job writes

    def parts(self) -> tuple[Experiment, ...]:
        return (self, *self.more)


EXPERIMENTS = {
    "curves": Experiment("curves", "accuracy", "curves"),
    "distances": Experiment("distances"),
    "performance_model": Experiment("iterations", "perfmodel", "perfmodel"),
    "directions": Experiment("directions", "directions", "directions"),
    "trajectory": Experiment("trajectory", "trajectory", "trajectory"),
    "sweep": Experiment("sweep", "sweep", "sweep"),
    "warmstart": Experiment("warmstart", "warmstart", "warmstart"),
    "remedies": Experiment("remedies", "remedies", "remedies"),
    "panel": Experiment(
        "panel",
        "panel",
        "panel",
        (Experiment("density", "density", "density"), Experiment("methods", "methods", "methods")),
    ),
    "surfaces": Experiment(None),
    "modern": Experiment(None),
}

# The sharpness panel: what each stage measures of one iterate (`sharpminima STAGE WHAT`), and
# its measures besides φ, one number per run each (config panel.measures) -> their stage.
PANEL_STAGES = {
    "curvature": ("eigenvalues", "trace", "density"),
    "adaptive": ("linf", "l2", "average"),
}
PANEL = {m: stage for stage, ms in PANEL_STAGES.items() for m in ms if m != "density"}


@cache
def package_files() -> frozenset[str]:
    """Every file of the package, as a path relative to it ("measures/sharpness.py")."""
    return frozenset(
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


def module_file(parts: list[str]) -> str | None:
    """The file of the package's module or subpackage with these dotted parts, if any."""
    for name in ("/".join(parts) + ".py", "/".join([*parts, "__init__.py"])):
        if name in package_files():
            return name
    return None


def _packages_of(file: str) -> list[str]:
    """The `__init__.py` of every package that holds `file`: Python runs each on the way."""
    folders = file.split("/")[:-1]
    inits = ("/".join([*folders[:i], "__init__.py"]) for i in range(len(folders) + 1))
    return [init for init in inits if init in package_files() and init != file]


@cache
def imports(file: str) -> frozenset[str]:
    """The package's files that `file` imports (relative imports, at its top or inside any
    function, across subpackages: `from ..measures import curvature`, `from . import x`), and the
    package data files in its own folder that it names ("paper_values.csv")."""
    tree = ast.parse((PACKAGE / file).read_text(encoding="utf-8"))
    package = file.split("/")[:-1]
    folder = "/".join(package + [""])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level - 1 > len(package):
                continue  # beyond the package: not its code
            base = package[: len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            found.add(module_file(target))
            found.update(module_file([*target, alias.name]) for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(folder + node.value)
    return frozenset(found & package_files() - {file})


def code_files(*modules: str) -> list[Path]:
    """Every file of the package that running `modules` (dotted, "measures.sharpness")
    executes or reads, sorted."""
    files, todo = set(), [module_file(m.split(".")) for m in modules]
    if None in todo:
        raise KeyError(f"no such module in the package: {modules}")
    while todo:
        name = todo.pop()
        if name not in files:
            files.add(name)
            todo += _packages_of(name)
            if name.endswith(".py"):
                todo += imports(name)
    return sorted(PACKAGE / name for name in files)


def stage_code(stage: str, source: str | None = None) -> list[Path]:
    """The code inputs of a stage's jobs (of `prepare`, for one dataset source)."""
    extra = SOURCES[source] if source else ()
    return code_files(*STAGES[stage].modules, *extra)
