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
    """Source modules that a job executes, as inputs: a code change reruns the job."""
    root = Path(workflow.basedir) / "src" / "sharpminima"
    return [
        os.path.relpath(root / f"{m}.py") for m in ("cli", "errors", "atomic") + modules
    ]


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


def all_runs():
    return expand(
        rules.train.output.run,
        network=config["networks"],
        regime=config["regimes"],
        seed=range(config["trials"]),
    )
