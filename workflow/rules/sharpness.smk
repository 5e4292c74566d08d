# Sharpness (Metric 2.1) of a run's final iterate: one job per space, ε, BatchNorm mode and
# start point. The default target uses the config's bn and start; the sensitivity report below
# asks for every combination on the same minimizers.


rule sharpness:
    input:
        run=rules.train.output.run,
        code=code("sharpness"),
    output:
        json="results/{study}/sharpness/{network}/{regime}/seed{seed}/{space}_eps{eps}_bn{bn}_{start}.json",
    log:
        "logs/{study}/sharpness/{network}/{regime}/seed{seed}/{space}_eps{eps}_bn{bn}_{start}.log",
    benchmark:
        "results/{study}/benchmarks/sharpness/{network}/{regime}/seed{seed}/{space}_eps{eps}_bn{bn}_{start}.tsv"
    conda:
        ENV
    threads: config["sharpness_threads"]
    resources:
        cache_mb=config["sharpness"]["cache_mb"],  # memory for A; no effect on φ, so no rerun
        mem_mb=lambda wc: mem_of(wc.network, "measure")
        + config["sharpness"]["cache_mb"],
        runtime=120,
        gpu=config["gpu"],
    params:
        options=lambda wc: cli_args(sharpness_options(wc.space)),
    shell:
        "sharpminima sharpness {input.run} --space {wildcards.space} --eps {wildcards.eps} "
        "--bn {wildcards.bn} --start {wildcards.start} "
        "{params.options} --cache-mb {resources.cache_mb} --threads {threads} "
        "--out {output.json} > {log} 2>&1"


rule sensitivity:
    input:
        sharpness=sensitivity_inputs,
        code=code("sensitivity"),
    output:
        csv="results/{study}/sensitivity/{network}/sensitivity.csv",
        md="results/{study}/sensitivity/{network}/sensitivity.md",
        png=report(
            "results/{study}/sensitivity/{network}/sensitivity.png",
            caption="../report/sensitivity.rst",
            category="Sharpness sensitivity",
            subcategory="{network}",
            labels={"network": "{network}"},
        ),
        pdf="results/{study}/sensitivity/{network}/sensitivity.pdf",
    log:
        "logs/{study}/sensitivity/{network}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        style=cli_args(config["figures"]),
    shell:
        "sharpminima sensitivity {input.sharpness} --out-dir results/{wildcards.study}/sensitivity/{wildcards.network} "
        "{params.style} > {log} 2>&1"
