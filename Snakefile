# sharpminima: Keskar et al. (ICLR 2017), "On Large-Batch Training for Deep Learning:
# Generalization Gap and Sharp Minima", as one reproducible workflow.
#
#   snakemake --cores 8                                          # F1/MNIST study
#   snakemake --cores 2 --configfile workflow/presets/smoke.yaml # tiny synthetic run


from snakemake.utils import min_version

min_version("9.0")


# ---- Configuration (validated against workflow/schemas/ in common.smk) -------------------
# config.yaml is the default study. A file given with --configfile replaces it instead of being
# merged over it (Snakemake's own rule), so that a config of your own never inherits the default
# study's name, networks or datasets; to build on it, give both: --configfile config.yaml mine.yaml
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# ---- Stages -------------------------------------------------------------------------------
include: "workflow/rules/common.smk"
include: "workflow/rules/regimes.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/targets.smk"


# ---- Wildcards: only names the config defines ---------------------------------------------
wildcard_constraints:
    study=re.escape(STUDY),
    network="|".join(config["networks"]),
    regime=REGIME_PATTERN,
    dataset="|".join(config["datasets"]),
    seed=r"\d+",
    space="full|random(-uniform)?(-raw)?",  # sharpminima.measures.sharpness.SUBSPACES
    eps=r"[0-9.eE+-]+",
    kind="linear|curvilinear",
    bn="batch|running",
    start="zero|random|multistart",
    measure="|".join(MEASURES),
    dims="1|2",
    part=r"\d+",
    figure="|".join(FIGURE_OF),


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sharpness.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/landscape.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/panel.smk"
include: "workflow/rules/surface.smk"


# ---- Jobs that run where Snakemake runs (seconds each; not worth a cluster queue) ----------
localrules:
    all,
    tables,
    figure_parametric,
    measure,
    figure_experiment,
    panel,
    surface,
    figure_surface,
    sensitivity,
    sensitivity_report,


# ---- Targets ------------------------------------------------------------------------------
rule all:
    default_target: True
    input:
        rules.tables.output,
        all_figures(),
        experiment_outputs(),


# Not part of `all` (it multiplies the sharpness jobs): snakemake sensitivity_report
rule sensitivity_report:
    input:
        study_paths(rules.sensitivity.output.csv, network=config["networks"]),
