"""Options from one source: each settings dataclass generates its subcommand's options, and the
config schema's defaults are the dataclass's."""

import dataclasses
import re

import pytest
import yaml

from sharpminima.analysis.figures import Style
from sharpminima.cli import parser
from sharpminima.measures import adaptive, curvature
from sharpminima.measures.landscape import LandscapeConfig
from sharpminima.measures.sharpness import SPACES, SharpnessConfig
from sharpminima.registry import PANEL, PANEL_STAGES, SOURCES
from sharpminima.train.trainer import TrainConfig

from .conftest import REPO, cli

SCHEMAS = REPO / "workflow" / "schemas"
CONFIG = yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text())["properties"]
# Schema keys that are the workflow's, not a setting: lists the workflow expands into jobs,
# and what only trades memory for time.
WORKFLOW_ONLY = {"eps", "spaces", "cache_mb", "trials", "kinds"}
SECTIONS = [
    (yaml.safe_load((SCHEMAS / "training.schema.yaml").read_text())["properties"], TrainConfig),
    (CONFIG["sharpness"]["properties"], SharpnessConfig),
    (CONFIG["landscape"]["properties"], LandscapeConfig),
    (CONFIG["figures"]["properties"], Style),
]


@pytest.mark.parametrize("schema, cls", SECTIONS, ids=lambda v: getattr(v, "__name__", ""))
def test_schema_defaults_are_the_dataclass_defaults(schema, cls):
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    assert set(schema) - WORKFLOW_ONLY <= set(fields), set(schema) - set(fields)
    for key, spec in schema.items():
        if key in fields and key not in WORKFLOW_ONLY and "default" in spec:
            assert spec["default"] == fields[key], key


@pytest.mark.parametrize("stage, module", [("curvature", curvature), ("adaptive", adaptive)])
def test_each_panel_measures_schema_is_its_settings_dataclass(stage, module):
    """A panel stage's section: shared keys (bn, chunk, seed), then one object per measure;
    together they are exactly the fields of that measure's dataclass, with its defaults."""
    schema = CONFIG[stage]["properties"]
    assert tuple(module.MEASURES) == PANEL_STAGES[stage]
    shared = {k: v for k, v in schema.items() if k not in module.MEASURES}
    for what, (cls, _) in module.MEASURES.items():
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        keys = shared | schema[what]["properties"]
        assert set(keys) == set(fields), (what, set(keys) ^ set(fields))
        for key, spec in keys.items():
            assert spec["default"] == fields[key], (what, key)
    measures = CONFIG["panel"]["properties"]["measures"]
    assert measures["items"]["enum"] == measures["default"] == list(PANEL)


# The arguments each subcommand needs besides its settings.
REQUIRED = {
    "train": ["--network", "F1", "--data", "d.h5", "--out", "r.h5"],
    "sharpness": ["r.h5", "--out", "phi.json"],
    "landscape": ["--sb", "a.h5", "--lb", "b.h5", "--out", "l.h5"],
    "figure": ["curves", "c.csv", "--out", "f.png"],
}
STAGE_SETTINGS = [("train", TrainConfig), ("sharpness", SharpnessConfig),
                  ("landscape", LandscapeConfig), ("figure", Style)]  # fmt: skip


@pytest.mark.parametrize("command, cls", STAGE_SETTINGS)
def test_every_setting_is_an_option_with_the_dataclass_default(command, cls):
    args = parser(command).parse_args([command, *REQUIRED[command]])
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            assert getattr(args, f.name) == f.default, f.name
        assert f.metadata["help"], f.name  # every option explains itself


def test_prepare_help_shows_only_that_sources_options():
    prepare = parser("prepare")._subparsers._group_actions[0].choices["prepare"]
    assert set(prepare._subparsers._group_actions[0].choices) == set(SOURCES)
    kaldi = cli("prepare", "timit-kaldi", "--help").stdout
    synthetic = cli("prepare", "synthetic", "--help").stdout
    assert "--allow-pipes" in kaldi and "--train-ali" in kaldi and "--n-train" not in kaldi
    assert "--n-train" in synthetic and "--allow-pipes" not in synthetic
    assert "--root" not in synthetic and "--no-download" in cli("prepare", "mnist", "-h").stdout


def test_the_workflow_knows_every_space_and_no_other():
    """A's variants are names in the φ files' paths: the Snakefile's wildcard pattern and the
    schema's lists must hold exactly sharpness.SPACES."""
    pattern = re.search(r'space="([^"]+)"', (REPO / "Snakefile").read_text()).group(1)
    assert [s for s in SPACES if re.fullmatch(pattern, s)] == list(SPACES)
    for other in ("randomx", "random-raw-uniform", "full-raw", "uniform"):
        assert not re.fullmatch(pattern, other), other
    assert CONFIG["sharpness"]["properties"]["spaces"]["items"]["enum"] == list(SPACES)
    sensitivity = CONFIG["sensitivity"]["properties"]
    assert sensitivity["spaces"]["items"]["enum"] == list(SPACES)
    assert sensitivity["subspaces"]["items"]["enum"] == sensitivity["subspaces"]["default"]
    assert sensitivity["subspaces"]["default"] == [s for s in SPACES if s != "full"]
