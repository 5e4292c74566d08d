"""Every package the code imports is one the project declares, so that the quick start's two
`pip install` lines bring it on a fresh machine. A package that happens to be installed by hand,
or that arrives only as another package's dependency, passes an import and fails a newcomer
(`hypothesis` did, issue 37). conftest runs these tests first, so the name comes in a minute."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import REPO

# Top-level names that are the repository's own: the package, the tests, and the benchmark
# scripts, which import their siblings (`from floor import ...`) as scripts do.
OWN = {"sharpminima", "tests", "benchmarks"} | {p.stem for p in (REPO / "benchmarks").glob("*.py")}
WORKFLOW = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
# Snakemake's files are Python with rules in it: their imports sit on lines of their own.
SMK_IMPORT = re.compile(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", re.M)


def imported(path: Path) -> set[str]:
    """The top-level names of the absolute imports in one file, at any depth of its code."""
    if path.suffix != ".py":
        return set(SMK_IMPORT.findall(path.read_text()))
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def declared() -> dict[str, set[str]]:
    """The distributions the installed metadata says the project asks for: '' for the base
    install, else the extra's name."""
    by_extra: dict[str, set[str]] = {}
    for spec in map(Requirement, requires("sharpminima")):
        extra = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", str(spec.marker or ""))
        key = extra.group(1) if extra else ""
        by_extra.setdefault(key, set()).add(canonicalize_name(spec.name))
    return by_extra


def undeclared(files: list[Path], allowed: set[str]) -> list[str]:
    """'file imports name (distribution)' for each third-party import whose distribution is not
    among `allowed`."""
    owners = packages_distributions()
    problems = []
    for path in files:
        for top in sorted(imported(path) - OWN - set(sys.stdlib_module_names)):
            dists = {canonicalize_name(d) for d in owners.get(top, [])}
            if not dists & allowed:
                where = ", ".join(sorted(dists)) or "no installed distribution"
                name = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
                problems.append(f"{name} imports {top} ({where})")
    return problems


def test_every_import_is_a_declared_distribution():
    """The library and the workflow (quick-start line 1) use the base install only; the tests
    and benchmarks (line 2) may also use the extras."""
    by_extra = declared()
    base, everything = by_extra[""], set().union(*by_extra.values())
    library = sorted((REPO / "src").rglob("*.py")) + WORKFLOW
    checks = sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "benchmarks").rglob("*.py"))
    problems = undeclared(library, base) + undeclared(checks, everything)
    assert not problems, "declare in pyproject.toml's dependencies or extras:\n" + "\n".join(
        problems
    )


def test_the_check_names_an_undeclared_import(tmp_path):
    """A file that imports something the project does not declare is reported by name, and so is
    one no distribution provides; a declared one and the standard library are not."""
    probe = tmp_path / "probe.py"
    probe.write_text("import json\nimport numpy\nimport yaml.loader\nfrom notapackage import x\n")
    assert undeclared([probe], {"numpy"}) == [
        "probe.py imports notapackage (no installed distribution)",
        "probe.py imports yaml (pyyaml)",
    ]


def _base_install() -> set[str]:
    """Every distribution `pip install -e .` brings (extras the base asks for included, the
    test extras not), read from the installed packages' metadata."""
    todo = [Requirement(r) for r in requires("sharpminima") if "extra ==" not in r]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            specs = requires(req.name) or []
        except PackageNotFoundError:
            continue  # a platform-only dependency not installed here
        for spec in map(Requirement, specs):
            extras = req.extras or {""}
            if spec.marker is None or any(spec.marker.evaluate({"extra": e}) for e in extras):
                todo.append(spec)
    return {name for name, _ in seen}


def test_the_base_install_brings_what_the_report_needs():
    """`snakemake --report` (README) once needed pygments, which only the test extras brought;
    snakemake's `reports` extra brings it now, as a dependency of a dependency."""
    base = _base_install()
    for needed in ("pygments", "jinja2", "docutils"):
        assert needed in base, needed
