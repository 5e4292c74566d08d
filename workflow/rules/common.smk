# Shared helpers: config validation, path patterns and per-rule parameters.
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

# The stage registry of this workflow's own package (not of whichever copy is installed): it
# names the stages and derives each one's code inputs (src/sharpminima/registry.py).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from sharpminima.registry import EXPERIMENTS, stage_code


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


def study_paths(pattern, **wildcards):
    """`expand` of a path pattern within this study's tree."""
    return expand(pattern, study=STUDY, **wildcards)


def experiment_networks(name):
    """The networks an experiment with a `networks` setting runs on (default: all)."""
    chosen = config.get(name, {}).get("networks", list(config["networks"]))
    unknown = [n for n in chosen if n not in config["networks"]]
    if unknown:
        sys.exit(
            f"config: {name}.networks: {', '.join(unknown)} not among networks "
            f"({', '.join(config['networks'])}): fix the name or add the network"
        )
    return chosen


# ---- Regimes: every way a run is trained, by the name in its path -------------------------
# The study's regimes, the batch-size sweep's points and the warm starts are all runs under
# results/runs/{network}/{regime}/, so training, sharpness and tables treat them alike. A
# regime is a batch size, training settings over the protocol's, and optionally a warm start.


def regime(batch_size, training=None, warm=None):
    return {"batch_size": batch_size, "training": training or {}, "warm": warm}


REGIMES = {name: regime(batch) for name, batch in config["regimes"].items()}


def sweep_regimes():
    """Batch size -> regime of the sweep: a study regime where settings and batch agree."""
    s = config["sweep"]
    fixed = {} if s["epochs"] is None else {"stop": "fixed", "max_epochs": s["epochs"]}
    same = all(
        TRAINING[n].get(k) == v for n in config["networks"] for k, v in fixed.items()
    )
    suffix = "" if same else f"_{s['epochs']}ep"
    names = {}
    for batch in s["batch_sizes"]:
        study = [n for n, b in config["regimes"].items() if b == batch and same]
        names[batch] = study[0] if study else f"b{batch:g}{suffix}"
        REGIMES.setdefault(names[batch], regime(batch, fixed))
    return names


SWEEP = sweep_regimes() if config["experiments"]["sweep"] else {}


def warm_regimes():
    """The SB source run of the warm starts, and warm-start epoch -> LB regime."""
    w = config["warmstart"]
    sb, lb = config["landscape_regimes"]
    source = f"warm_{sb}"
    REGIMES[source] = regime(
        config["regimes"][sb],
        {"stop": "fixed", "max_epochs": w["sb_epochs"], "save_every": 1},
    )
    epochs = {}
    for epoch in range(0, w["sb_epochs"] + 1, w["every"]):
        epochs[epoch] = f"warm_{lb}{epoch}"
        REGIMES[epochs[epoch]] = regime(
            config["regimes"][lb],
            {
                "stop": "fixed",
                "max_epochs": w["lb_epochs"],
                "save_every": w["lb_epochs"],
            },
            (source, epoch),
        )
    return source, epochs


WARM = warm_regimes() if config["experiments"]["warmstart"] else (None, {})


def is_images(network):
    """Whether a network's dataset holds images (augmentation needs them)."""
    entry = config["datasets"][config["networks"][network]["dataset"]]
    if entry["source"] == "synthetic":
        return len(entry.get("input_shape", [1, 28, 28])) == 3
    return not entry["source"].startswith("timit")


def remedy_regimes():
    """Appendix E: method -> the regimes <regime>_<method> of both landscape_regimes."""
    methods = {}
    for name, settings in config["remedies"]["methods"].items():
        where = f"remedies.methods.{name}"
        check_config(settings, "training.schema.yaml", where, fill=False)
        methods[name] = [f"{r}_{name}" for r in config["landscape_regimes"]]
        for study, name_ in zip(config["landscape_regimes"], methods[name]):
            REGIMES[name_] = regime(config["regimes"][study], settings)
    return methods


REMEDIES = remedy_regimes() if config["experiments"]["remedies"] else {}
REGIME_PATTERN = "|".join(map(re.escape, sorted(REGIMES, key=len, reverse=True)))


def train_options(wildcards):
    """The protocol, the regime's settings over it, and its warm start (as `train` options)."""
    r = REGIMES[wildcards.regime]
    options = {**TRAINING[wildcards.network], **r["training"]}
    if r["warm"]:
        options.update(warm_run=warm_source(wildcards)[0], warm_epoch=r["warm"][1])
    return cli_args(options)


def warm_source(wildcards):
    """The run a warm-started regime starts from (read in place), else nothing."""
    warm = REGIMES[wildcards.regime]["warm"]
    if not warm:
        return []
    return study_paths(
        rules.train.output.run,
        network=wildcards.network,
        regime=warm[0],
        seed=wildcards.seed,
    )


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
    return code("prepare", config["datasets"][wildcards.dataset]["source"])


def run_dataset(wildcards):
    return study_paths(
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
    return study_paths(
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
    return study_paths(
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
    csv = study_paths("results/{study}/tables/table{n}.csv", n=TABLES)
    labels = [{"table": n} for n in TABLES]
    csv = [
        entry(path, caption, category, "all networks", lab)
        for path, lab in zip(csv, labels)
    ]
    return csv + study_paths("results/{study}/tables/table{n}.md", n=TABLES)


def landscape_options():
    """Settings that change a landscape (the kind is a wildcard)."""
    options = {
        k: v for k, v in config["landscape"].items() if k not in ("trials", "kinds")
    }
    return {**options, "buffers": int(options["buffers"])}


def landscape_run(wildcards, end):
    """The run at α = end (0: first of landscape_regimes, 1: second) of this trial."""
    return study_paths(
        rules.train.output.run,
        network=wildcards.network,
        regime=config["landscape_regimes"][end],
        seed=wildcards.seed,
    )


def all_figures():
    return study_paths(
        rules.figure_parametric.output.png,
        network=config["networks"],
        seed=config["landscape"]["trials"],
        kind=config["landscape"]["kinds"],
    )


def all_runs():
    return study_paths(
        rules.train.output.run,
        network=config["networks"],
        regime=config["regimes"],
        seed=range(config["trials"]),
    )


# Figure name -> the experiment that draws it.
FIGURE_OF = {e.figure: e for e in EXPERIMENTS.values() if e.figure}


def pair_runs(wildcards, end):
    """Every trial's run of the first (0) or second (1) of landscape_regimes."""
    return study_paths(
        rules.train.output.run,
        network=wildcards.network,
        regime=config["landscape_regimes"][end],
        seed=range(config["trials"]),
    )


def direction_phi(wildcards):
    """The full-space φ of each run of pair_runs, in the same order (SB trials, LB trials)."""
    return phi_files(
        wildcards.network,
        config["landscape_regimes"],
        range(config["trials"]),
        config["directions"]["eps"],
    )


def phi_files(network, regimes, seeds, eps):
    """The full-space φ (the config's BatchNorm mode and start) of these runs."""
    return study_paths(
        rules.sharpness.output.json,
        network=network,
        regime=regimes,
        seed=seeds,
        space="full",
        eps=eps,
        bn=config["sharpness"]["bn"],
        start=config["sharpness"]["start"],
    )


def trajectory_runs(wildcards):
    """The SB and LB runs of the trials Figure 6 follows."""
    return study_paths(
        rules.train.output.run,
        network=wildcards.network,
        seed=config["trajectory"]["trials"],
        regime=config["landscape_regimes"],
    )


def sweep_seeds():
    return range(config["sweep"].get("trials") or config["trials"])


def sweep_runs(wildcards):
    return study_paths(
        rules.train.output.run,
        network=wildcards.network,
        regime=list(SWEEP.values()),
        seed=sweep_seeds(),
    )


def sweep_phi(wildcards):
    eps = config["sweep"]["eps"]
    return phi_files(wildcards.network, list(SWEEP.values()), sweep_seeds(), eps)


def warm_runs(wildcards, which):
    """The SB source runs ('sb') or the warm-started LB runs ('lb') of Figure 5."""
    source, epochs = WARM
    return study_paths(
        rules.train.output.run,
        network=wildcards.network,
        regime=[source] if which == "sb" else list(epochs.values()),
        seed=config["warmstart"]["trials"],
    )


def warm_phi(wildcards):
    w = config["warmstart"]
    return phi_files(wildcards.network, list(WARM[1].values()), w["trials"], w["eps"])


def remedy_run_regimes(network):
    """The study's pair and each remedy's regimes that apply to this network (augmentation
    only where the inputs are images)."""
    usable = [
        regimes
        for name, regimes in REMEDIES.items()
        if is_images(network) or not config["remedies"]["methods"][name].get("augment")
    ]
    return config["landscape_regimes"] + [r for regimes in usable for r in regimes]


def remedy_seeds():
    return range(config["remedies"].get("trials") or config["trials"])


def remedy_runs(wildcards):
    return study_paths(
        rules.train.output.run,
        network=wildcards.network,
        regime=remedy_run_regimes(wildcards.network),
        seed=remedy_seeds(),
    )


def remedy_phi(wildcards):
    regimes = remedy_run_regimes(wildcards.network)
    eps = config["remedies"]["eps"]
    return phi_files(wildcards.network, regimes, remedy_seeds(), eps)


def experiment_outputs():
    """The CSVs and figures of the experiments switched on, for each network they run on."""
    outputs = []
    for name, enabled in config["experiments"].items():
        if not enabled:
            continue
        experiment = EXPERIMENTS[name]
        networks = experiment_networks(name)
        outputs += study_paths(
            rules.measure.output.csv, network=networks, measure=experiment.csv
        )
        if experiment.figure:
            outputs += study_paths(
                rules.figure_experiment.output.png,
                network=networks,
                figure=experiment.figure,
            )
    return outputs
