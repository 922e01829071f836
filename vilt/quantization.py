"""Opt-in int8 inference on CPU: torch's dynamic quantization of every Linear layer.

Weights are stored as int8 (per output channel) and activations are quantized on the fly, so
the matrix products run on int8 kernels (fbgemm/oneDNN) while LayerNorm, GELU, softmax and the
embeddings stay in fp32. Outputs change slightly; ``benchmarks/run.py --cases int8 --vqa-model
DIR`` reports the accuracy change next to the speed. Never the default: a model quantized here
is for inference on the CPU only (no training, no GPU; save the fp32 model, not this one).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

__all__ = ["quantize_int8"]


def quantize_int8(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose ``nn.Linear`` layers run in dynamic int8.

    The model must be an fp32 model on the CPU. The original is left untouched unless
    ``inplace``."""
    params = list(model.parameters())
    if any(p.device.type != "cpu" for p in params):
        raise ValueError("int8 dynamic quantization runs on the CPU; move the model there first")
    if any(p.dtype != torch.float32 for p in params if p.is_floating_point()):
        raise ValueError("int8 dynamic quantization needs an fp32 model; call model.float()")
    from torch.ao.quantization import quantize_dynamic

    target = model if inplace else copy.deepcopy(model)
    target.eval()
    with warnings.catch_warnings():
        # torch marks its eager quantization API as deprecated in favour of torchao; it is
        # still the one that ships with torch and needs no extra dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
        quantize_dynamic(target, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return target
