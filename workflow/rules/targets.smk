# Targets: what `rule all` asks for (the tables, the parametric plots, the experiments on).


def all_runs():
    return [
        path
        for net in config["networks"]
        for path in runs_of(net, config["regimes"], trials_of(net))
    ]


def all_sharpness():
    """The default sharpness jobs: the config's BatchNorm mode and start point."""
    s = config["sharpness"]
    return [
        path
        for net in config["networks"]
        for path in phi_of(
            net, config["regimes"], trials_of(net), s["eps"], s["spaces"]
        )
    ]


# Tables 2 (accuracy), 3 (full-space φ) and 4 (random-subspace φ) that the config produces.
TABLES = [2] + [{"full": 3, "random": 4}[s] for s in config["sharpness"]["spaces"]]


def table_outputs():
    """Each table as CSV (in the report, one entry per table) and Markdown."""
    entry = report  # a line that starts with `report` is read as the report: directive
    csv = [
        entry(
            path,
            caption="../report/tables.rst",
            category="Tables 2-4",
            subcategory="all networks",
            labels={"table": n},
        )
        for n, path in zip(
            TABLES, study_paths("results/{study}/tables/table{n}.csv", n=TABLES)
        )
    ]
    return csv + study_paths("results/{study}/tables/table{n}.md", n=TABLES)


def all_figures():
    return study_paths(
        rules.figure_parametric.output.png,
        network=config["networks"],
        seed=config["landscape"]["trials"],
        kind=config["landscape"]["kinds"],
    )


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


def surface_outputs():
    """The surface figures: each network's minimizers of surface.trials × surface.regimes."""
    s = config["surface"]
    regimes = s["regimes"] or config["landscape_regimes"]
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown:
        sys.exit(
            f"config: surface.regimes: {', '.join(unknown)} not among the study's regimes "
            f"({', '.join(REGIMES)}): fix the name"
        )
    return study_paths(
        rules.figure_surface.output.png,
        network=experiment_networks("surface"),
        regime=regimes,
        seed=s["trials"],
        dims=s["dims"],
    )


def modern_outputs():
    """The runs of the methods since the paper and their φ (first ε); where the panel runs
    and includes them, its methods table and figure compare them."""
    networks = experiment_networks("modern")
    regimes = modern_run_regimes()
    eps = config["sharpness"]["eps"][0]
    files = []
    for net in networks:
        seeds = experiment_seeds("modern", net)
        files += runs_of(net, regimes, seeds) + phi_of(net, regimes, seeds, eps)
    return files


# The outputs of the experiment switches that write no CSV (registry: `csv` None).
OTHER_OUTPUTS = {"surfaces": surface_outputs, "modern": modern_outputs}


def experiment_outputs():
    """The CSVs and figures of the experiments switched on, for each network they run on."""
    outputs = []
    for name, enabled in config["experiments"].items():
        if not enabled:
            continue
        if EXPERIMENTS[name].csv is None:
            outputs += OTHER_OUTPUTS[name]()
            continue
        networks = experiment_networks(name)
        for part in EXPERIMENTS[name].parts():
            outputs += study_paths(
                rules.measure.output.csv, network=networks, measure=part.csv
            )
            # no density drawn where a network's panel computes none (density_trials: [])
            drawn = [
                n
                for n in networks
                if part.figure != "density" or panel_of(n)["density_trials"]
            ]
            if part.figure:
                outputs += study_paths(
                    rules.figure_experiment.output.png,
                    network=drawn,
                    figure=part.figure,
                )
    return outputs
