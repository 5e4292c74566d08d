"""The smoke preset's F1 part on a real single-node SLURM cluster, through
workflow/profiles/slurm.

tests/slurm/cluster.sh installs Debian's slurm-wlm and munge (upgrading nothing the host has),
starts the daemons on loopback without accounting (finished jobs stay in squeue for an hour,
where the executor plugin reads their states), and stops every daemon it started by PID. The
outputs must equal a local run's: same code, same threads, same CPU, so the same bits. Only one
target of each rule that runs on a node is sent, from F1's chain of trial 0 (more instances of
the same rules add nothing the profile could get wrong, and the node's two GPUs run GPU jobs two
at a time: sending the whole F1 chain took 12 of CI's minutes with one). `directions` is left
out: it needs both trials' runs and φ, twice the jobs, for one more line of set-resources that
test_workflow already checks against the rules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from sharpminima.measures.landscape import read_landscape
from sharpminima.store import Run

from .conftest import REPO, SMOKE

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to install and start munged, mariadbd and the SLURM daemons"
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        return "needs Debian's slurm-wlm and munge (apt-get)"
    return None


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """The environment of a client of a freshly started cluster; the cluster stops after."""
    reason = _missing()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the SLURM test, but it {reason}")
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm") / "cluster"
    before = _packages()
    subprocess.run(["bash", CLUSTER, "install"], check=True)
    assert before <= _packages(), f"install changed {sorted(before - _packages())}"
    subprocess.run(["bash", CLUSTER, "start", folder], check=True)
    try:
        yield {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    finally:
        subprocess.run(["bash", CLUSTER, "stop", folder], check=True)
    assert not (folder / "pids").exists()


def _packages() -> set[str]:
    """Every installed Debian package with its version."""
    query = ["dpkg-query", "-W", "-f", "${Package}:${Architecture} ${Version}\\n"]
    return set(subprocess.run(query, capture_output=True, text=True, check=True).stdout.split("\n"))


def gpu_rules_of_profile() -> tuple[str, ...]:
    """The rules the profile gives a GPU (every rule that declares one: test_workflow.py)."""
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    return tuple(rule for rule, res in profile["set-resources"].items() if res.get("gpu"))


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def assert_same_results(a: Path, b: Path) -> None:
    """Every result file of `a` in `b` too; runs, φ and landscapes equal to the bit."""
    assert _files(a / "results") <= _files(b / "results")
    for run in (a / "results/smoke/runs").rglob("*.h5"):
        ours, theirs = Run(run), Run(b / run.relative_to(a))
        mine, other = ours.model("final").state_dict(), theirs.model("final").state_dict()
        assert all(torch.equal(mine[k], other[k]) for k in mine), run
        times = ["seconds", "eval_seconds"]  # wall clock, the one thing allowed to differ
        pd.testing.assert_frame_equal(
            ours.history.drop(columns=times), theirs.history.drop(columns=times)
        )
    for phi in (a / "results/smoke/sharpness").rglob("*.json"):
        ours, theirs = json.loads(phi.read_text()), json.loads((b / phi.relative_to(a)).read_text())
        for key in ("phi", "f_x", "f_max", "nit", "nfev", "message", "threads"):
            assert ours[key] == theirs[key], (phi, key)
    for stage in ("curvature", "adaptive"):
        for result in (a / "results/smoke" / stage).rglob("*.json"):
            ours = json.loads(result.read_text())
            theirs = json.loads((b / result.relative_to(a)).read_text())
            assert ours.pop("seconds") > 0 and theirs.pop("seconds") > 0
            assert ours == theirs, result
    for line in (a / "results/smoke/landscape").rglob("*.h5"):
        ours, theirs = read_landscape(line)[1], read_landscape(b / line.relative_to(a))[1]
        for key in ours:
            assert (ours[key] == theirs[key]).all(), (line, key)


# F1's chain of trial 0, one target of each rule that runs on a node but `directions`: the
# study's φ (full space), one parametric figure (landscape), Figure 6's trajectory and one
# measure of each panel stage. Every other job of the smoke preset is another instance of these.
TARGETS = [
    "results/smoke/sharpness/F1/SB/seed0/full_eps0.001_bnbatch_zero.json",
    "results/smoke/sharpness/F1/LB/seed0/full_eps0.001_bnbatch_zero.json",
    "results/smoke/figures/F1/seed0/linear.png",
    "results/smoke/experiments/F1/trajectory.csv",
    "results/smoke/curvature/F1/LB/seed0/eigenvalues.json",
    "results/smoke/adaptive/F1/SB/seed0/linf.json",
]  # fmt: skip


@pytest.mark.slow
def test_smoke_preset_through_slurm_matches_local_run(slurm_env, smoke_run, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "--directory", tmp_path]
        + TARGETS
        + ["--workflow-profile", REPO / "workflow/profiles/slurm", "--configfile", SMOKE]
        + ["--slurm-init-seconds-before-status-checks", "2", "--slurm-status-command", "squeue"]
        + ["--seconds-between-status-checks", "1"],  # not 10: each wave of jobs waits for it
        env=slurm_env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    squeue = subprocess.run(
        ["squeue", "-t", "all", "--json"], env=slurm_env, capture_output=True, text=True, check=True
    ).stdout
    jobs = json.loads(squeue)["jobs"]
    rules = sorted(job["comment"].split("_wildcards")[0] for job in jobs)
    # Every job but the local rules (figures) went through SLURM and completed; the ones that
    # train or evaluate networks asked for a GPU.
    assert rules.count("rule_train") == 2 and rules.count("rule_sharpness") == 2, rules
    assert rules.count("rule_trajectory") == 1 and rules.count("rule_panel_measure") == 2, rules
    assert not any(r.startswith(("rule_tables", "rule_figure")) for r in rules), rules
    gpu_rules = gpu_rules_of_profile()
    for job in jobs:
        assert job["job_state"] == "COMPLETED", job
        needs_gpu = job["comment"].startswith(tuple(f"rule_{r}_" for r in gpu_rules))
        asked = "gres:gpu:1" in (job["tres_per_job"], job["tres_per_node"])
        assert asked == needs_gpu, job
    assert_same_results(tmp_path, smoke_run)
    assert not (tmp_path / "results/smoke/runs/F2").exists()
