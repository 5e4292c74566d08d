# Shared helpers: config validation, path patterns and per-rule parameters.
import os
import shlex
import sys
from pathlib import Path

import jsonschema
import yaml
from snakemake.utils import validate

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"


def check_config(data, schema, where="", fill=True):
    """Fill the schema's defaults into `data` (if `fill`), or stop with one line naming the
    bad key: a jsonschema report is a page long and names the key only in its middle.
    """
    path = SCHEMAS / schema
    spec = yaml.safe_load(path.read_text())
    errors = jsonschema.validators.validator_for(spec)(spec).iter_errors(data)
    first = min(errors, key=lambda e: [str(k) for k in e.absolute_path], default=None)
    if first is not None:
        key = (
            ".".join([where, *map(str, first.absolute_path)]).strip(".") or "top level"
        )
        sys.exit(
            f"config: {key}: {first.message} (keys and allowed values: "
            f"{path.relative_to(workflow.basedir)})"
        )
    if fill:
        validate(data, schema=str(path))


check_config(config, "config.schema.yaml")
check_config(config["training"], "training.schema.yaml", "training")


def training_config(network):
    """The global training protocol with this network's overrides applied (and checked)."""
    overrides = config["networks"][network].get("training", {})
    check_config(
        overrides, "training.schema.yaml", f"networks.{network}.training", fill=False
    )
    return {**config["training"], **overrides}


for _net, _entry in config["networks"].items():
    if _entry["dataset"] not in config["datasets"]:
        sys.exit(
            f"config: networks.{_net}.dataset: {_entry['dataset']!r} is not a key of "
            f"datasets ({', '.join(config['datasets'])}): add it there or fix the name"
        )

TRAINING = {net: training_config(net) for net in config["networks"]}


def src(*modules):
    """Source modules (and package data) that a job executes, as inputs: a change reruns it.

    cli.py is deliberately not among them: it only parses arguments, and the rules pass every
    option explicitly, so adding a subcommand for one stage must not rerun all the others.
    """
    root = Path(workflow.basedir) / "src" / "sharpminima"
    names = ("errors", "atomic") + modules
    return [os.path.relpath(root / (m if "." in m else f"{m}.py")) for m in names]


def cli_args(options):
    """Render {"max_epochs": 3, "lr": None, "ali": ["a", "b"], "allow_pipes": True} as
    "--max-epochs 3 --ali a b --allow-pipes" (None and False mean: the default).

    Sorted, so that reordering keys in a config file (or merging one over another) leaves the
    params, and so Snakemake's rerun trigger, untouched.
    """

    def value(v):
        items = v if isinstance(v, list) else [v]
        return "".join(f" {shlex.quote(str(item))}" for item in items)

    return " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else value(v))
        for k, v in sorted(options.items())
        if v is not None and v is not False
    )


# The modules each dataset source runs (its prepare job's code inputs).
SOURCE_MODULES = {"timit-kaldi": ("frames", "kaldi"), "timit-raw": ("frames", "timit")}


def dataset_options(dataset):
    """The source of a dataset and its `sharpminima prepare` options."""
    entry = dict(config["datasets"][dataset])
    source = entry.pop("source")
    if source != "synthetic":  # read from (or downloaded to) data_root
        entry["root"] = config["data_root"]
    if "input_shape" in entry:
        entry["input_shape"] = ",".join(map(str, entry["input_shape"]))
    return source, entry


def dataset_code(wildcards):
    source = config["datasets"][wildcards.dataset]["source"]
    return src("data", *SOURCE_MODULES.get(source, ()))


def run_dataset(wildcards):
    return expand(
        rules.prepare_dataset.output.h5,
        dataset=config["networks"][wildcards.network]["dataset"],
    )


def sharpness_options():
    """Settings that change φ, shared by every sharpness job (space, ε, bn, start are wildcards;
    cache_mb only trades memory for time, so it is not a parameter and triggers no rerun).
    """
    skip = ("eps", "spaces", "cache_mb", "bn", "start")
    return {k: v for k, v in config["sharpness"].items() if k not in skip}


def all_sharpness():
    """The default sharpness jobs: the config's BatchNorm mode and start point."""
    return expand(
        rules.sharpness.output.json,
        network=config["networks"],
        regime=config["regimes"],
        seed=range(config["trials"]),
        space=config["sharpness"]["spaces"],
        eps=config["sharpness"]["eps"],
        bn=config["sharpness"]["bn"],
        start=config["sharpness"]["start"],
    )


def sensitivity_inputs(wildcards):
    """Every BatchNorm mode × start × ε × space on the trials of the sensitivity report."""
    s = config["sensitivity"]
    return expand(
        rules.sharpness.output.json,
        network=wildcards.network,
        regime=config["regimes"],
        seed=s["trials"],
        space=s["spaces"],
        eps=config["sharpness"]["eps"],
        bn=["batch", "running"],
        start=["zero", "random", "multistart"],
    )


# Tables 2 (accuracy), 3 (full-space φ) and 4 (random-subspace φ) that the config produces.
TABLES = [2] + [{"full": 3, "random": 4}[s] for s in config["sharpness"]["spaces"]]


def table_outputs():
    """Each table as CSV (in the report, one entry per table) and Markdown."""
    entry = report  # a line that starts with `report` is read as the report: directive
    caption, category = "../report/tables.rst", "Tables 2-4"
    csv = [
        entry(
            f"results/tables/table{n}.csv",
            caption,
            category,
            "all networks",
            {"table": n},
        )
        for n in TABLES
    ]
    return csv + expand("results/tables/table{n}.md", n=TABLES)


def landscape_options():
    """Settings that change a landscape (the kind is a wildcard)."""
    options = {
        k: v for k, v in config["landscape"].items() if k not in ("trials", "kinds")
    }
    return {**options, "buffers": int(options["buffers"])}


def landscape_run(wildcards, end):
    """The run at α = end (0: first of landscape_regimes, 1: second) of this trial."""
    return expand(
        rules.train.output.run,
        network=wildcards.network,
        regime=config["landscape_regimes"][end],
        seed=wildcards.seed,
    )


def all_figures():
    return expand(
        rules.figure_parametric.output.png,
        network=config["networks"],
        seed=config["landscape"]["trials"],
        kind=config["landscape"]["kinds"],
    )


def all_runs():
    return expand(
        rules.train.output.run,
        network=config["networks"],
        regime=config["regimes"],
        seed=range(config["trials"]),
    )


# Figure name -> (the measurement it draws, `sharpminima figure` kind).
EXPERIMENT_FIGURES = {
    "accuracy": ("curves", "curves"),
    "perfmodel": ("iterations", "perfmodel"),
    "directions": ("directions", "directions"),
}
# Config switch -> (measurement, figure or None).
EXPERIMENTS = {
    "curves": ("curves", "accuracy"),
    "distances": ("distances", None),
    "performance_model": ("iterations", "perfmodel"),
    "directions": ("directions", "directions"),
}


def pair_runs(wildcards, end):
    """Every trial's run of the first (0) or second (1) of landscape_regimes."""
    return expand(
        rules.train.output.run,
        network=wildcards.network,
        regime=config["landscape_regimes"][end],
        seed=range(config["trials"]),
    )


def direction_phi(wildcards):
    """The full-space φ of each run of pair_runs, in the same order (SB trials, LB trials)."""
    return expand(
        rules.sharpness.output.json,
        network=wildcards.network,
        regime=config["landscape_regimes"],
        seed=range(config["trials"]),
        space="full",
        eps=config["directions"]["eps"],
        bn=config["sharpness"]["bn"],
        start=config["sharpness"]["start"],
    )


def experiment_outputs():
    """The CSVs and figures of the experiments switched on, for every network."""
    on = [
        EXPERIMENTS[name] for name, enabled in config["experiments"].items() if enabled
    ]
    csv = expand(
        rules.measure.output.csv,
        network=config["networks"],
        measure=[m for m, _ in on],
    )
    png = expand(
        rules.figure_experiment.output.png,
        network=config["networks"],
        figure=[f for _, f in on if f],
    )
    return csv + png
