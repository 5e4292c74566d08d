"""The GPU check script runs on CPU too, so CI proves it works before a GPU is at hand."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import REPO


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
    assert re.search(r"lambda_max, ours: .* ([\d.]+)x the floor", out), out


def test_hvp_profile_prints_each_pass_against_its_floor_and_batchnorms_share():
    out = benchmark("hvp_profile.py", "--chunk", "32", "--repeats", "1")
    for bn in ("batch", "running"):
        for what in ("f and grad", "H.v"):
            line = re.search(rf"{what}, {bn} BatchNorm: .* ([\d.]+)x the floor", out)
            assert line and float(line.group(1)) > 0, out
        share = re.search(rf"H.v, {bn} BatchNorm: (\d+)% of its time", out)
        assert share and 0 < int(share.group(1)) < 100, out


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
