"""The README's promises that can be checked mechanically."""

import re

from .conftest import REPO


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, re.S).group(1)
    lines = block.strip().splitlines()
    assert len(lines) == 2, "the quick start is exactly two lines"
    assert lines[0].startswith("pip install -e . && snakemake --cores 8")
    assert lines[1] in (REPO / ".ci/run").read_text().splitlines()


def test_every_subcommand_is_documented():
    readme = (REPO / "README.md").read_text()
    from sharpminima.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"sharpminima {name}" in readme, name


def _base_install() -> set[str]:
    """Every distribution `pip install -e .` brings (extras the base asks for included, the
    test extras not), read from the installed packages' metadata."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

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


def test_the_base_install_brings_what_the_readme_and_the_package_use():
    """A gap here passes in CI's test environment and fails a user after quick-start line 1
    (`snakemake --report` once needed pygments, which only the test extras brought)."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    base = _base_install()
    for needed in ("pygments", "jinja2", "docutils"):  # snakemake --report (README)
        assert needed in base, needed
    owners = packages_distributions()
    for path in (REPO / "src" / "sharpminima").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for top in {n.split(".")[0] for n in names}:
                if top in sys.stdlib_module_names or top == "sharpminima":
                    continue
                dists = {canonicalize_name(d) for d in owners.get(top, [top])}
                assert dists & base, f"{path.name} imports {top}, not in the base install"


def test_job_counts_in_the_docs_match_a_dry_run(tmp_path):
    """Every 'N jobs' the README and docs/workflow.md give for a preset is a dry run's total."""
    from .conftest import snakemake
    from .test_workflow import job_counts

    presets = {
        name: f"workflow/presets/{name}.yaml"
        for name in ("smoke", "paper", "fashion", "fashion-cpu")
    }
    totals = {
        name: job_counts(snakemake(tmp_path / name, "-n", "--configfile", REPO / path).stdout)[
            "total"
        ]
        for name, path in presets.items()
    }
    readme = (REPO / "README.md").read_text()
    claims = [
        ("smoke", re.search(r"whole chain.*?\((\d+) jobs", readme, re.S)),
        ("paper", re.search(r"paper\.yaml +# all six networks: (\d+) jobs", readme)),
        ("fashion", re.search(r"fashion\.yaml +# F1, C1, C2 on Fashion-MNIST: (\d+) jobs", readme)),
        ("fashion-cpu", re.search(r"fashion-cpu\.yaml +# .*?: (\d+) jobs", readme)),
    ]
    for line in (REPO / "docs" / "workflow.md").read_text().splitlines():
        for name in presets:
            if line.startswith(f"| `{name}.yaml`"):
                claims.append((name, re.search(r"(\d+) jobs", line)))
    assert len(claims) == 8 and all(m for _, m in claims), claims
    for name, match in claims:
        assert int(match.group(1)) == totals[name], (name, match.group(0), totals[name])
