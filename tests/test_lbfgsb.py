"""The direct L-BFGS-B driver takes SciPy's own steps (it relies on SciPy's private routine)."""

import numpy as np
import pytest
from scipy.optimize import Bounds, minimize

from sharpminima.measures.lbfgsb import minimize_in_box


def _problem(n: int = 30, seed: int = 0):
    """A smooth nonconvex f with a box that some coordinates hit and others do not."""
    rng = np.random.default_rng(seed)
    q, c = rng.normal(size=(n, n)) * 0.1, rng.normal(size=n)

    def fun(x):
        return -(np.sin(x) @ c + 0.5 * x @ q @ x), -(np.cos(x) * c + 0.5 * (q + q.T) @ x)

    return fun, np.abs(rng.normal(size=n)), rng


@pytest.mark.parametrize("tolerances", [(0.0, 0.0), (1e-5, 2.2e-9)])
@pytest.mark.parametrize("start", ["zero", "random", "outside"])
def test_driver_takes_the_same_steps_as_scipy_minimize(tolerances, start):
    fun, b, rng = _problem()
    x0 = {"zero": np.zeros_like(b), "random": rng.uniform(-b, b), "outside": 3 * b}[start]
    gtol, ftol = tolerances
    ref = minimize(
        fun,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=Bounds(-b, b),
        options={"maxiter": 10, "gtol": gtol, "ftol": ftol},
    )
    got = minimize_in_box(fun, x0, -b, b, maxiter=10, gtol=gtol, ftol=ftol)
    assert np.array_equal(got.x, ref.x)
    assert got.fun == ref.fun
    assert (got.nit, got.nfev, got.message) == (ref.nit, ref.nfev, ref.message)
    assert np.all(np.abs(got.x) <= b)


def test_driver_stops_on_convergence_with_default_tolerances():
    b = np.full(5, 10.0)
    got = minimize_in_box(lambda x: (float(x @ x), 2 * x), np.ones(5), -b, b, maxiter=50)
    assert got.message.startswith("CONVERGENCE")
    assert got.nit < 50
    assert np.allclose(got.x, 0.0)
