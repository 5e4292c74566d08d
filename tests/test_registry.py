"""The stage registry: one list of stages for the CLI and the rules, and each stage's code
derived from the package's imports."""

import json
import subprocess
import sys

import pytest
import yaml

from sharpminima import registry
from sharpminima.analysis import figures
from sharpminima.cli import parser
from sharpminima.registry import EXPERIMENTS, FIGURES, STAGES, code_files, stage_code

from .conftest import REPO


def names(paths) -> set[str]:
    """Files as paths inside the package ("measures/sharpness.py")."""
    return {p.relative_to(registry.PACKAGE).as_posix() for p in paths}


def test_the_walk_follows_imports_at_any_depth_and_inside_functions():
    sharpness = names(stage_code("sharpness"))
    # the solver (imported at the top of sharpness.py) and what store.py imports in turn, from
    # the top level into data/
    solver = {"measures/sharpness.py", "measures/lbfgsb.py", "store.py", "models.py"}
    assert solver | {"data/dataset.py"} <= sharpness
    assert "train/trainer.py" not in sharpness and "train/remedies.py" not in sharpness
    # figures.py imports the landscape's reader inside a function, across subpackages
    assert "measures/landscape.py" in names(stage_code("figure"))
    # Python runs the __init__.py of every package on the way: the top one holds the version
    # every result records
    assert {"__init__.py", "train/__init__.py"} <= names(stage_code("train"))
    assert "measures/__init__.py" not in names(stage_code("train"))


def test_package_data_a_module_names_is_a_code_input():
    assert "analysis/paper_values.csv" in names(stage_code("tables"))
    assert "analysis/paper_values.csv" not in names(stage_code("sharpness"))


def test_each_dataset_source_adds_its_converter():
    kaldi, raw = {"data/kaldi.py", "data/frames.py"}, {"data/timit.py", "data/frames.py"}
    assert names(stage_code("prepare", "timit-kaldi")) >= kaldi | {"data/dataset.py"}
    assert names(stage_code("prepare", "timit-raw")) >= raw | {"data/dataset.py"}
    assert "data/kaldi.py" not in names(stage_code("prepare", "mnist"))


def test_a_new_import_becomes_a_code_input(tmp_path, monkeypatch):
    """What the walk sees is the source, so a module added tomorrow needs no list kept."""
    for name, text in {
        "__init__.py": "",
        "entry.py": "def f():\n    from .helper import g\n",
        "helper.py": "from . import table\nfrom .sub.deep import h\nNAME = 'values.csv'\n",
        "table.py": "",
        "values.csv": "a\n",
        "unrelated.py": "",
        "sub/__init__.py": "",
        "sub/deep.py": "from .. import table\nfrom ..other import x\nfrom . import leaf\n",
        "sub/leaf.py": "NAME = 'values.csv'\n",  # names no file of its own folder
        "other/__init__.py": "",
        "other/x.py": "",  # a submodule imported by name
        "other/y.py": "",  # one that nothing imports
    }.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(registry, "PACKAGE", tmp_path)
    for cached in (registry.imports, registry.package_files):
        cached.cache_clear()
    try:
        assert names(code_files("entry")) == {
            "__init__.py", "entry.py", "helper.py", "table.py", "values.csv",
            "sub/__init__.py", "sub/deep.py", "sub/leaf.py", "other/__init__.py", "other/x.py",
        }  # fmt: skip
        assert names(code_files("sub.leaf")) == {"__init__.py", "sub/__init__.py", "sub/leaf.py"}
    finally:
        for cached in (registry.imports, registry.package_files):
            cached.cache_clear()


# Imports the third-party packages once, then forks a child per stage that imports the stage's
# modules and reports which of the package's modules Python loaded (a fresh interpreter per
# stage spent 3 s each starting PyTorch again).
PROBE = """
import importlib, json, os, sys
import h5py, matplotlib, numpy, pandas, scipy.optimize, torch
found = {}
for stage, modules in json.loads(sys.argv[1]).items():
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        for module in modules:
            importlib.import_module("sharpminima." + module)
        loaded = [m.partition(".")[2] or m for m in sys.modules if m.startswith("sharpminima")]
        os.write(write, " ".join(loaded).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        found[stage] = pipe.read().split()
    os.wait()
print(json.dumps(found))
"""


def test_the_static_walk_holds_every_module_that_importing_a_stage_loads():
    """Python's own imports, stage by stage from a clean slate of the package, never go
    beyond the walk."""
    stages = json.dumps({stage: list(STAGES[stage].modules) for stage in STAGES})
    out = subprocess.run([sys.executable, "-c", PROBE, stages], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    for stage in STAGES:
        assert found[stage], (stage, out.stderr)
        files = {registry.module_file(m.split(".")) for m in found[stage] if m != "sharpminima"}
        assert files <= names(stage_code(stage)), stage
        assert "__init__.py" in names(stage_code(stage))  # `sharpminima` itself: always loaded


def test_reading_the_registry_loads_no_torch():
    """Snakemake reads it for every DAG: it must stay light."""
    probe = "import sys, sharpminima.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_drawing_a_figure_from_a_table_loads_no_torch(tmp_path):
    """A figure job redraws in a second or two: its seconds of PyTorch start-up are left out."""
    csv = tmp_path / "directions.csv"
    csv.write_text("network,regime,seed,fraction_of_phi\nF1,SB,0,0.5\nF1,LB,0,0.2\n")
    probe = (
        "import sys\nfrom sharpminima.cli import main\n"
        f"code = main(['figure', 'directions', {str(csv)!r}, '--out', {str(tmp_path / 'd')!r}])\n"
        "print(code, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.split() == ["0", "False"], out.stderr
    assert (tmp_path / "d.png").stat().st_size > 5000


def test_every_stage_is_a_subcommand_and_every_figure_kind_is_drawn():
    commands = parser()._subparsers._group_actions[0].choices
    assert set(STAGES) <= set(commands)
    for name, stage in STAGES.items():
        assert commands[name].description is None and stage.help
    assert all(callable(getattr(figures, f.function)) for f in FIGURES.values())
    kinds = {e.kind for e in EXPERIMENTS.values() if e.kind}
    assert kinds <= set(FIGURES)


def test_every_experiment_switch_and_stage_section_is_in_the_schema():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert set(schema["properties"]["experiments"]["properties"]) == set(EXPERIMENTS)
    sections = {stage.section for stage in STAGES.values()} - {None}
    assert sections <= set(schema["properties"]), sections - set(schema["properties"])


@pytest.mark.parametrize("stage", ["sharpness", "landscape", "directions", "trajectory"])
def test_measuring_never_runs_the_training_loop(stage):
    assert not {name for name in names(stage_code(stage)) if name.startswith("train/")}
