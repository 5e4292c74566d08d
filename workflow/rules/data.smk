# Dataset preparation: every source becomes results/data/<name>.h5 (docs/formats.md).


rule prepare_dataset:
    input:
        code=dataset_code,
    output:
        h5="results/{study}/data/{dataset}.h5",
    log:
        "logs/{study}/prepare/{dataset}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        source=lambda wc: dataset_options(wc.dataset)[0],
        options=lambda wc: cli_args(dataset_options(wc.dataset)[1]),
    shell:
        "sharpminima prepare {params.source} --out {output.h5} "
        "{params.options} > {log} 2>&1"
