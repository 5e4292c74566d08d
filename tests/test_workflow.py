"""The Snakemake DAG: dry runs of the default study, and the smoke preset run end to end."""

import os
import re

import numpy as np
import pytest

from sharpminima.measures.surface import read_surface
from sharpminima.store import Run

from .conftest import REPO, SMOKE, snakemake
from .test_docs import RERUNS, claims


def job_counts(output: str) -> dict[str, int]:
    lines = output[output.index("Job stats:") :].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_default_study_dry_run(tmp_path):
    proc = snakemake(tmp_path, "-n", "--configfile", REPO / "config.yaml")
    counts = job_counts(proc.stdout)
    assert counts == {
        "prepare_dataset": 1,
        "train": 10,
        "sharpness": 40,
        "landscape": 2,
        "figure_parametric": 2,
        "tables": 1,
        "all": 1,
        "total": 57,
    }
    assert "results/f1-mnist/runs/F1/LB/seed4.h5" in proc.stdout


def test_paper_preset_builds_all_six_networks(tmp_path):
    proc = snakemake(tmp_path, "-n", "--configfile", REPO / "workflow/presets/paper.yaml")
    assert job_counts(proc.stdout) == {
        "prepare_dataset": 4,  # MNIST, TIMIT, CIFAR-10, CIFAR-100
        "train": 6 * 2 * 5,  # networks × regimes × trials
        "landscape": 6 * 2,
        "sharpness": 60 * 2 * 2,  # runs × spaces × ε
        "figure_parametric": 12,
        "tables": 1,
        "all": 1,
        "total": 330,
    }
    train_jobs = proc.stdout.split("rule train:")[1:]
    assert len(train_jobs) == 60 and all("gpu=1" in job.split("rule ")[0] for job in train_jobs)


def test_a_network_can_have_its_own_trials_and_panel(tmp_path):
    """fashion-cpu.yaml: F1 on 5 trials with every measure, C1 on 3 capped at 10 epochs with
    φ only, no spectral density and so no density figure; the panel without matched
    trials still writes its tables."""
    preset = REPO / "workflow/presets/fashion-cpu.yaml"
    out = snakemake(tmp_path, "-n", "-p", "--configfile", preset).stdout
    counts = job_counts(out)
    assert (counts["train"], counts["sharpness"], counts["panel_measure"]) == (16, 16, 52)
    assert "matched" not in counts and counts["panel"] == 2
    runs = set(re.findall(r"results/fashion-cpu/runs/(\w+/\w+/seed\d)\.h5", out))
    trials = (("F1", 5), ("C1", 3))
    assert runs == {f"{n}/{r}/seed{s}" for n, k in trials for r in ("SB", "LB") for s in range(k)}
    measures = set(re.findall(r"results/fashion-cpu/\w+/(\w+)/SB/seed0/(\w+)\.json", out))
    assert "C1" not in {n for n, m in measures}
    assert {m for n, m in measures if n == "F1"} >= {"eigenvalues", "trace", "linf", "density"}
    assert "figures/F1/density.png" in out and "figures/C1/density.png" not in out
    c1 = [j for j in out.split("rule train:")[1:] if "--network C1" in j]
    assert len(c1) == 6 and all("--max-epochs 10" in j for j in c1)
    # memory declared per network (networks.C1.mem_mb; F1 keeps the default)
    declared = {
        (rule, "C1" if "/C1/" in job.split("rule ")[0] else "F1"): re.search(r"mem_mb=(\d+)", job)[
            1
        ]
        for rule in ("train", "sharpness", "panel_measure")
        for job in out.split(f"rule {rule}:")[1:]
    }
    assert declared[("train", "C1")] == "20000" and declared[("train", "F1")] == "8000"
    assert declared[("sharpness", "C1")] == "20048" and declared[("panel_measure", "F1")] == "8000"


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_profiles_load(tmp_path, profile):
    proc = snakemake(
        tmp_path,
        "-n",
        "--workflow-profile",
        REPO / "workflow/profiles" / profile,
        "--configfile",
        REPO / "config.yaml",
    )
    out = proc.stdout + proc.stderr
    assert f"workflow specific profile {REPO / 'workflow/profiles' / profile}" in out
    assert job_counts(proc.stdout)["total"] == 57


def gpu_rules() -> set[str]:
    """The rules that declare the `gpu` resource (they train or evaluate networks)."""
    rule = re.compile(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", re.M | re.S)
    found = set()
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        for name, body in rule.findall(smk.read_text()):
            if re.search(r"^\s+gpu=config\[\"gpu\"\]", body, re.M):
                found.add(name)
    return found


def test_the_slurm_profile_gives_a_gpu_to_every_rule_that_declares_one():
    import yaml

    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    asked = {rule for rule, res in profile["set-resources"].items() if res.get("gpu")}
    assert asked == gpu_rules() and {"train", "panel_measure", "surface_part"} <= asked


def test_an_experiment_switch_adds_only_its_jobs(tmp_path):
    switch = tmp_path / "switch.yaml"
    switch.write_text("experiments: {curves: true}\n")
    proc = snakemake(tmp_path, "-n", "--configfile", REPO / "config.yaml", switch)
    counts = job_counts(proc.stdout)
    assert counts["measure"] == 1 and counts["figure_experiment"] == 1 and counts["total"] == 59
    assert "results/f1-mnist/figures/F1/accuracy.png" in proc.stdout


def test_sensitivity_report_dry_run(tmp_path):
    proc = snakemake(tmp_path, "sensitivity_report", "-n", "--configfile", REPO / "config.yaml")
    counts = job_counts(proc.stdout)
    # trial 0: SB and LB × 2 BN modes × 3 starts × 2 ε, full space; × 4 subspaces (A) × 2 ε
    assert counts["sharpness"] == 24 + 16 and counts["train"] == 2
    assert counts["sensitivity"] == 1
    assert "full_eps0.0005_bnrunning_multistart.json" in proc.stdout
    assert "random-uniform-raw_eps0.0005_bnbatch_zero.json" in proc.stdout


@pytest.mark.parametrize(
    "override, words",
    [
        ("trials=0", ["config: trials: 0 is less than the minimum of 1"]),
        ("sharpness={'epsilon': 1}", ["config: sharpness:", "'epsilon' was unexpected"]),
        ("training={'stop': 'never'}", ["config: training.stop: 'never' is not one of"]),
        ("networks={'F1': {'dataset': 'cifar10'}}", ["networks.F1.dataset: 'cifar10' is not"]),
        ("networks={'F9': {'dataset': 'mnist'}}", ["config: networks: 'F9' is not one of"]),
        ("datasets={'mnist': {'source': 'mnist', 'phones': 48}}", ["datasets.mnist: 'phones'"]),
        (
            "networks={'F1': {'dataset': 'mnist', 'mem_mb': {'train': 2.5}}}",
            ["networks.F1.mem_mb.train:", "is not of type 'integer'"],
        ),
    ],
)
def test_bad_config_stops_with_one_line(tmp_path, override, words):
    proc = snakemake(
        tmp_path, "-n", "--configfile", REPO / "config.yaml", "--config", override, check=False
    )
    assert proc.returncode == 1
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert all(w in lines[0] for w in words), lines[0]
    assert "workflow/schemas/" in lines[0] or "datasets" in lines[0]


def test_modern_methods_are_planned_and_their_settings_checked(tmp_path):
    def plan(overlay: str, check=True, experiments="{modern: true}"):
        extra = tmp_path / "modern.yaml"
        extra.write_text(f"experiments: {experiments}\n" + overlay)
        config = REPO / "config.yaml"
        return snakemake(tmp_path, "-n", "--configfile", config, extra, check=check)

    out = plan("").stdout
    assert job_counts(out)["train"] == 10 + 5 * (8 + 3)  # LB with 8 methods, SB with 3
    assert "runs/F1/SB_sam/seed4.h5" in out and "runs/F1/LB_sgdlinear/seed0.h5" in out
    assert "SB_ghost" not in out
    both = "{modern: true, remedies: true}"
    for overlay, words, experiments in [
        ("modern: {lb_only: [nope]}", "modern.lb_only: nope not among modern.methods", None),
        ("modern: {methods: {x: {sam: -1}}}", "modern.methods.x.sam: -1 is less than", None),
        (
            "modern: {methods: {augment: {sam: 0.05}}, lb_only: []}",
            "augment named in both remedies.methods and modern.methods",
            both,
        ),
    ]:
        proc = plan(overlay + "\n", False, experiments or "{modern: true}")
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and words in lines[0], lines


def test_network_training_overrides_are_checked_and_not_filled(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "study: mine\ndatasets: {mnist: {source: mnist}}\n"
        "networks: {F1: {dataset: mnist, training: {patience: 0}}}\n"
    )
    proc = snakemake(tmp_path, "-n", "--configfile", bad, check=False)
    assert "config: networks.F1.training.patience: 0 is less than the minimum of 1" in (
        proc.stdout + proc.stderr
    )
    good = tmp_path / "good.yaml"
    good.write_text(
        "study: mine\ndatasets: {mnist: {source: mnist}}\ntraining: {max_epochs: 7}\n"
        "networks: {F1: {dataset: mnist, training: {patience: 3}}}\n"
    )
    shell = snakemake(
        tmp_path, "results/mine/runs/F1/SB/seed0.h5", "-n", "-p", "--configfile", good
    )
    assert "--max-epochs 7" in shell.stdout and "--patience 3" in shell.stdout


@pytest.mark.slow
def test_smoke_preset_runs_whole_chain(smoke_run):
    runs = sorted((smoke_run / "results/smoke/runs/F1").glob("[LS]B/seed*.h5"))
    assert [p.relative_to(smoke_run / "results/smoke/runs/F1").as_posix() for p in runs] == [
        "LB/seed0.h5",
        "LB/seed1.h5",
        "SB/seed0.h5",
        "SB/seed1.h5",
    ]
    lb, sb = Run(smoke_run / "results/smoke/runs/F1/LB/seed1.h5"), Run(runs[-1])
    assert sb.attrs["batch_size"] == 32 and lb.attrs["batch_size"] == 50  # 10% of 500
    assert (smoke_run / "logs/smoke/train/F1/SB/seed1.log").read_text().count("epoch ") >= 1
    assert lb.attrs["label"] == "LB"
    for n in (2, 3, 4):
        table = (smoke_run / f"results/smoke/tables/table{n}.md").read_text()
        assert "| F1 |" in table and "F1 on synthetic" in table
    phi = sorted((smoke_run / "results/smoke/sharpness/F1").glob("[LS]B/seed*/*.json"))
    assert len(phi) == 2 * 2 * 2  # regimes × trials × spaces
    for kind in ("linear", "curvilinear"):
        for ext in ("png", "pdf"):
            assert (
                smoke_run / f"results/smoke/figures/F1/seed0/{kind}.{ext}"
            ).stat().st_size > 5000
    bench = smoke_run / "results/smoke/benchmarks/train/F1/SB/seed0.tsv"
    assert bench.read_text().startswith("s\th:m:s\tmax_rss")


@pytest.mark.slow
def test_smoke_preset_runs_the_experiments(smoke_run):
    import pandas as pd

    for net in ("F1", "F2", "C1"):
        curves = pd.read_csv(smoke_run / f"results/smoke/experiments/{net}/curves.csv")
        assert set(curves.regime) == {"SB", "LB"} and curves.trials.max() == 2
        distances = pd.read_csv(smoke_run / f"results/smoke/experiments/{net}/distances.csv")
        assert distances.seed.tolist() == [0, 1] and (distances.ratio > 0).all()
        iterations = pd.read_csv(smoke_run / f"results/smoke/experiments/{net}/iterations.csv")
        larger = iterations.batch_l > iterations.batch_s  # C1's 10% of 80 is 8 < 32
        assert (iterations.iters_l[larger] < iterations.iters_s[larger]).all()
        assert larger.any() or net == "C1"
        for figure in ("accuracy", "perfmodel"):
            assert (smoke_run / f"results/smoke/figures/{net}/{figure}.pdf").stat().st_size > 5000
    directions = pd.read_csv(smoke_run / "results/smoke/experiments/F1/directions.csv")
    assert len(directions) == 2 * 2 * 10  # regimes × trials × count
    assert (directions.fraction_of_phi == directions.rise / directions.phi).all()
    assert (smoke_run / "results/smoke/figures/F1/directions.pdf").stat().st_size > 5000
    assert not (smoke_run / "results/smoke/experiments/C1/directions.csv").exists()  # F1 only


@pytest.mark.slow
def test_smoke_preset_computes_the_panel_matched_loss_and_surfaces(smoke_run):
    import json

    import pandas as pd

    results = smoke_run / "results/smoke"
    panel = pd.read_csv(results / "experiments/F1/panel.csv")
    # the study and the methods since the paper; not the sweep's batch 16, nor the warm starts
    assert len(panel) == 7
    assert set(panel.regime) == {"SB", "LB", "LB_sam", "LB_asam", "LB_sgd"}
    for measure in ("phi", "eigenvalues", "trace", "linf", "l2", "average"):
        assert panel[measure].notna().all(), measure
    verdict = pd.read_csv(results / "experiments/F1/verdict.csv")
    assert set(verdict.measure) == {"phi", "eigenvalues", "trace", "linf", "l2", "average"}
    assert (verdict.runs == 7).all() and (verdict.trials == 2).all()
    matched = pd.read_csv(results / "experiments/F1/matched.csv")
    assert {"trained", "all"} <= set(matched.examples) and (matched.trials == 2).all()
    eig = json.loads((results / "curvature/F1/LB/seed0/eigenvalues.json").read_text())
    assert eig["steps"] <= 8 and eig["regime"] == "LB" and eig["versions"]
    for dims, shape in ((1, (3, 1)), (2, (3, 3))):
        surface = read_surface(results / f"surface/F1/LB/seed0/{dims}d.h5")[1]
        assert surface["train_loss"].shape == shape and np.isfinite(surface["train_loss"]).all()
        figure = results / f"figures/F1/LB/seed0/surface{dims}d.png"
        assert figure.stat().st_size > 5000
    for figure in ("panel", "density", "methods"):
        assert (results / f"figures/F1/{figure}.png").stat().st_size > 5000


@pytest.mark.slow
def test_smoke_preset_runs_figures_4_5_6_on_f1(smoke_run):
    import pandas as pd

    experiments = smoke_run / "results/smoke/experiments"
    trajectory = pd.read_csv(experiments / "F1/trajectory.csv")
    for (regime, bn), points in trajectory.groupby(["regime", "bn"]):
        last = Run(smoke_run / f"results/smoke/runs/F1/{regime}/seed0.h5").attrs["epochs"]
        assert points.epoch.tolist() == list(range(last + 1)), (regime, bn)
    assert set(trajectory.bn) == {"batch", "running"} and (trajectory.nit == 3).all()
    sweep = pd.read_csv(experiments / "F1/sweep.csv")
    # 32 and 10% (50) are the study's SB and LB: their runs are reused, not retrained.
    assert sweep.regime.tolist() == ["b16", "SB", "LB"] and sweep.batch_size.tolist() == [
        16,
        32,
        50,
    ]
    assert sweep.trials.tolist() == [2, 2, 2]
    assert sorted(p.name for p in (smoke_run / "results/smoke/runs/F1").iterdir()) == [
        "LB", "LB_asam", "LB_sam", "LB_sgd", "SB", "b16", "warm_LB0", "warm_LB1", "warm_LB2",
        "warm_SB",
    ]  # fmt: skip
    warm = pd.read_csv(experiments / "F1/warmstart.csv")
    assert warm.warm_epoch.tolist() == [0, 1, 2] and (warm.lb_epochs == 1).all()
    source = Run(smoke_run / "results/smoke/runs/F1/warm_SB/seed0.h5")
    assert warm.sb_test_acc.tolist() == source.history.test_acc.tolist()
    lb = Run(smoke_run / "results/smoke/runs/F1/warm_LB1/seed0.h5")
    assert lb.attrs["warm_run"] == "results/smoke/runs/F1/warm_SB/seed0.h5"  # read in place
    assert all(v.equal(source.state(1)[k]) for k, v in lb.state("init").items())
    for figure in ("trajectory", "sweep", "warmstart"):
        assert (smoke_run / f"results/smoke/figures/F1/{figure}.pdf").stat().st_size > 5000
    assert not (smoke_run / "results/smoke/figures/F2/sweep.png").exists()  # sweep.networks: [F1]


@pytest.mark.slow
def test_smoke_preset_trains_each_remedy_on_c1(smoke_run):
    import pandas as pd

    table = pd.read_csv(smoke_run / "results/smoke/experiments/C1/remedies.csv")
    remedies = [m.split(" ")[0] for m in table.remedy.unique()]
    assert remedies == ["none", "augmentation", "conservative"]
    assert {tuple(sorted(r)) for _, r in table.groupby("remedy").regime} == {("LB", "SB")}
    run = Run(smoke_run / "results/smoke/runs/C1/LB_conservative/seed0.h5")
    assert run.attrs["proximal"] == 0.001 and run.attrs["proximal_steps"] == 3
    assert Run(smoke_run / "results/smoke/runs/C1/SB_augment/seed0.h5").attrs["augment"]
    assert "| none |" in (smoke_run / "results/smoke/experiments/C1/remedies.md").read_text()
    assert (smoke_run / "results/smoke/figures/C1/remedies.pdf").stat().st_size > 5000


@pytest.mark.slow
def test_smoke_preset_trains_the_methods_since_the_paper_and_compares_them(smoke_run):
    import pandas as pd

    for net in ("F1", "C1"):
        runs = smoke_run / f"results/smoke/runs/{net}"
        sam = Run(runs / "LB_sam/seed0.h5").attrs
        assert (sam["sam"], sam["ghost_batch"], sam["lr_scaling"]) == (0.05, 8, "sqrt")
        asam = Run(runs / "LB_asam/seed0.h5")
        assert asam.attrs["sam_adaptive"] and "batch_size" in asam.history  # the ramp's
        sgd = Run(runs / "LB_sgd/seed0.h5").attrs
        linear = sgd["lr"] * sgd["batch_size"] / sgd["lr_base_batch"]  # 256: scaled down here
        assert sgd["optimizer"] == "sgd" and sgd["peak_lr"] == pytest.approx(linear)
        assert not (runs / "SB_sam").exists()  # lb_only
    methods = pd.read_csv(smoke_run / "results/smoke/experiments/F1/methods.csv")
    by = methods.set_index("regime")
    assert by.method["LB_asam"].startswith("ASAM ρ=0.5") and by.method["LB"] == "none"
    assert by.below_sb["SB"] == 0 and by.phi.notna().all() and by.eigenvalues.notna().all()
    assert "| method |" in (smoke_run / "results/smoke/experiments/F1/methods.md").read_text()


def test_augmentation_is_left_out_where_inputs_are_not_images(tmp_path):
    overlay = tmp_path / "remedies.yaml"
    overlay.write_text("remedies: {networks: [F2, C1], trials: 1}\n")
    plan = snakemake(tmp_path, "-n", "--configfile", SMOKE, overlay).stdout
    assert "results/smoke/runs/C1/SB_augment/seed0.h5" in plan
    assert "results/smoke/runs/F2/SB_conservative/seed0.h5" in plan
    assert "F2/SB_augment" not in plan and "F2/LB_augment" not in plan


@pytest.mark.slow
def test_smoke_preset_trains_f2_and_c1_for_one_epoch(smoke_run):
    for net, shape, classes in (("F2", [360], 39), ("C1", [3, 32, 32], 10)):
        for regime in ("SB", "LB"):
            run = Run(smoke_run / f"results/smoke/runs/{net}/{regime}/seed0.h5")
            assert run.attrs["epochs"] == 1 and run.attrs["num_classes"] == classes
            assert list(run.data(smoke_run / run.attrs["dataset_file"]).input_shape) == shape
        assert len(list((smoke_run / f"results/smoke/sharpness/{net}").glob("[LS]B/*/*.json"))) == 8
        assert (smoke_run / f"results/smoke/figures/{net}/seed0/linear.png").is_file()
        assert f"| {net} |" in (smoke_run / "results/smoke/tables/table2.md").read_text()


def rerun_plan(workdir, overlay: str = "") -> tuple[dict[str, int], set[str]]:
    """Jobs (per rule) and reasons of a dry run of the smoke preset with `overlay` merged in."""
    extra = workdir / "overlay.yaml"
    extra.write_text(overlay or "{}\n")
    out = snakemake(workdir, "-n", "--configfile", SMOKE, extra).stdout
    if "Nothing to be done" in out:
        return {}, set()
    return job_counts(out), set(re.findall(r"reason: ([^;\n]+)", out))


@pytest.mark.slow
def test_finished_run_reruns_nothing(smoke_run):
    assert rerun_plan(smoke_run) == ({}, set())
    # Reordered keys are the same settings.
    reordered = "figures: {dpi: 300, font_size: 8, height: 2.4, width: 3.4}\n"
    assert rerun_plan(smoke_run, reordered) == ({}, set())


def planned_jobs(output: str) -> list[tuple[str, list[str], str | None, str]]:
    """(rule, inputs, log, reason) of every job a dry run prints."""
    jobs = []
    for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\[|\Z)", output, re.M | re.S):
        inputs, log, reason = (
            re.search(rf"^    {key}: (.*)$", body, re.M) for key in ("input", "log", "reason")
        )
        files = inputs.group(1).split(", ") if inputs else []
        jobs.append((rule, files, log and log.group(1), reason and reason.group(1)))
    return jobs


def code_modules(inputs: list[str]) -> set[str]:
    """The dotted names inside the package ("measures.sharpness", "measures" for its
    __init__.py) of the source files among a job's inputs."""
    files = [p.split("/src/sharpminima/")[1] for p in inputs if "/src/sharpminima/" in p]
    return {f.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for f in files}


# Modules every job loads that compute nothing: argument parsing (cli/ and its modules), the
# stage list and the CPU count that caps --threads. The rules pass every option explicitly, so
# these are not code inputs (docs/architecture.md).
COMMAND_LINE = {"cli", "registry", "cpus", "__main__"}
MEASURING = ("sharpness", "landscape", "directions", "trajectory", "measure", "figure", "tables",
             "panel", "matched", "surface")  # fmt: skip


@pytest.mark.slow
def test_every_module_a_job_imports_is_among_its_code_inputs(smoke_run):
    """The smoke run's jobs ran with PYTHONPROFILEIMPORTTIME: each log names every module of
    the package that the job really imported, at any depth and inside any function."""
    jobs = planned_jobs(snakemake(smoke_run, "-n", "--forceall", "--configfile", SMOKE).stdout)
    checked = set()
    for rule, inputs, log, _ in jobs:
        if not log:
            continue
        profile = (smoke_run / log).read_text()
        imported = set(re.findall(r"\|\s+sharpminima\.([\w.]+)$", profile, re.M))
        assert imported, (rule, log)  # the log holds the import profile
        computing = {m for m in imported if m.split(".")[0] not in COMMAND_LINE}
        assert computing <= code_modules(inputs), (rule, log, computing - code_modules(inputs))
        if rule.startswith(MEASURING):  # measuring never runs the training loop
            trainer = {m for m in imported | code_modules(inputs) if m.split(".")[0] == "train"}
            assert not trainer, (rule, log, trainer)
        checked.add(rule)
    assert len(checked) == 16, checked  # every rule that runs a command


# What an edit to each module reruns in a finished smoke run: the rules that hold it among their
# code inputs, and all the jobs the dry run plans.
EVERY_PHI = {
    # + sweep's batch 16 (2 trials), 3 warm starts, 2 × 2 remedies, 2 × 3 methods since the paper
    "sharpness": 24 + 2 + 3 + 4 + 6,
    "directions": 1,
    "trajectory": 1,
    "measure": 3,  # Figures 4 and 5, Table 6
    "matched": 2,  # φ of each trial's SB and LB at matched loss
    "panel": 1,
    "figure_experiment": 1 + 3 + 1 + 3,  # directions, Figs. 4-6, App. E, the panel's three
    "tables": 1,
    "all": 1,
}
ALL_BUT_DATA = {
    "train": 22 + 6,  # + the methods since the paper (F1 and C1: 3 each)
    "sharpness": 33 + 6,
    "landscape": 6,
    "measure": 9 + 3,
    "directions": 1,
    "trajectory": 1,
    "figure_parametric": 6,
    "figure_experiment": 14,
    "panel_measure": 7 * 5 + 2,  # F1's 7 runs (study, methods) × 5 measures, 2 densities
    "matched": 2,
    "panel": 1,
    "surface_part": 4,  # F1 LB trial 0: a line and a plane, 2 parts each
    "surface": 2,
    "figure_surface": 2,
    "tables": 1,
    "all": 1,
}
FIGURES_ONLY = {"figure_parametric": 6, "figure_experiment": 14, "figure_surface": 2, "all": 1}
EDITS = {
    "measures/lbfgsb.py": ({"sharpness", "directions", "trajectory", "matched"}, EVERY_PHI),
    "train/trainer.py": ({"train"}, ALL_BUT_DATA),
    "models.py": (set(ALL_BUT_DATA) - {"all"}, ALL_BUT_DATA),
    "analysis/figures.py": (
        {"figure_parametric", "figure_experiment", "figure_surface"},
        FIGURES_ONLY,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("module", EDITS)
def test_an_edited_module_reruns_exactly_the_jobs_that_run_it(smoke_run, module):
    """Append a comment to a module of the repository, dry-run, put the file back as it was."""
    path = REPO / "src" / "sharpminima" / module
    text, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(text + b"# an edit\n")
        out = snakemake(smoke_run, "-n", "--configfile", SMOKE).stdout
    finally:
        path.write_bytes(text)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    holders, plan = EDITS[module]
    jobs = planned_jobs(out)
    held = {rule for rule, inputs, _, _ in jobs if f"/sharpminima/{module}" in ",".join(inputs)}
    # the jobs whose reason is the edit itself (the others rerun because their inputs do)
    edited = {rule for rule, _, _, reason in jobs if f"/sharpminima/{module}" in (reason or "")}
    assert held == holders and edited and edited <= holders, (held, edited)
    assert job_counts(out) == {**plan, "total": sum(plan.values())}
    quoted = [(file, n) for file, _, n, (edit,) in claims(RERUNS) if edit == module]
    assert quoted and all(n == sum(plan.values()) for _, n in quoted), quoted  # docs' plans


@pytest.mark.slow
def test_figure_style_change_redraws_figures_only(smoke_run):
    counts, reasons = rerun_plan(smoke_run, "figures: {dpi: 150, font_size: 9}\n")
    # F1, F2, C1 × (2 parametric plots; Figure 2, Appendix C); F1: random directions, Figs. 4-6,
    # the panel's three and the surfaces' two; C1: Appendix E's remedies
    assert counts == {**FIGURES_ONLY, "total": 23}
    assert any(r.startswith("Params have changed since last execution") for r in reasons)


@pytest.mark.slow
def test_sharpness_change_never_retrains(smoke_run):
    counts, _ = rerun_plan(smoke_run, "sharpness: {eps: [0.002], spaces: [full, random]}\n")
    # + the panel's φ (first ε) of the methods since the paper (F1 and C1: 3 each), and the panel
    panel = {"panel": 1, "figure_experiment": 3, "matched": 2}
    assert counts == {"sharpness": 24 + 6, **panel, "tables": 1, "all": 1, "total": 38}
    counts, reasons = rerun_plan(smoke_run, "sharpness: {iters: 4}\n")
    # Every φ follows, with what reads φ: random directions (ε = 1e-3), Figure 6's trajectory,
    # the φ of the sweep's and warm starts' runs (Figures 4 and 5) and of the remedies' runs
    # (Table 6), of the methods since the paper, the panel, but no training.
    assert counts == {**EVERY_PHI, "total": 57}
    assert any(r.startswith("Params have changed since last execution") for r in reasons)


@pytest.mark.slow
def test_fewer_matched_trials_rerun_the_panel_only(smoke_run):
    counts, reasons = rerun_plan(smoke_run, "panel: {matched_trials: [1]}\n")
    # seed 1's matched job is there already; the panel reads one CSV fewer
    assert counts == {"panel": 1, "figure_experiment": 3, "all": 1, "total": 5}
    assert any(r.startswith("Set of input files has changed") for r in reasons)


# The jobs of one smoke network's chain after its runs change (2 regimes × 2 trials): F2's;
# F1 also has random directions (their job and figure), and more below.
ONE_NETWORK = {
    "train": 4,
    "sharpness": 8,
    "landscape": 2,
    "figure_parametric": 2,
    "measure": 3,
    "figure_experiment": 2,
    "tables": 1,
    "all": 1,
}


@pytest.mark.slow
def test_training_change_reruns_that_network_and_descendants(smoke_run):
    counts, reasons = rerun_plan(
        smoke_run, "networks: {F1: {dataset: tiny, training: {max_epochs: 2}}}\n"
    )
    # F1 also runs Figures 4-6: the sweep's batch 16 (2 trials) follows the protocol, so it
    # retrains, as do the 3 runs of the methods since the paper; the warm starts fix their own
    # epochs, so max_epochs leaves them as they are.
    assert counts == {
        **ONE_NETWORK,
        "train": 4 + 2 + 3,
        "sharpness": 8 + 2 + 3,
        "trajectory": 1,
        "measure": 3 + 1,  # + the sweep's
        "directions": 1,
        "figure_experiment": 2 + 1 + 2 + 3,
        "panel_measure": (4 + 3) * 5 + 2,  # the panel of those runs (not the sweep's, warm starts')
        "matched": 2,
        "panel": 1,
        "surface_part": 4,
        "surface": 2,
        "figure_surface": 2,
        "total": 90,
    }  # no prepare_dataset
    assert any(r.startswith("Params have changed since last execution") for r in reasons)


@pytest.mark.slow
def test_dataset_change_reprepares_it_and_its_network_only(smoke_run):
    counts, _ = rerun_plan(smoke_run, "datasets: {tiny_timit: {seed: 5}}\n")
    assert counts == {"prepare_dataset": 1, **ONE_NETWORK, "total": 24}  # F2's chain


@pytest.mark.slow
def test_report_gathers_tables_and_figures_with_captions(smoke_run):
    snakemake(smoke_run, "--configfile", SMOKE, "--report", "report.html")
    html = (smoke_run / "report.html").read_text()
    captions = ("small-batch minimizer", "Appendix C", "random unit directions",
                "against its generalization gap",
                "each panel measure of the large-batch runs")  # fmt: skip
    for words in (
        "Tables 2-4",
        "Figures 3 and 7: parametric plots",
        "Further experiments",
        *captions,
    ):
        assert words in html, words
    assert rerun_plan(smoke_run) == ({}, set())  # a report changes nothing


@pytest.mark.slow
def test_timit_datasets_prepare_from_config_paths(tmp_path):
    from sharpminima.data.dataset import load_dataset

    from .test_kaldi import DIM, write_split
    from .test_timit import write_utt

    kaldi = tmp_path / "elsewhere"
    write_split(kaldi / "tr", {"a": ("s", 9), "b": ("s", 4)}, seed=0)
    write_split(kaldi / "te", {"c": ("t", 5)}, seed=1)
    rng = np.random.default_rng(0)
    write_utt(tmp_path / "corpus" / "TRAIN" / "DR1" / "FCJF0", "SI648", rng)
    write_utt(tmp_path / "corpus" / "TEST" / "DR1" / "MDAB0", "SX49", rng)
    config = tmp_path / "timit.yaml"
    config.write_text(
        "study: timit\ndatasets:\n"
        f"  kaldi_timit: {{source: timit-kaldi, train: {kaldi}/tr, test: {kaldi}/te,"
        f" train_ali: [{kaldi}/tr/pdf.ark], test_ali: [{kaldi}/te/pdf.ark], context: 2,"
        " cmvn: mean}\n"
        f"  raw_timit: {{source: timit-raw, corpus: {tmp_path}/corpus, phones: 48}}\n"
        "networks: {F2: {dataset: kaldi_timit}}\n"
    )
    targets = ["results/timit/data/kaldi_timit.h5", "results/timit/data/raw_timit.h5"]
    snakemake(tmp_path, *targets, "--configfile", config)
    kaldi_ds, raw_ds = (load_dataset(tmp_path / t) for t in targets)
    assert kaldi_ds.input_shape == (5 * DIM,) and len(kaldi_ds.x_train) == 13
    assert raw_ds.num_classes == 48 and raw_ds.input_shape == (360,)
    log = (tmp_path / "logs/timit/prepare/kaldi_timit.log").read_text()
    assert "train: 2 utterances, 13 frames" in log


@pytest.mark.slow
def test_the_default_study_and_the_smoke_preset_coexist(smoke_run):
    """Each study has its own tree: planning the default study in the smoke run's checkout
    touches nothing of the smoke study's, which still needs nothing rerun."""
    plan = snakemake(smoke_run, "-n", "--configfile", REPO / "config.yaml").stdout
    outputs = [p for line in re.findall(r"output: (.*)", plan) for p in line.split(", ")]
    assert len(outputs) > 50
    assert all(p.startswith(("results/f1-mnist/", "logs/f1-mnist/")) for p in outputs), outputs
    assert "results/smoke" not in plan and "logs/smoke" not in plan
    assert rerun_plan(smoke_run) == ({}, set())
