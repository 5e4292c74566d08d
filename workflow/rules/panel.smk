# The sharpness panel (experiments.panel; docs/panel.md): curvature and scale-invariant
# sharpness of every run's final iterate; each trial's SB and LB at matched training loss; then,
# per network, every measure beside the run's accuracy, the SB/LB sign test and Kendall's τ with
# the generalization gap (and its figures, drawn by figure_experiment from the CSVs written here).


rule panel_measure:
    input:
        run=rules.train.output.run,
        code=lambda wc: code(wc.stage),
    output:
        json="results/{study}/{stage}/{network}/{regime}/seed{seed}/{what}.json",
    log:
        "logs/{study}/{stage}/{network}/{regime}/seed{seed}/{what}.log",
    benchmark:
        "results/{study}/benchmarks/{stage}/{network}/{regime}/seed{seed}/{what}.tsv"
    wildcard_constraints:
        stage="|".join(PANEL_STAGES),
        what="|".join(m for ms in PANEL_STAGES.values() for m in ms),
    conda:
        ENV
    threads: config["sharpness_threads"]
    resources:
        mem_mb=lambda wc: mem_of(wc.network, "measure"),
        runtime=240,
        gpu=config["gpu"],
    params:
        options=lambda wc: cli_args(panel_options(wc.stage, wc.what)),
    shell:
        "sharpminima {wildcards.stage} {wildcards.what} {input.run} {params.options} "
        "--threads {threads} --out {output.json} > {log} 2>&1"


rule matched:
    input:
        sb=lambda wc: runs_of(wc.network, config["landscape_regimes"][0], wc.seed),
        lb=lambda wc: runs_of(wc.network, config["landscape_regimes"][1], wc.seed),
        code=code("matched"),
    output:
        csv="results/{study}/matched/{network}/seed{seed}.csv",
    log:
        "logs/{study}/matched/{network}/seed{seed}.log",
    benchmark:
        "results/{study}/benchmarks/matched/{network}/seed{seed}.tsv"
    conda:
        ENV
    threads: config["sharpness_threads"]
    resources:
        mem_mb=lambda wc: mem_of(wc.network, "measure"),
        runtime=600,
        gpu=config["gpu"],
    params:
        settings=lambda wc: shlex.quote(
            json.dumps(matched_settings(wc.network), sort_keys=True)
        ),
        levels=" ".join(map(str, config["panel"]["loss_levels"])),
    shell:
        "sharpminima matched --sb {input.sb} --lb {input.lb} --settings {params.settings} "
        "--levels {params.levels} --threads {threads} --out {output.csv} > {log} 2>&1"


rule panel:
    input:
        runs=lambda wc: panel_files(wc, rules.train.output.run),
        results=panel_results,
        density=panel_density,
        matched=lambda wc: study_paths(
            rules.matched.output.csv,
            network=wc.network,
            seed=matched_trials(wc.network),
        ),
        code=code("panel"),
    output:
        csv="results/{study}/experiments/{network}/panel.csv",
        md="results/{study}/experiments/{network}/panel.md",
        verdict="results/{study}/experiments/{network}/verdict.csv",
        verdict_md="results/{study}/experiments/{network}/verdict.md",
        density="results/{study}/experiments/{network}/density.csv",
        methods="results/{study}/experiments/{network}/methods.csv",
        methods_md="results/{study}/experiments/{network}/methods.md",
        matched="results/{study}/experiments/{network}/matched.csv",
        matched_md="results/{study}/experiments/{network}/matched.md",
    log:
        "logs/{study}/experiments/{network}/panel.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        sb=config["landscape_regimes"][0],
        lb=config["landscape_regimes"][1],
        options=cli_args(
            {k: config["panel"][k] for k in ("bootstrap", "seed")},
        ),
    shell:
        "sharpminima panel --runs {input.runs} --results {input.results} "
        "--density {input.density} --matched {input.matched} --sb {params.sb} "
        "--lb {params.lb} {params.options} "
        "--out-dir $(dirname {output.csv}) > {log} 2>&1"
