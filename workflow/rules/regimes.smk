# Regimes: every way a run is trained, by the name in its path (sharpminima.regimes derives
# them: the study's SB and LB, the sweep's batch sizes, the warm starts, the remedies, the
# methods since the paper).

R = derive(config, TRAINING)
REGIMES = R.all
REGIME_PATTERN = "|".join(map(re.escape, sorted(REGIMES, key=len, reverse=True)))


def train_options(wildcards):
    """The protocol, the regime's settings over it, and its warm start (as `train` options)."""
    r = REGIMES[wildcards.regime]
    options = {**TRAINING[wildcards.network], **r.training}
    if r.warm:
        options.update(warm_run=warm_source(wildcards)[0], warm_epoch=r.warm[1])
    return cli_args(options)


def warm_source(wildcards):
    """The run a warm-started regime starts from (read in place), else nothing."""
    warm = REGIMES[wildcards.regime].warm
    return runs_of(wildcards.network, warm[0], wildcards.seed) if warm else []


def is_images(network):
    """Whether a network's dataset holds images (augmentation needs them)."""
    entry = config["datasets"][config["networks"][network]["dataset"]]
    if entry["source"] == "synthetic":
        return len(entry.get("input_shape", [1, 28, 28])) == 3
    return not entry["source"].startswith("timit")


def remedy_run_regimes(network):
    """The study's pair and each remedy's regimes that apply to this network (augmentation
    only where the inputs are images)."""
    usable = [
        regimes
        for name, regimes in R.remedies.items()
        if is_images(network) or not config["remedies"]["methods"][name].get("augment")
    ]
    return config["landscape_regimes"] + [r for regimes in usable for r in regimes]


def modern_run_regimes():
    """Each modern method's regimes (its LB, and its SB unless it is in modern.lb_only)."""
    return [r for regimes in R.modern.values() for r in regimes]
