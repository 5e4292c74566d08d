# Config checking, and the helpers of every rule file (code inputs, options as arguments).
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path

import jsonschema
import yaml
from snakemake.utils import validate

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
# The one software environment of all jobs, named in each of the rules since Snakemake's linter
# asks each for one; a workflow-level conda directive would instead inject it into Snakemake's
# own process.
ENV = "../../envs/sharpminima.yaml"

# This workflow's own package (not whichever copy is installed): the stage registry, which
# derives each stage's code inputs, and the regimes (src/sharpminima/registry.py, regimes.py).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from sharpminima.registry import (
    EXPERIMENTS,
    MEASURES,
    PANEL,
    PANEL_STAGES,
    stage_code,
)
from sharpminima.regimes import derive
from sharpminima.cpus import usable_cpus


def cap_cores():
    """Run at most as many threads at once as this machine (or the affinity mask and cgroup
    this run is held to) has CPUs, whatever `--cores` says: `--cores 8` on 2 CPUs would run 4
    two-thread jobs, and PyTorch on 8 busy threads over 2 CPUs runs 10-20 times slower. Lowering
    Snakemake's core budget also lowers each job's threads to it. Local runs only: a cluster's
    jobs run within their own allocation, where each job caps its threads (cli._threads).
    """
    cores, cpus = workflow.global_resources["_cores"].value, usable_cpus()
    local = workflow.global_resources["_nodes"].value is None
    if local and cores is not None and cores > cpus:
        workflow.global_resources["_cores"] = workflow.resource_settings.cores = cpus
        print(
            f"--cores {cores}: this run may use {cpus} CPUs (its affinity mask and cgroup), "
            f"so jobs share {cpus} cores (docs/workflow.md)",
            file=sys.stderr,
        )


cap_cores()


def strict_validator(spec):
    """The schema's validator, but an integer is a YAML integer: JSON Schema counts 2.0 as one,
    and the job's `--option 2.0` then failed at job time, hours into a study.
    """
    base = jsonschema.validators.validator_for(spec)
    checker = base.TYPE_CHECKER.redefine(
        "integer",
        lambda _, value: isinstance(value, int) and not isinstance(value, bool),
    )
    return jsonschema.validators.extend(base, type_checker=checker)


def check_config(data, schema, where="", fill=True):
    """Fill the schema's defaults into `data` (if `fill`), or stop with one line naming the
    bad key: a jsonschema report is a page long and names the key only in its middle.
    """
    path = SCHEMAS / schema
    spec = yaml.safe_load(path.read_text())
    errors = strict_validator(spec)(spec).iter_errors(data)
    first = min(errors, key=lambda e: [str(k) for k in e.absolute_path], default=None)
    if first is not None:
        key = (
            ".".join([where, *map(str, first.absolute_path)]).strip(".") or "top level"
        )
        message = first.message
        if first.validator == "pattern" and "description" in first.schema:  # says more
            message = (
                f"{first.instance!r} is not a name: use {first.schema['description']} (no "
                "'/', whitespace, newline or shell character: it becomes a path)"
            )
        sys.exit(
            f"config: {key}: {message} (keys and allowed values: "
            f"{path.relative_to(workflow.basedir)})"
        )
    if fill:
        validate(data, schema=str(path))


def check_finite(data, where=""):
    """nan and ±inf pass the schema's bounds (every comparison with them is false) and would
    fail jobs hours later: stop on them now, naming the key."""
    if isinstance(data, dict):
        for key, value in data.items():
            check_finite(value, f"{where}.{key}".strip("."))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            check_finite(value, f"{where}.{i}")
    elif isinstance(data, float) and not math.isfinite(data):
        sys.exit(f"config: {where}: {data} is not a finite number: give one")


class StrictYaml(yaml.SafeLoader):
    """YAML as the config check reads it: a key given twice is refused (PyYAML keeps the last
    silently), and so is an alias (*name): nine nested aliases make a file of a few lines a
    config of 387 million values, which every walk over it (this check's too) takes for ever.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(
                f"line {event.start_mark.line + 1}: the alias *{event.anchor} repeats a value: "
                "write the value out instead"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.YAMLError(
                    f"line {key_node.start_mark.line + 1}: the key {key!r} is given twice: "
                    "keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def check_config_files():
    """Read each config file again, strictly (Snakemake has read it leniently)."""
    files = workflow.overwrite_configfiles or [Path(workflow.basedir) / "config.yaml"]
    for path in files:
        try:
            with open(path, "rb") as text:
                yaml.load(text, Loader=StrictYaml)
        except yaml.YAMLError as e:
            sys.exit(f"config: {path}: {str(e).splitlines()[0]}")


check_config_files()
check_finite(config)


if "study" not in config:
    sys.exit(
        "config: study is missing: name this study's results tree (e.g. study: mine, for "
        "results/mine/ and logs/mine/), so that it never replaces another study's runs"
    )


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


# Each study (config.yaml's, each preset's) has its own results/<study>/ and logs/<study>/, so
# running one preset never replaces another's runs (docs/workflow.md).
STUDY = config["study"]


def code(stage, source=None):
    """The package files a stage's jobs execute or read, derived from its imports: as inputs,
    an edit to any of them reruns exactly those jobs (docs/architecture.md)."""
    return [os.path.relpath(p) for p in stage_code(stage, source)]


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


for _section in ("remedies", "modern"):
    if config["experiments"][_section]:
        for _name, _settings in config[_section]["methods"].items():
            check_config(
                _settings,
                "training.schema.yaml",
                f"{_section}.methods.{_name}",
                fill=False,
            )
if config["experiments"]["modern"]:
    _unknown = set(config["modern"]["lb_only"]) - set(config["modern"]["methods"])
    if _unknown:
        sys.exit(
            f"config: modern.lb_only: {', '.join(sorted(_unknown))} not among "
            f"modern.methods: fix the name or add the method"
        )
    if config["experiments"]["remedies"]:
        _both = set(config["modern"]["methods"]) & set(config["remedies"]["methods"])
        if _both:
            sys.exit(
                f"config: {', '.join(sorted(_both))} named in both remedies.methods and "
                "modern.methods: their runs would share a regime; rename one"
            )
