"""The MLP recomputes its activation in backward instead of keeping it: the same outputs and
gradients as Linear(act(h)) for every activation a config allows, a third less saved memory,
and it composes with dropout, gradient checkpointing, bf16 autocast and torch.compile."""

import pytest
import torch

import vilt
from vilt.config import ACTIVATIONS
from vilt.modeling.activations import activation_linear
from vilt.modeling.layers import Mlp


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def plain_forward(mlp: Mlp, x: torch.Tensor) -> torch.Tensor:
    """The textbook MLP: autograd keeps both the pre-activation and the activation."""
    return mlp.drop(mlp.fc2(mlp.act(mlp.fc1(x))))


def run(mlp: Mlp, x: torch.Tensor, grad: torch.Tensor, forward, autocast: bool = False):
    mlp.zero_grad()
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = forward(mlp, x)
    y.backward(grad.to(y.dtype))
    return y.detach(), [x.grad.clone()] + [p.grad.clone() for p in mlp.parameters()]


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("autocast", [False, True])
def test_same_outputs_and_gradients_as_the_plain_mlp(act, autocast):
    mlp = Mlp(dim=16, hidden_dim=64, act=act).train()
    x, grad = torch.randn(3, 7, 16), torch.randn(3, 7, 16)
    y_plain, grads_plain = run(mlp, x, grad, plain_forward, autocast)
    y_fast, grads_fast = run(mlp, x, grad, Mlp.forward, autocast)
    assert y_fast.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert torch.equal(y_fast, y_plain)
    for fast, plain in zip(grads_fast, grads_plain, strict=True):
        assert fast.dtype == plain.dtype
        torch.testing.assert_close(fast, plain, atol=0, rtol=1e-6)


def saved_activation_bytes(module: torch.nn.Module, fn) -> int:
    """Bytes of the distinct storages other than ``module``'s parameters that autograd saves
    while ``fn`` runs."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_keeps_the_pre_activation_only():
    mlp = Mlp(dim=16, hidden_dim=64).train()
    x = torch.randn(3, 7, 16, requires_grad=True)
    tokens = 3 * 7 * 4  # bytes per feature of the (3, 7) tokens in fp32
    assert saved_activation_bytes(mlp, lambda: plain_forward(mlp, x)) == tokens * (16 + 64 + 64)
    assert saved_activation_bytes(mlp, lambda: mlp(x)) == tokens * (16 + 64)


def test_inference_and_frozen_layers_run_the_plain_path():
    mlp = Mlp(dim=16, hidden_dim=64).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.equal(mlp(x), plain_forward(mlp, x))
    h = torch.randn(2, 5, 64)  # no grad anywhere: nothing to keep
    mlp.fc2.requires_grad_(False)
    out = activation_linear(h, mlp.fc2, "gelu", mlp.act)
    assert out.grad_fn is None


def test_dropout_in_training_draws_the_same_mask():
    mlp = Mlp(dim=16, hidden_dim=64, drop=0.3).train()
    x, grad = torch.randn(4, 6, 16), torch.randn(4, 6, 16)
    torch.manual_seed(5)
    y_plain, grads_plain = run(mlp, x, grad, plain_forward)
    torch.manual_seed(5)
    y_fast, grads_fast = run(mlp, x, grad, Mlp.forward)
    assert torch.equal(y_fast, y_plain)
    assert (y_fast == 0).any()  # dropout did drop something
    for fast, plain in zip(grads_fast, grads_plain, strict=True):
        torch.testing.assert_close(fast, plain, atol=0, rtol=1e-6)


def model_grads(model, inputs) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(**inputs).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_vqa_model_gradients_match_the_plain_mlp(monkeypatch, checkpointing):
    config = vilt.ViltConfig.from_preset("vilt-test", num_labels=5, hidden_act="quick_gelu")
    model = vilt.ViltForQuestionAnswering(config).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    inputs = dict(
        input_ids=torch.randint(1, 100, (3, 6)),
        pixel_values=torch.randn(3, 3, 32, 32),
        labels=torch.rand(3, 5),
    )
    fast = model_grads(model, inputs)
    monkeypatch.setattr(Mlp, "forward", plain_forward)
    plain = model_grads(model, inputs)
    assert fast.keys() == plain.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], atol=0, rtol=1e-6, msg=name)


def test_traces_into_one_graph_under_torch_compile():
    mlp = Mlp(dim=16, hidden_dim=64, act="gelu").train()
    x, grad = torch.randn(3, 7, 16), torch.randn(3, 7, 16)
    compiled = torch.compile(mlp, backend="aot_eager", fullgraph=True)
    y_plain, grads_plain = run(mlp, x, grad, plain_forward)
    y_compiled, grads_compiled = run(mlp, x, grad, lambda _, t: compiled(t))
    torch.testing.assert_close(y_compiled, y_plain, atol=0, rtol=1e-6)
    for fast, plain in zip(grads_compiled, grads_plain, strict=True):
        torch.testing.assert_close(fast, plain, atol=0, rtol=1e-6)
