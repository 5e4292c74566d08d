# Training: one job per (network, regime, seed), iterates kept in one HDF5 per run. Regimes are
# the study's (SB, LB), the sweep's batch sizes and the warm starts (regimes.smk); a
# warm-started run reads its start point from its source run's HDF5 in place.


rule train:
    input:
        data=run_dataset,
        warm=warm_source,
        code=code("train"),
    output:
        run="results/{study}/runs/{network}/{regime}/seed{seed}.h5",
    log:
        "logs/{study}/train/{network}/{regime}/seed{seed}.log",
    benchmark:
        "results/{study}/benchmarks/train/{network}/{regime}/seed{seed}.tsv"
    conda:
        ENV
    threads: config["train_threads"]
    resources:
        mem_mb=lambda wc: mem_of(wc.network, "train"),
        runtime=240,
        gpu=config["gpu"],
    params:
        batch_size=lambda wc: REGIMES[wc.regime].batch_size,
        options=train_options,
    shell:
        "sharpminima train --network {wildcards.network} --data {input.data} "
        "--out {output.run} --seed {wildcards.seed} --batch-size {params.batch_size} "
        "{params.options} --label {wildcards.regime} --threads {threads} > {log} 2>&1"
