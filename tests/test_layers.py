"""The package's layers, as its folders show them, and no import that runs upward.

From the bottom: the shared ground (the top level's modules), the datasets (data/), the run store
(store.py), then the trainer (train/) and the measures (measures/) side by side, the analyses
(analysis/), and the command line (cli/ and __main__.py) on top. A module may import its own
layer and the layers below it; the trainer and the measures never import each other (a
measurement never needs the training loop), and nothing imports the command line. The imports
are read by the registry's walk, the one that derives every job's code inputs.
"""

from __future__ import annotations

from sharpminima import registry

from .test_dependencies import imported

RANK = {"ground": 0, "data": 1, "store": 2, "train": 3, "measures": 3, "analysis": 4, "cli": 5}


def layer(file: str) -> str:
    """The layer of a file inside the package ("measures/sharpness.py" -> measures)."""
    folder, _, name = file.rpartition("/")
    if folder:
        return folder.split("/")[0]
    return {"store.py": "store", "__main__.py": "cli"}.get(name, "ground")


def upward(edges: list[tuple[str, str]]) -> list[str]:
    """'a imports b (layer → layer)' for every import that leaves its layer for one that is not
    below it."""
    bad = []
    for source, target in edges:
        a, b = layer(source), layer(target)
        if a != b and RANK[b] >= RANK[a]:
            bad.append(f"{source} imports {target} ({a} → {b})")
    return bad


def package_edges() -> list[tuple[str, str]]:
    modules = sorted(f for f in registry.package_files() if f.endswith(".py"))
    return [(m, target) for m in modules for target in sorted(registry.imports(m))]


def test_every_folder_is_a_layer():
    folders = {f.split("/")[0] for f in registry.package_files() if "/" in f}
    assert folders == set(RANK) - {"ground", "store"}
    assert all(f"{folder}/__init__.py" in registry.package_files() for folder in folders)


def test_no_import_runs_upward():
    edges = package_edges()
    assert len(edges) > 100  # the walk saw the package
    assert upward(edges) == []


def test_the_package_imports_itself_relatively():
    """The walk follows relative imports: an absolute `sharpminima` import inside the package
    would escape both this check and the jobs' code inputs."""
    files = sorted(f for f in registry.package_files() if f.endswith(".py"))
    absolute = [f for f in files if "sharpminima" in imported(registry.PACKAGE / f)]
    assert absolute == []


def test_a_planted_upward_import_is_named():
    planted = [
        ("data/dataset.py", "errors.py"),  # down: fine
        ("analysis/panel.py", "measures/curvature.py"),  # down: fine
        ("measures/sharpness.py", "train/trainer.py"),  # side by side: refused
        ("store.py", "measures/objective.py"),  # up
        ("models.py", "store.py"),  # up
        ("analysis/figures.py", "cli/common.py"),  # the command line
    ]
    assert upward(planted) == [
        "measures/sharpness.py imports train/trainer.py (measures → train)",
        "store.py imports measures/objective.py (store → measures)",
        "models.py imports store.py (ground → store)",
        "analysis/figures.py imports cli/common.py (analysis → cli)",
    ]
