# Filter-normalised loss surfaces (experiments.surfaces; docs/panel.md): each grid split into
# surface.parts jobs (a cluster fills it in parallel; each job resumes point by point), merged,
# then drawn.


rule surface_part:
    input:
        run=rules.train.output.run,
        code=code("surface"),
    output:
        h5="results/{study}/surface/{network}/{regime}/seed{seed}/{dims}d_part{part}.h5",
    log:
        "logs/{study}/surface/{network}/{regime}/seed{seed}/{dims}d_part{part}.log",
    benchmark:
        "results/{study}/benchmarks/surface/{network}/{regime}/seed{seed}/{dims}d_part{part}.tsv"
    conda:
        ENV
    threads: config["sharpness_threads"]
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=config["gpu"],
    params:
        options=cli_args(surface_options()),
        parts=config["surface"]["parts"],
    shell:
        "sharpminima surface compute {input.run} --dims {wildcards.dims} "
        "--part {wildcards.part} --parts {params.parts} {params.options} "
        "--threads {threads} --out {output.h5} > {log} 2>&1"


rule surface:
    input:
        parts=lambda wc: expand(
            rules.surface_part.output.h5,
            part=range(config["surface"]["parts"]),
            allow_missing=True,
        ),
        code=code("surface"),
    output:
        h5="results/{study}/surface/{network}/{regime}/seed{seed}/{dims}d.h5",
    log:
        "logs/{study}/surface/{network}/{regime}/seed{seed}/{dims}d.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "sharpminima surface merge {input.parts} --out {output.h5} > {log} 2>&1"


rule figure_surface:
    input:
        h5=rules.surface.output.h5,
        code=code("figure"),
    output:
        png=report(
            "results/{study}/figures/{network}/{regime}/seed{seed}/surface{dims}d.png",
            caption="../report/surface.rst",
            category="Loss surfaces",
            subcategory="{network}",
            labels={
                "network": "{network}",
                "regime": "{regime}",
                "trial": "{seed}",
                "dimensions": "{dims}",
            },
        ),
        pdf="results/{study}/figures/{network}/{regime}/seed{seed}/surface{dims}d.pdf",
    log:
        "logs/{study}/figures/{network}/{regime}/seed{seed}/surface{dims}d.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        style=cli_args(config["figures"]),
    shell:
        "sharpminima figure surface {input.h5} --out {output.png} {params.style} > {log} 2>&1"
