"""Shared fixtures for the interop tests."""

import pytest
import torch


@pytest.fixture
def perturb():
    """Add noise to every parameter of a model and put it in eval mode.

    Fresh models hold zeros and ones (biases, LayerNorms, ViLT's position grid and class token),
    which would let a wrong key map pass a parity test; noise makes every tensor count."""

    def apply(model: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
        gen = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn(param.shape, generator=gen) * scale)
        return model.eval()

    return apply
