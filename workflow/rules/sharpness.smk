# Sharpness (Metric 2.1) of every run's final iterate: one job per space and ε.


rule sharpness:
    input:
        run=rules.train.output.run,
        code=src("data", "models", "store", "training", "sharpness"),
    output:
        json="results/sharpness/{network}/{regime}/seed{seed}/{space}_eps{eps}.json",
    log:
        "logs/sharpness/{network}/{regime}/seed{seed}/{space}_eps{eps}.log",
    conda:
        "../../envs/sharpminima.yaml"
    threads: config["sharpness_threads"]
    resources:
        cache_mb=config["sharpness"]["cache_mb"],  # memory for A; no effect on φ, so no rerun
        mem_mb=8000 + config["sharpness"]["cache_mb"],
        runtime=120,
    params:
        options=lambda wc: cli_args(sharpness_options()),
    shell:
        "sharpminima sharpness {input.run} --space {wildcards.space} --eps {wildcards.eps} "
        "{params.options} --cache-mb {resources.cache_mb} --threads {threads} "
        "--out {output.json} > {log} 2>&1"
