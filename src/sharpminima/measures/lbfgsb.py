"""SciPy's L-BFGS-B routine driven directly, with bounds handed over as arrays.

`scipy.optimize.minimize(method="L-BFGS-B")` converts bounds element by element in Python
(`old_bound_to_new` and a per-variable `nbd` loop): 4 s of a 40 s sharpness computation for
F1's 1.46M parameters, more than the routine itself. This loop is SciPy's own (1.15+,
`scipy/optimize/_lbfgsb_py.py`) with that conversion vectorized; the test suite checks that it
takes the very same steps as `minimize`, so a change in SciPy's private API fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import _lbfgsb
from scipy.optimize._lbfgsb_py import status_messages, task_messages

NEW_X, FG = 1, 3  # task[0] codes of setulb: an iteration ended; f and g wanted at x
STOP, ITERATIONS_REACHED = 5, 504


@dataclass
class BoxResult:
    x: np.ndarray
    fun: float
    nit: int
    nfev: int
    message: str


def minimize_in_box(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    maxiter: int,
    gtol: float = 1e-5,
    ftol: float = 2.2204460492503131e-09,
    maxcor: int = 10,
    maxls: int = 20,
    on_iteration: Callable[[int], None] | None = None,
    on_evaluation: Callable[[float], str | None] | None = None,
) -> BoxResult:
    """Minimise `fun` (returning f and ∇f) over lower ≤ x ≤ upper, as `minimize` would.

    `fun` gets setulb's working array: it must copy x to keep it. `on_iteration(nit)` is
    called as each iteration ends (for progress reports); `on_evaluation(f)` after each
    evaluation, and a reason it returns stops the search there (x is then that evaluation's
    point) and becomes the message.
    """
    n, m = x0.size, maxcor
    lower = np.ascontiguousarray(lower, np.float64)
    upper = np.ascontiguousarray(upper, np.float64)
    x = np.clip(np.asarray(x0, np.float64), lower, upper)
    nbd = np.full(n, 2, np.int32)  # 2: bounded below and above
    f, g = 0.0, np.zeros(n)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m)
    iwa = np.zeros(3 * n, np.int32)
    task, ln_task, lsave = np.zeros(2, np.int32), np.zeros(2, np.int32), np.zeros(4, np.int32)
    isave, dsave = np.zeros(44, np.int32), np.zeros(29)
    factr = ftol / np.finfo(float).eps
    nit = nfev = 0
    while True:
        _lbfgsb.setulb(
            m, x, lower, upper, nbd, f, g, factr, gtol, wa, iwa, task, lsave, isave, dsave,
            maxls, ln_task,
        )  # fmt: skip
        if task[0] == FG:
            f, g = fun(x)
            g = np.ascontiguousarray(g, np.float64)
            nfev += 1
            halted = on_evaluation(f) if on_evaluation is not None else None
            if halted:
                return BoxResult(x=x, fun=float(f), nit=nit, nfev=nfev, message=f"STOP: {halted}")
        elif task[0] == NEW_X:
            nit += 1
            if on_iteration is not None:
                on_iteration(nit)
            if nit >= maxiter:
                task[0], task[1] = STOP, ITERATIONS_REACHED
        else:
            break
    message = f"{status_messages[int(task[0])]}: {task_messages.get(int(task[1]), '')}"
    return BoxResult(x=x, fun=float(f), nit=nit, nfev=nfev, message=message)
