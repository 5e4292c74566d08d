"""The README's and the docs' promises that can be checked mechanically: commands, options,
links, job counts and the report's contents are read out of the Markdown and compared with the
code, the command line and dry runs, so that a stale number or a renamed option fails here."""

import argparse
import re
from pathlib import Path

import yaml

from .conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PRESETS = sorted((REPO / "workflow" / "presets").glob("*.yaml"))


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, re.S).group(1)
    lines = block.strip().splitlines()
    assert len(lines) == 2, "the quick start is exactly two lines"
    assert lines[0].startswith("pip install -e . && snakemake --cores 8")
    assert lines[1].startswith("pip install -e '.[test]' && ")
    ci = (REPO / ".ci/run").read_text()
    # .ci/run reads both lines out of this block and runs them (the first as a dry run); it
    # runs no test command of its own beside them.
    assert "/^## Quick start/" in ci and "README.md" in ci
    assert "pytest" not in ci


def test_the_readme_opens_with_what_it_does_how_to_run_it_and_a_figure():
    """A newcomer's first screen: the capabilities beside the paper, each with its switch and doc,
    the two quick-start lines, and a figure the default study draws."""
    readme = (REPO / "README.md").read_text()
    first = readme[: readme.index("## Quick start")]
    screen = "\n".join(readme.splitlines()[:50])
    rows = re.findall(r"^\| (.+?) \| (yes|added) \| (.+?) \| (.+?) \|$", first, re.M)
    assert len(rows) >= 10 and {"yes", "added"} == {paper for _, paper, _, _ in rows}
    assert all("](docs/" in doc for *_, doc in rows)
    assert "pip install -e '.[test]' && python -m pytest -q" in screen
    image = re.search(r"!\[[^\]]+\]\((docs/img/[\w.-]+\.png)\)", screen)
    assert image and (REPO / image.group(1)).stat().st_size > 10_000


def test_every_subcommand_is_documented():
    readme = (REPO / "README.md").read_text()
    from sharpminima.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"sharpminima {name}" in readme, name


def _prose(text: str) -> str:
    """Markdown without its fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _code(text: str) -> list[str]:
    """The code of Markdown: every line of its fenced blocks and every inline code span."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    return [line for block in blocks for line in block.splitlines()] + spans


def anchors(path: Path) -> set[str]:
    """The fragments GitHub gives the headings of a Markdown file (lower case, punctuation
    other than '-' and '_' dropped, spaces to '-', repeats numbered -1, -2, ...) and its
    `<a id="...">` anchors."""
    seen: dict[str, int] = {}
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6} +(.*?) *#*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
    explicit = set(re.findall(r"<a (?:id|name)=\"([^\"]+)\"", text))
    return explicit | {
        f"{s}-{n}" if n else s for s, count in seen.items() for n in range(count + 1)
    }


def links(path: Path) -> list[str]:
    """The targets of the Markdown links and images of a file, outside code."""
    return re.findall(r"\]\(<?([^)\s>]+)>?(?: \"[^\"]*\")?\)", _prose(path.read_text()))


def dead_links(path: Path) -> list[str]:
    """Every relative link of `path` whose file, or heading, does not exist."""
    dead = []
    for target in links(path):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked (no network here)
            continue
        file, _, fragment = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            dead.append(target)
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            dead.append(target)
    return dead


def test_every_relative_link_and_anchor_resolves():
    dead = {path.name: dead_links(path) for path in DOCS}
    assert not {k: v for k, v in dead.items() if v}, dead


def test_the_link_check_finds_a_dead_link_and_anchor(tmp_path):
    (tmp_path / "a.md").write_text(
        "# Top `x`: y\n\n## Top x y\n\n[ok](#top-x-y-1) [b](b.md)\n"
        "[ok](#top-x-y) [c](a.md#nowhere) `[code](gone.md)`\n"
    )
    assert dead_links(tmp_path / "a.md") == ["b.md", "a.md#nowhere"]


def commands(text: str) -> list[list[str]]:
    """The words of every `sharpminima ...` command quoted in code, up to a shell operator or
    comment."""
    found = []
    for line in _code(text):
        for m in re.finditer(r"(?:^|[\s(])sharpminima((?: +[^\s|&;#)]+)*)", line):
            words = m.group(1).split()
            if words:
                found.append(words)
    return found


def _values(action: argparse.Action, word: str) -> int:
    """How many words after `word` are its option's values (-1: up to the next option)."""
    if action.nargs == 0 or "=" in word:
        return 0
    if action.nargs in (None, "?"):
        return 1
    return action.nargs if isinstance(action.nargs, int) else -1


def unknown_words(words: list[str]) -> list[str]:
    """What a quoted `sharpminima` command names that its parser does not accept: a subcommand
    at any depth, an option, or a value of a positional argument with fixed choices (`a|b`:
    each). Placeholders (SOURCE, …) stop the walk down subcommands."""
    from sharpminima.cli import parser

    p, bad, pending, positional, descend = parser(words[0]), [], 0, 0, True
    for word in words:
        if word.startswith("--"):
            action = p._option_string_actions.get(word.split("=")[0])
            bad += [word] if action is None else []
            pending = -1 if action is None else _values(action, word)
            continue
        if pending:
            pending -= pending > 0
            continue
        alternatives = word.split("|")
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and descend:
            if all(n in subs[0].choices for n in alternatives):
                p, positional = subs[0].choices[alternatives[0]], 0
            elif word.isupper() or any(c in word for c in "{<…") or "..." in word:
                descend = False
            else:
                bad.append(word)
                descend = False
            continue
        fixed = [a for a in p._actions if not a.option_strings and a not in subs]
        if positional < len(fixed) and fixed[positional].choices and not word.isupper():
            bad += [w for w in alternatives if w not in fixed[positional].choices]
        positional += 1
    return bad


def test_every_quoted_sharpminima_command_and_option_exists():
    quoted = [(path.name, words) for path in DOCS for words in commands(path.read_text())]
    assert len(quoted) > 40, quoted  # the reading found the docs' commands
    bad = [(name, words, unknown_words(words)) for name, words in quoted if unknown_words(words)]
    assert not bad, bad


def test_the_command_check_finds_an_unknown_option_and_kind():
    text = (
        "`sharpminima figure curves c.csv --out f.png --dpi 300`, and\n```bash\n"
        "sharpminima figure curvez c.csv --out x  # no\n"
        "sharpminima train --data d --no-such 1\n```\n"
    )
    assert [unknown_words(w) for w in commands(text)] == [["curvez"], ["--no-such"], []]


def parsers(p: argparse.ArgumentParser, prog: str = "sharpminima"):
    """Every parser of the command line, subcommands at every depth, each built as it runs."""
    from sharpminima.cli import parser

    yield prog, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if prog == "sharpminima":  # a stage's options are built when it is chosen
                    sub = parser(name)._subparsers._group_actions[0].choices[name]
                yield from parsers(sub, f"{prog} {name}")


def test_each_help_lists_what_the_registry_accepts():
    """`--help` of every command lists every value a choice accepts, and the choices are the
    registry's: the figure kinds, the measurements, the dataset sources, the panel's measures."""
    from sharpminima.cli import parser
    from sharpminima.registry import FIGURES, MEASURES, PANEL_STAGES, SOURCES, STAGES

    accepted = {}
    for prog, p in parsers(parser()):
        text = " ".join(p.format_help().split())
        for action in p._actions:
            if action.choices and action.dest != "help":
                accepted[prog, action.dest] = set(action.choices)
                missing = [str(c) for c in action.choices if not re.search(rf"\b{c}\b", text)]
                assert not missing, (prog, missing)
    assert accepted["sharpminima", "command"] == {*STAGES, "models"}
    assert accepted["sharpminima figure", "kind"] == set(FIGURES)
    assert accepted["sharpminima measure", "what"] == set(MEASURES)
    assert accepted["sharpminima prepare", "source"] == set(SOURCES)
    for stage, measures in PANEL_STAGES.items():
        assert accepted[f"sharpminima {stage}", "what"] == set(measures)


# Every "N jobs" in README and docs is one of three kinds, and the sweep below finds any other.
SMOKE, PAPER = ("workflow/presets/smoke.yaml",), ("workflow/presets/paper.yaml",)
FASHION, FASHION_CPU = ("workflow/presets/fashion.yaml",), ("workflow/presets/fashion-cpu.yaml",)
C1_CPU = ("workflow/presets/fashion-c1-cpu.yaml",)
# A plan: what a preset plans from nothing, equal to a dry run from the repository root.
PLANS = [
    ("README.md", r"the (\d+) jobs one at a time", ("config.yaml",)),
    ("README.md", r"whole chain.*?\((\d+) jobs", SMOKE),
    ("README.md", r"paper\.yaml +# all six networks: (\d+) jobs", PAPER),
    ("README.md", r"fashion\.yaml +# F1, C1, C2 on Fashion-MNIST: (\d+) jobs", FASHION),
    ("README.md", r"fashion-cpu\.yaml +# .*?: (\d+) jobs", FASHION_CPU),
    ("docs/workflow.md", r"^\| `smoke\.yaml` \|.*?(\d+) jobs", SMOKE),
    ("docs/workflow.md", r"^\| `fashion\.yaml` \|.*?(\d+) jobs", FASHION),
    ("docs/workflow.md", r"^\| `fashion-cpu\.yaml` \|.*?(\d+) jobs", FASHION_CPU),
    ("docs/workflow.md", r"^\| `fashion-c1-cpu\.yaml` \|.*?(\d+) jobs", C1_CPU),
    ("docs/workflow.md", r"^\| `paper\.yaml` \|.*?(\d+) jobs", PAPER),
    ("docs/results-fashion.md", r"`fashion\.yaml` \((\d+) jobs\)", FASHION),
    ("docs/performance.md", r"presets/paper\.yaml` \([^)]*: (\d+) jobs\)", PAPER),
]
# A rerun plan: the jobs an edit to a module reruns in a finished smoke run (test_workflow's
# test_an_edited_module_reruns_exactly_the_jobs_that_run_it compares them with its dry runs).
RERUNS = [
    (
        "docs/workflow.md",
        r"`measures/lbfgsb\.py` every φ and what reads φ \((\d+) jobs\)",
        "measures/lbfgsb.py",
    ),
    (
        "docs/workflow.md",
        r"`train/trainer\.py` the training jobs \(then .*?: (\d+)\)",
        "train/trainer.py",
    ),
    ("docs/workflow.md", r"`analysis/figures\.py` the figures \((\d+)\)", "analysis/figures.py"),
    ("docs/architecture.md", r"^\| `measures/lbfgsb\.py` \|[^|\n]*\| (\d+)", "measures/lbfgsb.py"),
    ("docs/architecture.md", r"^\| `train/trainer\.py` \|[^|\n]*\| (\d+)", "train/trainer.py"),
    ("docs/architecture.md", r"^\| `models\.py` \|[^|\n]*\| (\d+)", "models.py"),
    (
        "docs/architecture.md",
        r"^\| `analysis/figures\.py` \|[^|\n]*\| (\d+)",
        "analysis/figures.py",
    ),
]
# A record: what a dated run did (its jobs, or how many ran at once), which no dry run of today
# can recheck; each sits beside the run's date, machine and time.
RECORDS = [
    ("README.md", r"the F1 methods study \(two presets, (\d+) jobs\)"),
    ("README.md", r"(\d+) jobs sharing the GPU"),
    ("docs/experiments.md", r"22 training and (\d+) sharpness jobs, 1 h 18 min"),
    ("docs/experiments.md", r"on the same runs: (\d+) jobs, 17 min"),
    ("docs/experiments.md", r"(\d+) independent jobs"),
    ("docs/modern.md", r"all (\d+) jobs of the two F1\s+presets in 6 minutes"),
    ("docs/performance.md", r"the F1 methods study, (\d+) Snakemake jobs in 6 minutes"),
    ("docs/performance.md", r"^\| \w+ \| [^|\n]* \| [^|\n]* \| \d+ s, (\d+) jobs \|"),
    ("docs/results-f1.md", r"all (\d+) jobs, 16 at a time"),
    ("docs/results-f1.md", r"(\d+) sharpness jobs, 48 min"),
    ("docs/workflow.md", r"(\d+) queued jobs"),
]
JOBS = re.compile(r"\b(\d[\d,]*) (?:[a-zA-Z-]+ )?jobs?\b")


def claims(table: list[tuple]) -> list[tuple[str, int, int, tuple]]:
    """(file, offset, the number, rest of the entry) of every match of a claim table; a pattern
    that matches nothing is a claim that moved, and fails here."""
    found = []
    for file, pattern, *rest in table:
        matches = list(re.finditer(pattern, (REPO / file).read_text(), re.M | re.S))
        assert matches, (file, pattern)
        found += [(file, m.start(1), int(m.group(1)), tuple(rest)) for m in matches]
    return found


def unaccounted_job_counts(docs: list[Path], root: Path = REPO) -> list[str]:
    """Every "N jobs" of the docs that no claim table names: a new plan nobody checks."""
    known = {(file, at) for file, at, _, _ in claims(PLANS) + claims(RERUNS) + claims(RECORDS)}
    return [
        f"{path.relative_to(root)}: {m.group(0)}"
        for path in docs
        for m in JOBS.finditer(path.read_text())
        if (str(path.relative_to(root)), m.start(1)) not in known
    ]


def test_every_job_count_in_the_docs_is_checked_or_a_dated_record():
    assert not unaccounted_job_counts(DOCS)


def test_job_counts_in_the_docs_match_a_dry_run_from_the_repository_root(dry_run):
    from .test_workflow import job_counts

    for file, _, number, (configs,) in claims(PLANS):
        proc = dry_run("--configfile", *configs)
        assert proc.returncode == 0, proc.stderr
        assert number == job_counts(proc.stdout)["total"], (file, configs, number)


def test_a_new_job_count_nobody_checks_fails_the_sweep(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "workflow.md").write_text("A new preset: 12 jobs.\n")
    found = unaccounted_job_counts([tmp_path / "docs" / "workflow.md"], tmp_path)
    assert found == ["docs/workflow.md: 12 jobs"]


def configfile_examples(root: Path) -> set[tuple[str, ...]]:
    """Every list of config files that a `snakemake` line of README, the docs or a preset's
    comment gives (`--configfile A B`, continued lines joined), where all are the repository's
    (config.yaml, presets) and `root` has them; a user's own (mine.yaml, FILE) are not."""
    found = set()
    for path in [*DOCS, *PRESETS]:
        text = re.sub(r"\\\n#?\s*", " ", path.read_text())
        for m in re.finditer(r"--configfile((?:\s+[\w./-]+\.yaml)+)", text):
            files = tuple(m.group(1).split())
            ours = all(f == "config.yaml" or f.startswith("workflow/") for f in files)
            if ours and all((root / f).is_file() for f in files):
                found.add(files)
    return found


def test_the_documented_configs_plan_into_their_own_study_from_the_repository_root(
    repo_root, dry_run
):
    """Each documented `--configfile` line, run where a user runs it (beside config.yaml),
    plans its own networks into its own study's tree: the files it names, merged left to right,
    and nothing of config.yaml's unless named."""
    from .test_faults_config import planned_paths

    examples = configfile_examples(repo_root)
    assert len(examples) >= 7, examples
    for files in sorted(examples):
        merged = [yaml.safe_load((REPO / f).read_text()) for f in files]
        study = [c["study"] for c in merged if "study" in c][-1]
        networks = {n for c in merged for n in c.get("networks", {})}
        proc = dry_run("--configfile", *files)
        paths = planned_paths(proc.stdout)
        assert proc.returncode == 0 and paths, (files, proc.stderr)
        outside = [p for p in paths if not p.startswith((f"results/{study}/", f"logs/{study}/"))]
        assert not outside, (files, outside[:3])
        assert {p.split("/")[3] for p in paths if "/runs/" in p} == networks, files


def _section(text: str, heading: str) -> str:
    """A Markdown section: from its heading to the next heading of its level or above."""
    start = text.index(heading)
    level = heading.split(" ")[0]
    end = re.search(rf"^#{{1,{len(level)}}} ", text[start + len(heading) :], re.M)
    return text[start : start + len(heading) + end.start()] if end else text[start:]


def test_formats_md_names_every_attribute_of_a_dataset_and_a_run_file(trials, mnist_like):
    import h5py

    text = (REPO / "docs" / "formats.md").read_text()
    for heading, path in (("## Dataset file", mnist_like), ("## Run file", trials["SB"][0])):
        named = set(re.findall(r"`(\w+)", _section(text, heading)))
        with h5py.File(path, "r") as f:
            missing = sorted(set(f.attrs) - named)
            dtype = f["x_train"].dtype.name if "x_train" in f else None
        assert not missing, (heading, missing)
        assert dtype is None or f"{dtype} (synthetic)" in _section(text, heading), dtype


def test_workflow_md_names_every_rule_that_asks_for_a_gpu():
    """The advice for a cluster without GPUs names them all (the SLURM profile's own list is
    checked by test_workflow: the profile gives a GPU to every rule that declares one)."""
    from .test_workflow import gpu_rules

    declared = gpu_rules()
    text = (REPO / "docs" / "workflow.md").read_text()
    sentence = re.search(r"The (\w+) rules whose jobs evaluate a network \((.*?)\)", text, re.S)
    named = set(re.findall(r"`(\w+)`", sentence.group(2)))
    assert named == declared and sentence.group(1) == {8: "eight"}.get(len(declared)), named
    assert f"set all {sentence.group(1)} `gpu` entries" in text


def test_the_report_section_lists_what_the_rules_put_in_the_report():
    from sharpminima.registry import EXPERIMENTS

    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    entries = re.findall(r'caption="\.\./report/([\w.]+)",\s*category="([^"]+)"', rules)
    section = _section((REPO / "docs" / "workflow.md").read_text(), "## Report")
    listed = re.findall(r"^- \*\*(.+?)\*\*:(.*?)\(`([\w.]+)`\)\.$", section, re.M | re.S)
    assert {(caption, category) for category, _, caption in listed} == set(entries), listed
    items = {category: text for category, text, _ in listed}
    figures = {part.figure for e in EXPERIMENTS.values() for part in e.parts() if part.figure}
    named = set(re.findall(r"`(\w+)`", items["Further experiments"]))
    assert named == figures, named ^ figures
    assert {"linear", "curvilinear"} <= set(
        re.findall(r"`(\w+)`", items["Figures 3 and 7: parametric plots"])
    )


def test_the_docs_cite_nothing_outside_the_repository():
    """A clone has no ../shared/docs: the paper's protocol and the measures' definitions are
    docs/paper.md and docs/measures.md."""
    outside = re.compile(r"PAPER\.md|MEASURES\.md|\.\./shared/docs|seed-paper")
    cited = [(p.name, m.group(0)) for p in DOCS for m in outside.finditer(p.read_text())]
    assert not cited, cited
    assert {"paper.md", "measures.md"} <= {p.name for p in DOCS}
