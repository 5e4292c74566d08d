"""The GPU check script runs on CPU too, so CI proves it works before a GPU is at hand."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sharpminima.measures.curvature import EigenConfig, top_eigenvalues
from sharpminima.measures.objective import Objective
from sharpminima.models import build, evaluation

from .conftest import REPO
from .test_dependencies import imported


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_resumes_bit_identically(tmp_path):
    table = tmp_path / "table.md"
    args = ["--device", "cpu", "--n-train", "256", "--n-test", "64", "--epochs", "2"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), *args, "--iters", "2"]
        + ["--lanczos-steps", "2"]  # C1's Hessian-vector products are most of the time on CPU
        + ["--out", str(table)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = table.read_text().splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith(("| F1", "| C1"))]
    assert [(r[0].strip(), r[2].strip()) for r in rows] == [
        ("F1", "SB"), ("F1", "LB"), ("C1", "SB"), ("C1", "LB"),
    ]  # fmt: skip
    for network, _, regime, batch, rate, *rest in rows:
        assert float(rate.replace(",", "")) > 0
        assert int(batch) == (256 if regime.strip() == "SB" else 26)  # 10% of 256
        if regime.strip() == "SB":
            assert rest[-1].strip() == "yes", (network, rest)  # resumed bitwise
        else:
            assert "nit 2" in rest[1]  # φ of the LB run, with its solver statistics
            assert float(rest[4].split("(")[0]) > 0 and "steps" in rest[4]  # its λ_max
    assert "device: cpu:" in table.read_text()


def test_gpu_check_projects_the_paper_from_each_networks_timings(tmp_path):
    """--paper on CPU at 1% of the real sizes: a row per network timed, and the projection of
    paper.yaml's jobs from them (its train, φ and landscape jobs of those networks). F1 only:
    each network adds a minute of CPU here, and the GPU run times all six."""
    table = tmp_path / "paper.md"
    args = ["--paper", "--device", "cpu", "--scale", "0.01", "--networks", "F1"]
    args += ["--epochs", "1", "--iters", "1", "--lanczos-steps", "2", "--concurrency", "2"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), *args, "--out", str(table)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    text = table.read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| F1")]
    assert len(rows) == 1
    for _, source, n_train, sb, lb, peaks, *seconds, speedups in rows:
        assert source.strip() == "synthetic"
        assert int(n_train.replace(",", "")) == 550  # 1% of 60,000, less 1% of 5,000
        assert all(float(v) > 0 for v in (sb, lb, *seconds)) and peaks.strip() == "— / — / —"
        assert speedups.strip().endswith("(2)")
    assert "330 jobs planned" in text and "landscape 2, sharpness 40, train 10" in text
    projected = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 20, 40")]
    train_h, phi_h, land_h, alone_h, wall_h, goal = (c.strip() for c in projected[0][1:])
    assert float(alone_h) == pytest.approx(float(train_h) + float(phi_h) + float(land_h), abs=2e-3)
    assert float(wall_h) > 0 and goal in ("met", "over")


def benchmark(script: str, *args: str) -> str:
    """The standard output of benchmarks/`script` on one thread, which must succeed."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *map(str, args), "--threads", "1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_hessian_benchmark_agrees_with_pyhessian(trials):
    """λ_max and trace beside PyHessian's on a small F1 run; the times are printed, not held to
    a target here (a benchmark's business, on an idle machine)."""
    out = benchmark(
        "hessian.py", trials["LB"][0], "--chunk", "300", "--tol", "1e-4", "--samples", "40"
    )
    apart = float(re.search(r"PyHessian [-\d.e+]+: ([\d.]+)% apart", out).group(1))
    assert apart <= 1.0, out
    errors = float(re.search(r"([\d.]+) standard errors apart", out).group(1))
    assert errors <= 3.0, out  # 2 is the target; 3 leaves room for one unlucky draw
    assert re.search(r"lambda_max, ours: .* ([\d.]+)x the floor; its matmuls alone", out), out


def script(name: str, monkeypatch) -> ModuleType:
    """benchmarks/`name`.py as a module: benchmarks/ is a folder of scripts, not a package."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # a dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def floor(monkeypatch):
    return script("floor", monkeypatch)


@pytest.mark.parametrize("network", ["F1", "C1"])
def test_replayed_matmuls_are_all_the_flops_of_the_work(floor, network):
    """The 'matmuls alone' line replays what FlopCounterMode counts, no more and no less:
    forward, backward, and a Hessian-vector product."""
    model = build(network, seed=0)
    shape = (784,) if network == "F1" else (3, 32, 32)
    x, y = torch.randn(4, *shape), torch.randint(0, 10, (4,))
    f = Objective(model, (x, y), "batch", 4)
    v = torch.randn_like(f.theta0)

    def pass_():
        model.zero_grad(set_to_none=True)
        with evaluation(model, "batch"):
            F.cross_entropy(model(x), y).backward()

    # C1's product runs the same convolution ops as its pass, several times
    for work in (pass_, lambda: f.hvp(v)) if network == "F1" else (pass_,):
        calls = list(floor.recorded_matmuls(work))  # records `work` outside the counter
        with FlopCounterMode(display=False) as replayed:
            for call in calls:
                call()
        assert calls
        assert replayed.get_total_flops() == floor.flops(work)
    assert floor.matmul_seconds(pass_, repeats=1) > 0


def test_sharpness_benchmark_prints_the_ratio_the_floor_and_the_matmuls_alone(trials):
    out = benchmark("sharpness.py", trials["LB"][0], "--repeats", "1")
    assert re.search(r"ratio: [\d.]+ \(target <= 1.15\)", out), out
    for what in ("sharpness", "bare passes"):
        line = re.search(rf"{what}: .* ([\d.]+)x the floor; its matmuls alone .* so ([\d.]+)x", out)
        assert line and float(line.group(1)) > 0 and float(line.group(2)) > 0, out


def test_hvp_speed_prints_each_way_and_its_ratios_per_network():
    out = benchmark("hvp_speed.py", "--networks", "F1", "C1", "--examples", "64", "16",
                    "--repeats", "1")  # fmt: skip
    rows = re.findall(r"^\| (F1|C1) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) "
                      r"\| ([\d.]+) \| ([\d.]+), ([\d.]+), ([\d.]+) \|$", out, re.M)  # fmt: skip
    assert [r[:2] for r in rows] == [("F1", "64"), ("C1", "16")], out
    for row in rows:
        gradient, ours, times, theirs, ratio, *peaks = map(float, row[2:])
        assert min(gradient, ours, theirs, *peaks) > 0
        # the seconds are printed to 3 decimals, the ratios from the unrounded ones
        assert times == pytest.approx(ours / gradient, rel=0.1)
        assert ratio == pytest.approx(ours / theirs, rel=0.1)


def test_lanczos_is_never_behind_power_iteration_from_the_same_start(trials):
    """Lanczos's Krylov space holds the power iterate, so its estimate is never lower; the
    counts of products each needs for 1e-3 are printed with the step PyHessian's rule stops at."""
    out = benchmark(
        "lanczos_vs_power.py",
        trials["LB"][0],
        "--examples",
        "300",
        "--chunk",
        "300",
        "--steps",
        "6",
    )
    rows = re.findall(r"^\| (\d+) \| ([-\d.e+]+) \| [\d.e+-]+ \| ([-\d.e+]+) \|", out, re.M)
    assert [int(r[0]) for r in rows] == list(range(1, 7)), out
    ref = float(re.search(r"reference λ_max ([-\d.e+]+)", out).group(1))
    assert ref > 0
    for _, ours, power in rows:
        assert float(ours) >= float(power) - 1e-6 * ref, out
    assert "raise --steps" in out  # 6 steps on this run: the reference is rough
    for name in ("Lanczos", "power"):
        assert re.search(rf"{name}, 6 products: .* ([\d.]+)x the floor", out), out


def test_cpu_layout_times_three_ways_side_by_side():
    out = benchmark("cpu_layout.py", "--repeats", "1", "--lb-batch", "64", "--chunk", "64")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")][1:]
    assert [r[0].strip() for r in rows] == [
        "default malloc, NCHW", "kept heap, NCHW", "kept heap, channels-last",
    ]  # fmt: skip
    for row in rows:
        assert len(row) == 4 and all(float(c.split()[0]) > 0 for c in row[1:])
    assert all("(1.00×)" in c for c in rows[0][1:])  # the first way against itself


def test_panel_cost_counts_each_measures_work_and_prices_it(trials):
    """Every measure's row, with counts that are its own (φ takes gradients only, the
    eigenvalues products only, the average case evaluations of f only) and a cost in gradients
    that is those counts priced by the timed operations."""
    out = benchmark("panel_cost.py", trials["LB"][0], "--subset", "60")
    pattern = r"^\| ([^|]+?) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|"
    rows = {name: tuple(map(float, n)) for name, *n in re.findall(pattern, out, re.M)}
    assert set(rows) == {
        "phi (full space)", "lambda_max", "trace", "density", "worst case, linf",
        "worst case, l2", "average case", "trace, 10% a sample", "average case, 10% a draw",
        "worst case, linf, 10% a start", "worst case, l2, 10% a start",
    }, out  # fmt: skip
    assert rows["phi (full space)"][0::2] == (0, 0) and rows["phi (full space)"][1] >= 10
    assert rows["lambda_max"][:2] == (0, 0) and rows["lambda_max"][2] >= 2
    assert rows["average case"] == (51, 0, 0)  # f(w) and 50 draws
    assert rows["trace"][2] >= 50 and rows["worst case, l2"][2] == 20
    assert re.search(r"a gradient [\d.]+ s, a Hessian-vector product [\d.]+ s", out), out
    sampled = re.search(r"^\| trace, 10% a sample \| 0 \| 0 \| ([\d.]+) \|", out, re.M)
    assert sampled and 5 <= float(sampled[1]) <= 20.0001, out  # 50-200 samples of a tenth
    draws = re.search(r"^\| average case, 10% a draw \| ([\d.]+) \| 0 \| 0 \|", out, re.M)
    assert draws and float(draws[1]) == pytest.approx(1 + 100 * 0.1), out  # f(w), 2 per draw
    # ∇f(w) over all; 20 power steps on a tenth; per start (6 at least) ∇f_S(w) and its ascent
    # on a tenth, then f over all at the point found
    f, gradients, products = rows["worst case, l2, 10% a start"]
    assert products == pytest.approx(2) and f == int(f) and f >= 6, out
    assert 1 + 0.1 * 2 * f <= gradients <= 1 + 0.1 * f * 102, out  # at most 101 steps a start


def test_the_benchmarks_import_each_other_without_a_circle():
    """gpu_check.py and paper_projection.py once imported each other; what they share lives in a
    module both import (device_log.py), as floor.py serves the others."""
    from graphlib import TopologicalSorter

    scripts = {p.stem: p for p in (REPO / "benchmarks").glob("*.py")}
    graph = {name: imported(path) & scripts.keys() for name, path in scripts.items()}
    assert graph["paper_projection"] == {"device_log"} and "gpu_check" not in graph["device_log"]
    order = list(TopologicalSorter(graph).static_order())  # CycleError on a circle
    assert order.index("device_log") < order.index("gpu_check")


def test_trace_estimators_price_each_way_to_the_trace(trials):
    """Each estimator's row: Hutchinson with no fixed price, the others with theirs (Lanczos
    steps, twice the sketch), traces that agree, and the error below which each wins."""
    out = benchmark("trace_estimators.py", trials["LB"][0], "--subset", "60", "--samples", "6")
    pattern = r"^\| ([^|]+?) \| (\d+) \| ([\d.e+-]+) \| ([\d.]+) \| (\d+) \| ([^|]+) \|$"
    rows = {name: rest for name, *rest in re.findall(pattern, out, re.M)}
    assert list(rows) == [
        "Hutchinson", "deflated, k = 10", "deflated, k = 30", "Hutch++, sketch 10",
        "Hutch++, sketch 20",
    ], out  # fmt: skip
    assert rows["Hutchinson"][0] == "0" and rows["Hutchinson"][4].strip() == "—"
    assert rows["Hutch++, sketch 20"][0] == "40" and int(rows["deflated, k = 10"][0]) >= 10
    traces = [float(r[1]) for r in rows.values()]
    assert max(traces) - min(traces) <= 0.5 * abs(sum(traces) / len(traces)), traces


def test_lanczos_stopping_asks_curvatures_own_rule_and_prices_the_guard(monkeypatch, one_thread):
    """The table's first rule is `top_eigenvalues`' own (it stops at the same step on every
    spectrum), and its rows keep their order of cost: dropping guards never adds a step, and
    the rule with no guard misses at least as often as the guarded ones."""
    stopping = script("lanczos_stopping", monkeypatch)
    ours = next(iter(stopping.rules(1e-3)))
    for close in (True, False):
        for seed in range(4):
            _, d = stopping.spectrum(seed, close, 2000)
            cfg = EigenConfig(k=1, tol=1e-3, max_steps=40, seed=seed)
            steps = top_eigenvalues(lambda v, d=d: d * v, d, cfg)["steps"]
            assert stopping.stops(range(seed, seed + 1), close, 1e-3, 2000, 40)[ours] == [
                (steps, False)
            ]
    out = benchmark("lanczos_stopping.py", "--spectra", "12", "--size", "2000")
    rows = re.findall(r"^\| ([^|]+?) \| (\d+), ([\d.]+) \| (\d+), ([\d.]+) \|$", out, re.M)
    assert len(rows) == 5, out
    for kind in (0, 2):
        misses = [int(r[1 + kind]) for r in rows]
        steps = [float(r[2 + kind]) for r in rows]
        assert steps[1] <= steps[0] and steps[2] <= steps[1] and steps[4] <= steps[3] <= steps[2]
        assert misses[4] >= max(misses[1:4]), out
