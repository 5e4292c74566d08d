# Parametric plots (Figures 3 and 7): f along a curve from the SB to the LB minimizer.


rule landscape:
    input:
        sb=lambda wc: landscape_run(wc, 0),
        lb=lambda wc: landscape_run(wc, 1),
        code=code("landscape"),
    output:
        h5="results/{study}/landscape/{network}/seed{seed}/{kind}.h5",
    log:
        "logs/{study}/landscape/{network}/seed{seed}/{kind}.log",
    conda:
        ENV
    threads: config["sharpness_threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=config["gpu"],
    params:
        options=lambda wc: cli_args(landscape_options()),
    shell:
        "sharpminima landscape --sb {input.sb} --lb {input.lb} --kind {wildcards.kind} "
        "{params.options} --threads {threads} --out {output.h5} > {log} 2>&1"


rule figure_parametric:
    input:
        h5=rules.landscape.output.h5,
        code=code("figure"),
    output:
        png=report(
            "results/{study}/figures/{network}/seed{seed}/{kind}.png",
            caption="../report/parametric.rst",
            category="Figures 3 and 7: parametric plots",
            subcategory="{network}",
            labels={"network": "{network}", "trial": "{seed}", "curve": "{kind}"},
        ),
        pdf="results/{study}/figures/{network}/seed{seed}/{kind}.pdf",
    log:
        "logs/{study}/figures/{network}/seed{seed}/{kind}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        style=cli_args(config["figures"]),
    shell:
        "sharpminima figure parametric {input.h5} --out {output.png} {params.style} > {log} 2>&1"
