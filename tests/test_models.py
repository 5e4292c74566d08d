import pytest
import torch

from sharpminima.errors import UserError
from sharpminima.models import NETWORKS, SamePool, build, check_fits, count_params, evaluation

from .conftest import cli

PAPER_COUNTS = {
    "F1": 1_462_794,
    "F2": 2_780_085,
    "C1": 1_757_834,
    "C2": 14_991_946,
    "C3": 1_775_204,
    "C4": 15_038_116,
}


@pytest.mark.parametrize("name", PAPER_COUNTS)
def test_parameter_counts(name):
    assert count_params(build(name)) == PAPER_COUNTS[name]


@pytest.mark.parametrize("name", PAPER_COUNTS)
@pytest.mark.parametrize("bn", ["batch", "running"])
def test_forward_shapes(name, bn):
    spec = NETWORKS[name]
    model = build(name, seed=0)
    with evaluation(model, bn), torch.no_grad():
        out = model(torch.rand(3, *spec.input_shape))
    assert out.shape == (3, spec.num_classes)
    assert torch.isfinite(out).all()


def test_dense_networks_flatten_image_inputs():
    with evaluation(build("F1"), "batch") as model, torch.no_grad():
        assert model(torch.rand(4, 1, 28, 28)).shape == (4, 10)


def test_same_seed_same_initial_point_and_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = build("C1", seed=7), build("C1", seed=7), build("C1", seed=8)
    assert torch.equal(torch.get_rng_state(), before)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(a[0].weight, c[0].weight)


def test_keras_initialisation():
    model = build("F1", seed=0)
    dense = model[1]
    bound = (6 / (784 + 512)) ** 0.5  # Glorot uniform
    assert dense.weight.abs().max() <= bound
    assert dense.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(dense.bias) == 0


def test_same_pool_matches_keras_output_sizes():
    x = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32)
    y = SamePool(3, 2)(x)
    assert y.shape == (1, 1, 16, 16)
    # TensorFlow 'same': windows start at 0, 2, 4, ... and the last one is padded on the right.
    assert y[0, 0, 0, 0] == x[0, 0, 2, 2]
    assert y[0, 0, -1, -1] == x[0, 0, 31, 31]
    assert SamePool(3, 2)(y).shape == (1, 1, 8, 8)


def test_batch_mode_uses_batch_statistics_and_leaves_buffers():
    model = build("F1", seed=0)
    x = 3 + 2 * torch.randn(64, 784)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        with evaluation(model, "batch"):
            batch_out = model(x)
        with evaluation(model, "running"):
            running_out = model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    # Running statistics are still the initial (0, 1); the inputs are far from that.
    assert not torch.allclose(batch_out, running_out)
    bn = model[2]
    h = model[1](x)
    manual = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps)
    with evaluation(model, "batch"), torch.no_grad():
        assert torch.allclose(bn(h), manual, atol=1e-5)
    assert model.training


def test_check_fits():
    check_fits("F1", (1, 28, 28), 10)
    check_fits("C1", (3, 32, 32), 10)
    with pytest.raises(UserError, match="inputs of shape"):
        check_fits("F1", (3, 32, 32), 10)
    with pytest.raises(UserError, match="100 outputs"):
        check_fits("C3", (3, 32, 32), 10)
    with pytest.raises(UserError, match="unknown network 'F9'"):
        check_fits("F9", (784,), 10)
    check_fits("F2", (360,), 39)  # F2's classes are the corpus's labels (docs/models.md)
    with pytest.raises(UserError, match="inputs of shape"):
        check_fits("F2", (117,), 1973)


def test_f2_output_follows_the_dataset():
    model = build("F2", seed=0, num_classes=48)
    assert model(torch.zeros(2, 360)).shape == (2, 48)
    paper = build("F2", seed=0)
    assert count_params(paper) == PAPER_COUNTS["F2"]
    with pytest.raises(UserError, match="10 outputs"):
        build("F1", num_classes=48)


def test_models_command_prints_table():
    out = cli("models").stdout
    for name, count in PAPER_COUNTS.items():
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert f"{count:,}" in line


def test_conv_networks_take_cpu_images_channels_last_with_the_same_outputs():
    """The pre-hook changes the layout of 4-D CPU inputs only: outputs and gradients equal the
    NCHW ones to float rounding, the parameters stay contiguous, dense networks have no hook."""
    import torch.nn.functional as F

    from sharpminima.models import channels_last_on_cpu

    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert channels_last_on_cpu(None, (x,))[0].is_contiguous(memory_format=torch.channels_last)
    assert channels_last_on_cpu(None, (x.flatten(1),)) is None  # 2-D: left alone
    grads = []
    for hooked in (True, False):
        model = build("C1", seed=0).eval()
        if not hooked:
            model._forward_pre_hooks.clear()
        F.cross_entropy(model(x), torch.arange(8)).backward()
        grads.append([p.grad for p in model.parameters()])
        assert all(p.is_contiguous() for p in model.parameters())
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not build("F1")._forward_pre_hooks and build("C2")._forward_pre_hooks
