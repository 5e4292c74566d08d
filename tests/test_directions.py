"""Random directions: f along random unit directions at the radius of a run's own φ box."""

import json

import pytest
import torch

from sharpminima.errors import UserError
from sharpminima.measures.directions import random_directions
from sharpminima.store import Run


def test_random_directions_rise_on_phis_scale(trials, tmp_path):
    from torch.nn.functional import cross_entropy
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    from sharpminima.measures.sharpness import SharpnessConfig, run_sharpness
    from sharpminima.models import evaluation

    phi = run_sharpness(trials["LB"][0], SharpnessConfig(iters=2, chunk=200), log=lambda m: None)
    phi_file = tmp_path / "phi.json"
    phi_file.write_text(json.dumps(phi))
    table = random_directions(trials["LB"][0], phi_file, count=3, log=lambda m: None)
    assert table.direction.tolist() == [0, 1, 2] and (table.phi == phi["phi"]).all()
    # Direction 0 by hand: unit Gaussian (seed 0) at ρ = ‖ε(|x| + 1)‖.
    run = Run(trials["LB"][0])
    model, data = run.model(), run.data()
    params = [p for p in model.parameters() if p.requires_grad]
    x = parameters_to_vector(params).detach()
    rho = float((1e-3 * (x.abs() + 1)).norm())
    assert table.radius[0] == pytest.approx(rho)
    d = torch.randn(x.numel(), generator=torch.Generator().manual_seed(0))

    def f(theta):
        vector_to_parameters(theta, params)
        with evaluation(model, "batch"), torch.no_grad():
            parts = [
                cross_entropy(
                    model(data.x_train[i : i + 200]), data.y_train[i : i + 200], reduction="sum"
                )
                for i in range(0, len(data.x_train), 200)
            ]
        return float(sum(parts)) / len(data.x_train)

    f0 = f(x)
    rise = (f(x + rho * d / d.norm()) - f0) / (1 + f0) * 100
    assert table.rise[0] == pytest.approx(rise, rel=1e-4)
    assert table.fraction_of_phi[0] == pytest.approx(rise / phi["phi"], rel=1e-4)
    with pytest.raises(UserError, match="is not the full-space φ"):
        random_directions(trials["SB"][0], phi_file, count=1)
    with pytest.raises(UserError, match="does not exist: compute it with `sharpminima sharpness`"):
        random_directions(trials["SB"][0], tmp_path / "none.json", count=1)
