# Tables 2-4: our numbers (mean ± std over trials) beside the paper's, as CSV and Markdown.


rule tables:
    input:
        runs=all_runs(),
        sharpness=all_sharpness(),
        code=code("tables"),
    output:
        table_outputs(),
    log:
        study_paths("logs/{study}/tables.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        out_dir=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "sharpminima tables --runs {input.runs} --sharpness {input.sharpness} "
        "--out-dir {params.out_dir} > {log} 2>&1"
