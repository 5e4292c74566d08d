# Experiments (issue 6), each a switch under `experiments:`. Read off the SB and LB runs
# (landscape_regimes) of every trial: Figure 2 (accuracy per epoch), distances from the initial
# point, Appendix C's performance model, f along random directions, Figure 6 (φ along the
# runs). Figures 4 (batch-size sweep) and 5 (warm starts) add runs of their own regimes
# (sharpminima.regimes) and read their φ from the sharpness rule, as do Appendix E's remedies
# (Table 6). One `measure` rule serves every measurement of `sharpminima measure`.


rule measure:
    input:
        unpack(measure_inputs),
        code=code("measure"),
    output:
        csv="results/{study}/experiments/{network}/{measure}.csv",
        md="results/{study}/experiments/{network}/{measure}.md",
    log:
        "logs/{study}/experiments/{network}/{measure}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        inputs=measure_options,
    shell:
        "sharpminima measure {wildcards.measure} {params.inputs} --out {output.csv} "
        "> {log} 2>&1"


rule directions:
    input:
        runs=lambda wc: pair_runs(wc, 0) + pair_runs(wc, 1),
        phi=direction_phi,
        code=code("directions"),
    output:
        csv="results/{study}/experiments/{network}/directions.csv",
    log:
        "logs/{study}/experiments/{network}/directions.log",
    conda:
        ENV
    threads: config["sharpness_threads"]
    resources:
        mem_mb=lambda wc: mem_of(wc.network, "measure"),
        runtime=120,
        gpu=config["gpu"],
    params:
        options=cli_args(
            {
                k: v
                for k, v in config["directions"].items()
                if k not in ("eps", "networks")
            }
        ),
    shell:
        "sharpminima directions --runs {input.runs} --phi {input.phi} {params.options} "
        "--threads {threads} --out {output.csv} > {log} 2>&1"


rule trajectory:
    input:
        runs=trajectory_runs,
        code=code("trajectory"),
    output:
        csv="results/{study}/experiments/{network}/trajectory.csv",
    log:
        "logs/{study}/experiments/{network}/trajectory.log",
    conda:
        ENV
    threads: config["sharpness_threads"]
    resources:
        cache_mb=config["sharpness"]["cache_mb"],
        mem_mb=lambda wc: mem_of(wc.network, "measure")
        + config["sharpness"]["cache_mb"],
        runtime=600,
        gpu=config["gpu"],
    params:
        options=cli_args(
            {
                **sharpness_options(),
                "start": config["sharpness"]["start"],
                "eps": config["trajectory"]["eps"],
                "bn": config["trajectory"]["bns"],
                "every": config["trajectory"]["every"],
            }
        ),
    shell:
        "sharpminima trajectory --runs {input.runs} {params.options} "
        "--cache-mb {resources.cache_mb} --threads {threads} --out {output.csv} > {log} 2>&1"


rule figure_experiment:
    input:
        csv=lambda wc: study_paths(
            rules.measure.output.csv,
            network=wc.network,
            measure=FIGURE_OF[wc.figure].csv,
        ),
        code=code("figure"),
    output:
        png=report(
            "results/{study}/figures/{network}/{figure}.png",
            caption="../report/experiments.rst",
            category="Further experiments",
            subcategory="{network}",
            labels={"network": "{network}", "figure": "{figure}"},
        ),
        pdf="results/{study}/figures/{network}/{figure}.pdf",
    log:
        "logs/{study}/figures/{network}/{figure}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        kind=lambda wc: FIGURE_OF[wc.figure].kind,
        style=cli_args(config["figures"]),
    shell:
        "sharpminima figure {params.kind} {input.csv} --out {output.png} {params.style} "
        "> {log} 2>&1"
