# Path helpers, input functions and options: what each rule reads, within this study's tree.


def sharpness_options(space="full"):
    """Settings that change φ in `space` (space, ε, bn, start are wildcards; cache_mb only
    trades memory for time, so it is not a parameter and triggers no rerun; the full space has
    no A, so A's dimension is not one of its parameters).
    """
    skip = ["eps", "spaces", "cache_mb", "bn", "start"]
    if space == "full":
        skip.append("dim")
    return {k: v for k, v in config["sharpness"].items() if k not in skip}


def landscape_options():
    """Settings that change a landscape (the kind is a wildcard)."""
    options = {
        k: v for k, v in config["landscape"].items() if k not in ("trials", "kinds")
    }
    return {**options, "buffers": int(options["buffers"])}


def surface_options():
    """Settings that change a surface (the dimension and part are wildcards)."""
    skip = ("networks", "trials", "regimes", "dims", "parts")
    return {k: v for k, v in config["surface"].items() if k not in skip}


def dataset_options(dataset):
    """The source of a dataset and its `sharpminima prepare` options."""
    entry = dict(config["datasets"][dataset])
    source = entry.pop("source")
    if source != "synthetic":  # read from (or downloaded to) data_root
        entry["root"] = config["data_root"]
    if "input_shape" in entry:
        entry["input_shape"] = ",".join(map(str, entry["input_shape"]))
    return source, entry


def trials_of(network):
    """A network's trials, seeds 0..n-1: its networks.<net>.trials, else the study's trials."""
    return range(config["networks"][network].get("trials") or config["trials"])


def experiment_seeds(section, network):
    """The trials of an experiment that may set a count of its own (sweep, remedies, modern):
    that count, else the network's trials."""
    return range(config[section].get("trials") or len(trials_of(network)))


def study_paths(pattern, **wildcards):
    """`expand` of a path pattern within this study's tree."""
    return expand(pattern, study=STUDY, **wildcards)


def runs_of(network, regimes, seeds):
    """The run files of a network (or networks): each regime's trials, regime after regime."""
    return study_paths(
        rules.train.output.run, network=network, regime=regimes, seed=seeds
    )


def phi_of(network, regimes, seeds, eps, space="full", bn=None, start=None):
    """The φ files of those runs (by default: full space, the config's BatchNorm mode and
    start point), in the same order."""
    return study_paths(
        rules.sharpness.output.json,
        network=network,
        regime=regimes,
        seed=seeds,
        space=space,
        eps=eps,
        bn=bn or config["sharpness"]["bn"],
        start=start or config["sharpness"]["start"],
    )


def dataset_code(wildcards):
    return code("prepare", config["datasets"][wildcards.dataset]["source"])


def run_dataset(wildcards):
    return study_paths(
        rules.prepare_dataset.output.h5,
        dataset=config["networks"][wildcards.network]["dataset"],
    )


def landscape_run(wildcards, end):
    """The run at α = end (0: first of landscape_regimes, 1: second) of this trial."""
    regime = config["landscape_regimes"][end]
    return runs_of(wildcards.network, regime, wildcards.seed)


def pair_runs(wildcards, end):
    """Every trial's run of the first (0) or second (1) of landscape_regimes."""
    regime = config["landscape_regimes"][end]
    return runs_of(wildcards.network, regime, trials_of(wildcards.network))


def direction_phi(wildcards):
    """The full-space φ of each run of pair_runs, in the same order (SB trials, LB trials)."""
    return phi_of(
        wildcards.network,
        config["landscape_regimes"],
        trials_of(wildcards.network),
        config["directions"]["eps"],
    )


def trajectory_runs(wildcards):
    """The SB and LB runs of the trials Figure 6 follows."""
    trials = config["trajectory"]["trials"]
    return runs_of(wildcards.network, config["landscape_regimes"], trials)


def sweep_runs(wildcards):
    return runs_of(
        wildcards.network,
        list(R.sweep.values()),
        experiment_seeds("sweep", wildcards.network),
    )


def sweep_phi(wildcards):
    eps = config["sweep"]["eps"]
    return phi_of(
        wildcards.network,
        list(R.sweep.values()),
        experiment_seeds("sweep", wildcards.network),
        eps,
    )


def warm_runs(wildcards, which):
    """The SB source runs ('sb') or the warm-started LB runs ('lb') of Figure 5."""
    source, epochs = R.warm_source, R.warm
    regimes = [source] if which == "sb" else list(epochs.values())
    return runs_of(wildcards.network, regimes, config["warmstart"]["trials"])


def warm_phi(wildcards):
    w = config["warmstart"]
    return phi_of(wildcards.network, list(R.warm.values()), w["trials"], w["eps"])


def remedy_runs(wildcards):
    regimes = remedy_run_regimes(wildcards.network)
    return runs_of(
        wildcards.network, regimes, experiment_seeds("remedies", wildcards.network)
    )


def remedy_phi(wildcards):
    regimes = remedy_run_regimes(wildcards.network)
    eps = config["remedies"]["eps"]
    return phi_of(
        wildcards.network, regimes, experiment_seeds("remedies", wildcards.network), eps
    )


# Measurements with runs of their own (by `sharpminima measure` option); the others read the
# study's pair (landscape_regimes) of every trial.
MEASURE_INPUTS = {
    "sweep": lambda wc: {"runs": sweep_runs(wc), "phi": sweep_phi(wc)},
    "warmstart": lambda wc: {
        "sb": warm_runs(wc, "sb"),
        "lb": warm_runs(wc, "lb"),
        "phi": warm_phi(wc),
    },
    "remedies": lambda wc: {"runs": remedy_runs(wc), "phi": remedy_phi(wc)},
}


def measure_inputs(wildcards):
    """The files `sharpminima measure` reads, by option name (registry.MEASURES)."""
    pair = lambda wc: {"sb": pair_runs(wc, 0), "lb": pair_runs(wc, 1)}
    return MEASURE_INPUTS.get(wildcards.measure, pair)(wildcards)


def measure_options(wildcards, input):
    """Those files as options: --sb A B --lb C D --phi E F."""
    return " ".join(
        f"--{name} " + " ".join(map(shlex.quote, input[name]))
        for name in MEASURES[wildcards.measure].options
    )


def sensitivity_inputs(wildcards):
    """Every BatchNorm mode × start × ε × space on the trials of the sensitivity report, and
    every subspace (A's distribution) × ε at the config's mode and start."""
    s, eps = config["sensitivity"], config["sharpness"]["eps"]
    every = {"bn": ["batch", "running"], "start": ["zero", "random", "multistart"]}
    net, regimes = wildcards.network, config["regimes"]
    return phi_of(net, regimes, s["trials"], eps, s["spaces"], **every) + phi_of(
        net, regimes, s["trials"], eps, s["subspaces"]
    )


def mem_of(network, stage):
    """A job's memory in MB: networks.<net>.mem_mb.<stage> (train, or measure for φ and the
    panel), else 8000. C1 on Fashion-MNIST peaked at 17,310 MB training LB and 15,573 MB for φ
    (its benchmark files' max_rss), so a scheduler that trusts the default kills it."""
    return config["networks"][network].get("mem_mb", {}).get(stage, 8000)


def panel_options(stage, what):
    """A panel measure's settings: its stage's shared ones (bn, chunk, seed) and its own."""
    shared = {k: v for k, v in config[stage].items() if not isinstance(v, dict)}
    return {**shared, **config[stage][what]}


def panel_of(network):
    """The panel's settings for a network: networks.<net>.panel over the study's panel."""
    return {**config["panel"], **config["networks"][network].get("panel", {})}


def matched_settings(network):
    """`sharpminima matched --settings`: φ as the panel's (full space, the first ε, the
    config's BatchNorm mode and start) and each of the network's panel measures."""
    s = config["sharpness"]
    phi = {**sharpness_options(), "space": "full", "eps": s["eps"][0]}
    phi.update(bn=s["bn"], start=s["start"])
    measures = panel_of(network)["measures"]
    return {"phi": phi, **{m: panel_options(PANEL[m], m) for m in measures}}


def matched_trials(network):
    """The trials compared at matched training loss: panel.matched_trials, or every one."""
    trials = panel_of(network)["matched_trials"]
    return trials_of(network) if trials is None else trials


def panel_population(network):
    """The panel's runs of a network as (regime, trial): the study's pair first (SB trials,
    LB trials), its other regimes, then the runs each switched-on experiment of
    panel.include adds."""
    trials = trials_of(network)
    pairs = [
        (r, s)
        for r in config["landscape_regimes"] + list(config["regimes"])
        for s in trials
    ]
    on = {
        k: v and k in config["panel"]["include"]
        for k, v in config["experiments"].items()
    }
    if on["sweep"] and network in experiment_networks("sweep"):
        seeds = experiment_seeds("sweep", network)
        pairs += [(r, s) for r in R.sweep.values() for s in seeds]
    if on["warmstart"] and network in experiment_networks("warmstart"):
        pairs += [
            (r, s) for r in R.warm.values() for s in config["warmstart"]["trials"]
        ]
    if on["remedies"] and network in experiment_networks("remedies"):
        regimes = remedy_run_regimes(network)
        pairs += [
            (r, s) for r in regimes for s in experiment_seeds("remedies", network)
        ]
    if on["modern"] and network in experiment_networks("modern"):
        seeds = experiment_seeds("modern", network)
        pairs += [(r, s) for r in modern_run_regimes() for s in seeds]
    return list(dict.fromkeys(pairs))


def panel_files(wildcards, pattern, **fixed):
    """`pattern` for each run of the panel's population, in its order."""
    return [
        path
        for regime, seed in panel_population(wildcards.network)
        for path in study_paths(
            pattern, network=wildcards.network, regime=regime, seed=seed, **fixed
        )
    ]


def panel_results(wildcards):
    """Each run's full-space φ (the first ε) and its measure of each of panel.measures."""
    phi = {"space": "full", "eps": config["sharpness"]["eps"][0]}
    phi.update(bn=config["sharpness"]["bn"], start=config["sharpness"]["start"])
    files = panel_files(wildcards, rules.sharpness.output.json, **phi)
    for what in panel_of(wildcards.network)["measures"]:
        pattern = rules.panel_measure.output.json
        files += panel_files(wildcards, pattern, stage=PANEL[what], what=what)
    return files


def panel_density(wildcards):
    """The spectral densities drawn: the study's pair on panel.density_trials."""
    return study_paths(
        rules.panel_measure.output.json,
        network=wildcards.network,
        regime=config["landscape_regimes"],
        seed=panel_of(wildcards.network)["density_trials"],
        stage="curvature",
        what="density",
    )


# Figure name -> the experiment (or the part of one) whose CSV it draws.
FIGURE_OF = {
    part.figure: part for e in EXPERIMENTS.values() for part in e.parts() if part.figure
}
