# Shared helpers: config validation, path patterns and per-rule parameters.
import os
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")
validate(config["training"], schema="../schemas/training.schema.yaml")


def training_config(network):
    """The global training protocol with this network's overrides applied (and checked)."""
    merged = {**config["training"], **config["networks"][network].get("training", {})}
    validate(merged, schema="../schemas/training.schema.yaml", set_default=False)
    return merged


for _net, _entry in config["networks"].items():
    if _entry["dataset"] not in config["datasets"]:
        raise ValueError(
            f"config: networks.{_net}.dataset is {_entry['dataset']!r}, which is not a key of "
            f"datasets ({', '.join(config['datasets'])}): add it there or fix the name"
        )

# Validated here, while the schema path resolves relative to this file.
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
    """Render {"max_epochs": 3, "lr": None} as "--max-epochs 3" (None means: default)."""
    return " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in options.items() if v is not None
    )


def dataset_options(dataset):
    entry = dict(config["datasets"][dataset])
    source = entry.pop("source")
    if source == "mnist":
        entry["root"] = config["data_root"]
    if "input_shape" in entry:
        entry["input_shape"] = ",".join(map(str, entry["input_shape"]))
    return source, entry


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
