"""Activations by config name, and the MLP's second half with the activation recomputed.

A transformer MLP keeps two (tokens, hidden)-sized tensors per block for backward: the
pre-activation (the activation's own backward reads it) and the activation (the second
Linear's weight gradient reads it). ``activation_linear`` keeps only the pre-activation and
recomputes the activation in backward: one elementwise pass for a third of a block's saved
activations. Forward runs the same ops as ``Linear(act(h))``; backward uses the same kernels
autograd would, so results and gradients are those of the plain path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

_aten = torch.ops.aten


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _quick_gelu(x)


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _quick_gelu_grad(grad: torch.Tensor, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(1.702 * h)
    return torch.add(grad * s, _aten.sigmoid_backward(grad * h, s) * 1.702, out=out)


# name -> (module factory, function, gradient). The function is what the module computes;
# gradient(grad of the output, input, out) writes the input's gradient into ``out`` (which may
# be ``grad`` itself) with the kernel autograd runs for the module.
_ActGrad = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
_ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], Callable, _ActGrad]] = {
    "gelu": (
        nn.GELU,
        F.gelu,
        lambda g, h, out: _aten.gelu_backward.grad_input(g, h, grad_input=out),
    ),
    "gelu_new": (
        lambda: nn.GELU(approximate="tanh"),
        lambda h: F.gelu(h, approximate="tanh"),
        lambda g, h, out: _aten.gelu_backward.grad_input(g, h, approximate="tanh", grad_input=out),
    ),
    "quick_gelu": (_QuickGELU, _quick_gelu, _quick_gelu_grad),
    # relu(h) <= 0 exactly where h <= 0: the same mask as autograd's, read from the input
    "relu": (
        nn.ReLU,
        F.relu,
        lambda g, h, out: _aten.threshold_backward.grad_input(g, h, 0, grad_input=out),
    ),
    "silu": (
        nn.SiLU,
        F.silu,
        lambda g, h, out: _aten.silu_backward.grad_input(g, h, grad_input=out),
    ),
    "tanh": (
        nn.Tanh,
        torch.tanh,
        lambda g, h, out: _aten.tanh_backward.grad_input(g, torch.tanh(h), grad_input=out),
    ),
}
_ACTIVATIONS["gelu_pytorch_tanh"] = _ACTIVATIONS["gelu_new"]
_ACTIVATIONS["swish"] = _ACTIVATIONS["silu"]


def activation(name: str) -> nn.Module:
    """The activation module for a config's ``hidden_act`` name."""
    return _ACTIVATIONS[name][0]()


class _ActivationLinear(torch.autograd.Function):
    """linear(act(h), weight, bias), keeping h (not act(h)) for backward."""

    @staticmethod
    def forward(ctx, h, weight, bias, name):
        fn = _ACTIVATIONS[name][1]
        h = h.contiguous()  # backward views its recomputed activation as (tokens, hidden)
        ctx.name = name
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(h, weight)
        return F.linear(fn(h), weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        h, weight = ctx.saved_tensors
        _, fn, act_grad = _ACTIVATIONS[ctx.name]
        # The products autograd runs for linear's addmm on the flattened (tokens, features)
        # view, in the compute dtype (under autocast the forward cast weight and bias to it).
        # One (tokens, hidden) buffer serves in turn as the recomputed activation, its
        # gradient and h's gradient: one allocation where autograd makes two.
        grad = grad_out.reshape(-1, grad_out.shape[-1])
        buf = fn(h)  # the forward's activation, recomputed bit for bit
        flat = buf.view(-1, buf.shape[-1])
        grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_w = grad.t().mm(flat).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0).to(ctx.bias_dtype)
        grad_h = None
        if ctx.needs_input_grad[0]:
            torch.mm(grad, weight.to(grad.dtype), out=flat)
            grad_h = act_grad(buf, h, buf)
        return grad_h, grad_w, grad_b, None


def activation_linear(
    h: torch.Tensor, linear: nn.Linear, name: str, act: nn.Module
) -> torch.Tensor:
    """``linear(act(h))``; when it builds a graph, one that keeps h alone for backward.

    ``act`` is the module for ``name``; the plain path (no graph to build, or a ``linear``
    that is not a plain nn.Linear, e.g. a quantized one) runs it as is."""
    if (
        torch.is_grad_enabled()
        and type(linear) is nn.Linear
        and (h.requires_grad or linear.weight.requires_grad)
    ):
        return _ActivationLinear.apply(h, linear.weight, linear.bias, name)
    return linear(act(h))
