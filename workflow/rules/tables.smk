# Tables 2-4: our numbers (mean ± std over trials) beside the paper's, as CSV and Markdown.


rule tables:
    input:
        runs=all_runs(),
        sharpness=all_sharpness(),
        code=src("data", "models", "store", "tables", "paper_values.csv"),
    output:
        table_outputs(),
    log:
        "logs/tables.log",
    conda:
        "../../envs/sharpminima.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "sharpminima tables --runs {input.runs} --sharpness {input.sharpness} "
        "--out-dir results/tables > {log} 2>&1"
