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
