"""Config values that become paths, wildcards and shell words (docs/reliability.md): whatever
a config names its study, datasets and regimes, the dry run either stops with one line or
plans only files under results/<study>/ and logs/<study>/, each job one shell command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from .conftest import snakemake

HOSTILE = "aZ09._-/ \n\t;|&$`'\"*?~<>(){}\\#!%,="
NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]*")
REGIME = re.compile(r"[A-Za-z0-9_]+")
OURS = {">", "2>&1"}  # the only shell operators a job line holds: its log redirection
names = st.text(alphabet=HOSTILE, min_size=1, max_size=6)


def plan(workdir: Path, study: str, dataset: str, regime: str) -> tuple[int, str]:
    """A dry run of a one-network study whose names are those given."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "study": study,
        "datasets": {dataset: {"source": "synthetic", "n_train": 60, "n_test": 20,
                               "input_shape": [1, 28, 28], "classes": 10}},
        "networks": {"F1": {"dataset": dataset}},
        "regimes": {regime: 32, "LB": 0.1},
        "landscape_regimes": [regime, "LB"],
        "trials": 1,
    }  # fmt: skip
    path = workdir / "mine.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    proc = snakemake(workdir, "-n", "-p", "--configfile", path, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def planned(out: str) -> tuple[list[str], list[str]]:
    """The paths (outputs and logs) and the shell commands a dry run printed, job by job."""
    paths, commands = [], []
    for block in out.split("\n\n"):
        for line in block.splitlines():
            key, _, value = line.strip().partition(": ")
            if key in ("output", "log"):
                paths += value.split(", ")
        if "Shell command: " in block:
            command = block.split("Shell command: ", 1)[1].split("\nJob stats:")[0]
            if command != "None":  # rule all
                commands.append(command)
    return paths, commands


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(study=names, dataset=names, regime=names)
@example(study="mine\n", dataset="tiny", regime="SB")  # a trailing newline: `$` accepts it
@example(study="mine", dataset="../../evil", regime="SB")  # a job writing outside the tree
@example(study="a;touch x", dataset="tiny", regime="SB")  # a second command
@example(study="a..b", dataset="tiny", regime="SB")
@example(study="mine", dataset="tiny", regime="SB\n")
@example(study="mine", dataset="tiny", regime="SB")  # the safe case plans jobs
def test_config_names_never_leave_the_tree_or_split_a_command(tmp_path, study, dataset, regime):
    code, out = plan(tmp_path / "w", study, dataset, regime)
    assert "Traceback" not in out, out
    if code != 0:  # refused: one line, naming the key
        lines = out.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("config: "), out
        return
    assert NAME.fullmatch(study) and NAME.fullmatch(dataset) and REGIME.fullmatch(regime)
    paths, commands = planned(out)
    assert paths and len(commands) > 5, out
    root = (tmp_path / "w").resolve()
    allowed = [root / "results" / study, root / "logs" / study]
    for path in paths:
        resolved = (tmp_path / "w" / path).resolve()
        assert any(resolved.is_relative_to(a) for a in allowed), path
    for command in commands:
        assert "\n" not in command.strip(), command
        operators = {t for t in shlex.split(command) if re.fullmatch(r"[;&|<>()0-9]*[;&|<>]+.*", t)}
        assert operators <= OURS, (command, operators)


# A study of one network on data config.yaml does not name, written as a user's own config.
C1_ONLY = """datasets:
  syn: {source: synthetic, n_train: 60, n_test: 20, input_shape: [3, 32, 32], classes: 10}
networks:
  C1: {dataset: syn}
"""


def planned_paths(out: str) -> list[str]:
    """Every output and log file a dry run plans."""
    lines = re.findall(r"^    (?:output|log): (.*)$", out, re.M)
    return [path for line in lines for path in line.split(", ")]


def test_a_config_of_your_own_without_a_study_stops_at_the_repository_root(repo_root, dry_run):
    """Beside config.yaml, as a user runs it: Snakemake would merge the file over config.yaml,
    and the study's name with it; the Snakefile reads config.yaml only when no file is given."""
    (repo_root / "nostudy.yaml").write_text(C1_ONLY)
    proc = dry_run("--configfile", "nostudy.yaml")
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "config: study is missing" in lines[0]


def test_a_config_naming_another_network_plans_that_network_only(repo_root, dry_run):
    (repo_root / "c1-only.yaml").write_text("study: mine\n" + C1_ONLY)
    alone = dry_run("--configfile", "c1-only.yaml")
    paths = planned_paths(alone.stdout)
    assert alone.returncode == 0 and paths, alone.stderr
    assert all(p.startswith(("results/mine/", "logs/mine/")) for p in paths), paths
    assert {p.split("/")[3] for p in paths if "/runs/" in p} == {"C1"}
    assert not any("mnist" in p for p in paths)  # config.yaml's dataset
    # Given after config.yaml, it builds on the default study, in its own tree
    both = dry_run("--configfile", "config.yaml", "c1-only.yaml")
    paths = planned_paths(both.stdout)
    assert all(p.startswith(("results/mine/", "logs/mine/")) for p in paths), paths
    assert {p.split("/")[3] for p in paths if "/runs/" in p} == {"F1", "C1"}
