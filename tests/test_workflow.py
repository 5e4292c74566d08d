"""The Snakemake DAG: dry runs of the default study, and the smoke preset run end to end."""

import subprocess
import sys

import pytest

from sharpminima.store import Run

from .conftest import REPO


def snakemake(workdir, *args, check=True):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            REPO / "Snakefile",
            "--directory",
            workdir,
            "--cores",
            "2",
            *args,
        ],
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout + proc.stderr)
    return proc


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
    assert "results/runs/F1/LB/seed4.h5" in proc.stdout


def test_sensitivity_report_dry_run(tmp_path):
    proc = snakemake(tmp_path, "sensitivity_report", "-n", "--configfile", REPO / "config.yaml")
    counts = job_counts(proc.stdout)
    # trial 0: SB and LB × 2 BN modes × 3 starts × 2 ε, full space
    assert counts["sharpness"] == 24 and counts["train"] == 2 and counts["sensitivity"] == 1
    assert "full_eps0.0005_bnrunning_multistart.json" in proc.stdout


def test_bad_config_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("networks:\n  F1:\n    dataset: cifar10\n")
    proc = snakemake(tmp_path, "-n", "--configfile", REPO / "config.yaml", bad, check=False)
    assert proc.returncode != 0
    assert "networks.F1.dataset is 'cifar10'" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_smoke_preset_runs_whole_chain(tmp_path):
    snakemake(tmp_path, "--configfile", REPO / "workflow/presets/smoke.yaml")
    runs = sorted((tmp_path / "results/runs/F1").glob("*/seed*.h5"))
    assert [p.relative_to(tmp_path / "results/runs/F1").as_posix() for p in runs] == [
        "LB/seed0.h5",
        "LB/seed1.h5",
        "SB/seed0.h5",
        "SB/seed1.h5",
    ]
    lb, sb = Run(tmp_path / "results/runs/F1/LB/seed1.h5"), Run(runs[-1])
    assert sb.attrs["batch_size"] == 32 and lb.attrs["batch_size"] == 50  # 10% of 500
    assert (tmp_path / "logs/train/F1/SB/seed1.log").read_text().count("epoch ") >= 1
    assert lb.attrs["label"] == "LB"
    for n in (2, 3, 4):
        table = (tmp_path / f"results/tables/table{n}.md").read_text()
        assert "| F1 |" in table and "F1 on synthetic" in table
    phi = sorted((tmp_path / "results/sharpness/F1").glob("*/seed*/*.json"))
    assert len(phi) == 2 * 2 * 2  # regimes × trials × spaces
    for kind in ("linear", "curvilinear"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"results/figures/F1/seed0/{kind}.{ext}").stat().st_size > 5000
    # A finished workflow has nothing left to do.
    assert (
        "Nothing to be done"
        in snakemake(tmp_path, "-n", "--configfile", REPO / "workflow/presets/smoke.yaml").stdout
    )
