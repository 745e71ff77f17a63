"""The stacked MLP: seeded default initialisation, forward and closed-form backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from lgals.model import StackedMLP, batched_matmul, layer_sizes, make_mlp

SEEDS = [0, 3, 17]
SIZES = layer_sizes(40, 10)  # mnist1d's: 40 features, 10 classes
N_PARAMS = 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10  # 78858


def flat(model: nn.Module) -> torch.Tensor:
    return parameters_to_vector(model.parameters()).detach()


def test_make_mlp_architecture():
    model = make_mlp(0, SIZES)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 256), (256, 256),
                                                                  (256, 10)]
    assert SIZES == (40, 256, 256, 10)
    assert flat(model).numel() == N_PARAMS


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_make_mlp_is_pytorch_default_init_seeded(seed):
    """Same parameters as building the three nn.Linear layers right after manual_seed(seed)."""
    outer = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        layers = [nn.Linear(40, 256), nn.Linear(256, 256), nn.Linear(256, 10)]
    finally:
        torch.set_rng_state(outer)
    expected = torch.cat([parameters_to_vector(layer.parameters()) for layer in layers]).detach()
    assert torch.equal(flat(make_mlp(seed, SIZES)), expected)


def test_make_mlp_leaves_global_torch_rng_alone_and_seeds_differ():
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    a, b, c = make_mlp(5, SIZES), make_mlp(5, SIZES), make_mlp(6, SIZES)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))


def test_stack_rows_are_make_mlp_parameters():
    stack = StackedMLP(SEEDS, "cpu", SIZES)
    assert stack.flat.shape == (len(SEEDS), N_PARAMS)
    assert stack.grad.shape == stack.flat.shape
    for i, seed in enumerate(SEEDS):
        assert torch.equal(stack.flat[i], flat(make_mlp(seed, SIZES)))
        model = make_mlp(seed, SIZES)
        linears = [m for m in model if isinstance(m, nn.Linear)]
        for layer, weight, bias in zip(linears, stack.weights, stack.biases):
            assert torch.equal(weight[i], layer.weight.detach())
            assert torch.equal(bias[i], layer.bias.detach())


def test_layer_views_share_storage_with_flat_buffers():
    stack = StackedMLP([1, 2], "cpu", SIZES)
    stack.flat[1, 0] = 123.0  # first entry of layer 0's weight
    assert stack.weights[0][1, 0, 0].item() == 123.0
    stack.flat[0, -1] = -7.0  # last entry: layer 2's last bias
    assert stack.biases[2][0, -1].item() == -7.0
    stack.grad[1, 40 * 256] = 5.0  # first entry of layer 0's bias gradient
    assert stack.bias_grads[0][1, 0].item() == 5.0


def reference_logits(stack, x):
    if x.dim() == 2:
        return torch.stack([stack.module(i)(x) for i in range(len(stack.seeds))])
    return torch.stack([stack.module(i)(x[i]) for i in range(len(stack.seeds))])


@pytest.mark.parametrize("shared", [True, False])
def test_forward_equals_module_forward(shared):
    gen = torch.Generator().manual_seed(0)
    stack = StackedMLP(SEEDS, "cpu", SIZES)
    x = torch.randn(32, 40, generator=gen) if shared else torch.randn(3, 32, 40, generator=gen)
    logits, inputs = stack.forward(x)
    assert logits.shape == (3, 32, 10)
    with torch.no_grad():
        expected = reference_logits(stack, x)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    # layer inputs: x, then the two hidden ReLU activations
    assert len(inputs) == 3 and inputs[0] is x
    with torch.no_grad():
        for i in range(3):
            model = stack.module(i)
            xi = x if shared else x[i]
            h1 = model[1](model[0](xi))
            h2 = model[3](model[2](h1))
            torch.testing.assert_close(inputs[1][i], h1, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(inputs[2][i], h2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", [True, False])
def test_backward_equals_autograd(shared):
    gen = torch.Generator().manual_seed(1)
    stack = StackedMLP(SEEDS, "cpu", SIZES)
    # move off the init a little so the test does not depend on init-specific structure
    stack.flat.add_(0.01 * torch.randn(stack.flat.shape, generator=gen))
    x = torch.randn(64, 40, generator=gen) if shared else torch.randn(3, 64, 40, generator=gen)
    logit_grad = torch.randn(3, 64, 10, generator=gen) / 64
    logits, inputs = stack.forward(x)
    stack.backward(inputs, logit_grad)
    for i in range(3):
        model = stack.module(i)
        out = model(x if shared else x[i])
        torch.testing.assert_close(out.detach(), logits[i], rtol=1e-5, atol=1e-6)
        (out * logit_grad[i]).sum().backward()
        expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(stack.grad[i], expected, rtol=1e-5, atol=1e-6)
        assert expected.abs().max() > 1e-2  # the comparison is not vacuous


def test_backward_overwrites_rather_than_accumulates():
    gen = torch.Generator().manual_seed(2)
    stack = StackedMLP([4, 5], "cpu", SIZES)
    x = torch.randn(16, 40, generator=gen)
    logit_grad = torch.randn(2, 16, 10, generator=gen)
    _, inputs = stack.forward(x)
    stack.backward(inputs, logit_grad)
    first = stack.grad.clone()
    stack.backward(inputs, logit_grad)
    assert torch.equal(stack.grad, first)
    stack.backward(inputs, torch.zeros_like(logit_grad))
    assert torch.equal(stack.grad, torch.zeros_like(first))


def test_module_round_trips():
    stack = StackedMLP(SEEDS, "cpu", SIZES)
    stack.flat.add_(torch.randn(stack.flat.shape, generator=torch.Generator().manual_seed(3)))
    for i in range(len(SEEDS)):
        model = stack.module(i)
        assert isinstance(model, nn.Sequential)
        assert not model.training
        assert torch.equal(flat(model), stack.flat[i])
        # an independent copy: changing it does not touch the stack, nor the other way round
        before = stack.flat[i].clone()
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        assert torch.equal(stack.flat[i], before)
        stack.flat[i].mul_(2.0)
        assert not torch.equal(flat(model), stack.flat[i])
        assert torch.equal(flat(stack.module(i)), stack.flat[i])
    # a module loaded into a fresh stack's row reproduces it
    fresh = StackedMLP(SEEDS, "cpu", SIZES)
    fresh.flat[1].copy_(flat(stack.module(1)))
    assert torch.equal(fresh.flat[1], stack.flat[1])


def test_predict_is_bit_identical_to_reloaded_module():
    """``predict`` (used for held-out metrics) must match the saved ``nn.Sequential`` exactly."""
    stack = StackedMLP(SEEDS, "cpu", SIZES)
    stack.flat.add_(0.05 * torch.randn(stack.flat.shape,
                                       generator=torch.Generator().manual_seed(4)))
    x = torch.randn(200, 40, generator=torch.Generator().manual_seed(5))
    logits = stack.predict(x)
    assert logits.shape == (3, 200, 10)
    with torch.no_grad():
        for i in range(len(SEEDS)):
            assert torch.equal(logits[i], stack.module(i)(x))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n_members", [1, 2, 3, 5, 7])
def test_batched_matmul_equals_bmm_and_writes_into_strided_views(threads, n_members):
    """Splitting the batch to balance threads changes nothing but rounding; ``out`` is a
    strided view (like a weight gradient inside the flat buffer) and is written in place."""
    gen = torch.Generator().manual_seed(n_members)
    a = torch.randn(n_members, 16, 24, generator=gen)
    b = torch.randn(n_members, 24, 8, generator=gen).transpose(1, 2).contiguous().transpose(1, 2)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = batched_matmul(a, b)
        buffer = torch.zeros(n_members, 16 * 8 + 5)
        view = buffer[:, 3:3 + 16 * 8].view(n_members, 16, 8)
        written = batched_matmul(a, b, out=view)
    finally:
        torch.set_num_threads(before)
    expected = torch.bmm(a, b)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)
    assert written.data_ptr() == view.data_ptr()
    torch.testing.assert_close(buffer[:, 3:3 + 16 * 8].view(n_members, 16, 8), expected,
                               rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(buffer[:, :3]) == 0 and torch.count_nonzero(buffer[:, -2:]) == 0


# --- bfloat16 products ----------------------------------------------------------------------

# bfloat16 keeps 8 significant bits: each rounding of an operand or a product is off by up to
# 2**-9 of it, and float32 accumulation in another order can move a rounded product by one
# unit in the last place (2**-8). Where two computations round the same products, they are
# held to 1e-2 relative error (a few such units).
BF16_SAME_ROUNDING = 1e-2


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.double() - expected.double()).norm() / expected.double().norm())


def bf16_autograd(stack: StackedMLP, member: int, x: torch.Tensor, logit_grad: torch.Tensor):
    """Autograd through the computation the stack's bf16 forward describes: operands rounded
    to bfloat16, hidden layers' bias and ReLU in bfloat16, the logits' bias in float32."""
    params = [t[member].clone().requires_grad_() for pair in zip(stack.weights, stack.biases)
              for t in pair]
    h = x
    for i in range(0, len(params), 2):
        weight, bias = params[i], params[i + 1]
        product = h.bfloat16() @ weight.bfloat16().T
        if i < len(params) - 2:
            h = torch.relu(product + bias.bfloat16())
        else:
            h = product + bias  # promoted to float32
    (h * logit_grad).sum().backward()
    return h.detach(), torch.cat([p.grad.reshape(-1) for p in params])


@pytest.mark.parametrize("shared", [True, False])
def test_bf16_closed_form_backward_equals_autograd(shared):
    gen = torch.Generator().manual_seed(5)
    stack = StackedMLP(SEEDS, "cpu", SIZES, matmul_dtype=torch.bfloat16)
    stack.flat.add_(0.01 * torch.randn(stack.flat.shape, generator=gen))
    x = torch.randn(64, 40, generator=gen) if shared else torch.randn(3, 64, 40, generator=gen)
    logit_grad = torch.randn(3, 64, 10, generator=gen) / 64
    logits, inputs = stack.forward(x)
    stack.backward(inputs, logit_grad)
    assert logits.dtype == stack.grad.dtype == stack.flat.dtype == torch.float32
    assert all(h.dtype == torch.bfloat16 for h in inputs)
    for i in range(3):
        expected_logits, expected_grad = bf16_autograd(stack, i, x if shared else x[i],
                                                       logit_grad[i])
        assert relative_error(logits[i], expected_logits) < BF16_SAME_ROUNDING
        assert relative_error(stack.grad[i], expected_grad) < BF16_SAME_ROUNDING


def test_bf16_tracks_float32():
    """bf16 against float32 on the same weights: the logits within a few roundings (3e-2).
    The gradients differ more, and for a reason: a hidden unit whose input lies within bf16
    rounding of 0 switches side of its ReLU, and contributes all or nothing of its share;
    with ~2**-8 of the units switching, that is ~sqrt(2**-8) = 6% of a gradient's norm. So
    the gradients are held to 15%, and to pointing the same way (cosine > 0.99)."""
    gen = torch.Generator().manual_seed(5)
    exact = StackedMLP(SEEDS, "cpu", SIZES)
    exact.flat.add_(0.01 * torch.randn(exact.flat.shape, generator=gen))
    low = StackedMLP(SEEDS, "cpu", SIZES, flat=exact.flat.clone(), matmul_dtype=torch.bfloat16)
    x = torch.randn(3, 128, 40, generator=gen)
    logit_grad = torch.randn(3, 128, 10, generator=gen) / 128
    results = []
    for stack in (exact, low):
        logits, inputs = stack.forward(x)
        stack.backward(inputs, logit_grad)
        results.append((logits, stack.grad.clone()))
    (logits, grad), (low_logits, low_grad) = results
    assert 1e-4 < relative_error(low_logits, logits) < 3e-2  # rounded, but not broken
    for i in range(3):
        assert 1e-4 < relative_error(low_grad[i], grad[i]) < 0.15
        assert torch.nn.functional.cosine_similarity(low_grad[i], grad[i], dim=0) > 0.99


def test_bf16_stacked_equals_each_member_alone():
    gen = torch.Generator().manual_seed(6)
    stack = StackedMLP(SEEDS, "cpu", SIZES, matmul_dtype=torch.bfloat16)
    x = torch.randn(3, 128, 40, generator=gen)
    logit_grad = torch.randn(3, 128, 10, generator=gen) / 128
    logits, inputs = stack.forward(x)
    stack.backward(inputs, logit_grad)
    for i, seed in enumerate(SEEDS):
        alone = StackedMLP([seed], "cpu", SIZES, matmul_dtype=torch.bfloat16)
        alone_logits, alone_inputs = alone.forward(x[i:i + 1])
        alone.backward(alone_inputs, logit_grad[i:i + 1])
        assert relative_error(logits[i], alone_logits[0]) < BF16_SAME_ROUNDING
        assert relative_error(stack.grad[i], alone.grad[0]) < BF16_SAME_ROUNDING


def test_bf16_weights_are_refreshed_from_the_float32_master_each_forward():
    stack = StackedMLP([0], "cpu", SIZES, matmul_dtype=torch.bfloat16)
    x = torch.randn(8, 40, generator=torch.Generator().manual_seed(7))
    before, _ = stack.forward(x)
    stack.flat.mul_(2.0)  # what an optimizer step does to the master, in place
    after, _ = stack.forward(x)
    for low, master in zip(stack.matmul_weights + stack.matmul_biases,
                           stack.weights + stack.biases):
        assert low.dtype == torch.bfloat16 and low.is_contiguous()
        assert torch.equal(low, master.bfloat16())
    assert not torch.allclose(before, after, rtol=1e-2)
