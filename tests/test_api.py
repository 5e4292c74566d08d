"""docs/api.md's examples run as written: the measures on models that are not ours."""

import re
import subprocess
import sys

import pytest

from .conftest import REPO

EXAMPLES = re.findall(r"```python\n(.*?)```", (REPO / "docs/api.md").read_text(), re.S)


def test_the_page_has_its_two_examples():
    assert len(EXAMPLES) == 2
    assert "resnet18" in EXAMPLES[0] and "LayerNorm" in EXAMPLES[1]


@pytest.mark.parametrize("example", EXAMPLES, ids=["resnet18", "layernorm"])
def test_example_runs(example):
    proc = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.count("\n") >= 3, proc.stdout
