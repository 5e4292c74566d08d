# Experiments read off finished runs (issue 6), each a switch under `experiments:`: Figure 2
# (accuracy per epoch), distances from the initial point, Appendix C's performance model, and
# f along random directions. Each reads the SB and LB runs (landscape_regimes) of every trial.


rule measure:
    input:
        sb=lambda wc: pair_runs(wc, 0),
        lb=lambda wc: pair_runs(wc, 1),
        code=src("data", "models", "store", "experiments"),
    output:
        csv="results/experiments/{network}/{measure}.csv",
    log:
        "logs/experiments/{network}/{measure}.log",
    conda:
        "../../envs/sharpminima.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "sharpminima measure {wildcards.measure} --sb {input.sb} --lb {input.lb} "
        "--out {output.csv} > {log} 2>&1"


rule directions:
    input:
        runs=lambda wc: pair_runs(wc, 0) + pair_runs(wc, 1),
        phi=direction_phi,
        code=src("data", "models", "store", "training", "sharpness", "experiments"),
    output:
        csv="results/experiments/{network}/directions.csv",
    log:
        "logs/experiments/{network}/directions.log",
    conda:
        "../../envs/sharpminima.yaml"
    threads: config["sharpness_threads"]
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["gpu"],
    params:
        options=cli_args({k: v for k, v in config["directions"].items() if k != "eps"}),
    shell:
        "sharpminima directions --runs {input.runs} --phi {input.phi} {params.options} "
        "--threads {threads} --out {output.csv} > {log} 2>&1"


rule figure_experiment:
    input:
        csv=lambda wc: expand(
            rules.measure.output.csv,
            network=wc.network,
            measure=EXPERIMENT_FIGURES[wc.figure][0],
        ),
        code=src("experiments", "figures"),
    output:
        png=report(
            "results/figures/{network}/{figure}.png",
            caption="../report/experiments.rst",
            category="Further experiments",
            subcategory="{network}",
            labels={"network": "{network}", "figure": "{figure}"},
        ),
        pdf="results/figures/{network}/{figure}.pdf",
    log:
        "logs/figures/{network}/{figure}.log",
    conda:
        "../../envs/sharpminima.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        kind=lambda wc: EXPERIMENT_FIGURES[wc.figure][1],
        style=cli_args(config["figures"]),
    shell:
        "sharpminima figure {params.kind} {input.csv} --out {output.png} {params.style} "
        "> {log} 2>&1"
