"""Writing a vilt model as a transformers checkpoint (``save_pretrained(dir, format="transformers")``).

The directory holds config.json (model_type, architectures, id2label/label2id) and
model.safetensors in transformers' on-disk names, which transformers' from_pretrained of the
matching class loads with the same outputs.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from safetensors.torch import save_file

from ..atomic import atomic_write, write_text
from ..modeling.pretrained import CheckpointError, CheckpointWarning, PreTrainedModel
from .configs import config_to_transformers
from .keymaps import VILT_TO_TRANSFORMERS, vilt_to_transformers
from .reader import CONFIG_NAME, SAFETENSORS_NAME


def save_transformers(model: PreTrainedModel, path: Path) -> None:
    """Write ``model`` to directory ``path`` in transformers' format (the registered writer).

    Args:
        model: a vilt model whose class has a transformers counterpart (ViltForPreTraining is
            written as ViltForMaskedLM without its ITM head, with a CheckpointWarning).
        path: the directory (made when missing); config.json and model.safetensors in it are
            replaced atomically.

    Raises:
        CheckpointError: for a model class that transformers has no counterpart of.
    """
    architecture = type(model).__name__
    if architecture not in VILT_TO_TRANSFORMERS:
        known = ", ".join(sorted(VILT_TO_TRANSFORMERS))
        raise CheckpointError(
            f"{architecture} has no transformers counterpart; exportable: {known}"
        )
    config = config_to_transformers(model.config, architecture)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if architecture == "ViltForPreTraining":
        dropped = sorted(k for k in state if k.startswith("itm_head."))
        for k in dropped:
            del state[k]
        warnings.warn(
            "transformers has no ITM + MLM class: ViltForPreTraining is written as "
            f"ViltForMaskedLM, without {', '.join(dropped)}",
            CheckpointWarning,
            stacklevel=3,
        )
    # Clones: split q/k/v are views of one tensor and the decoder is the word embeddings, and
    # safetensors refuses tensors that share memory.
    tensors = {
        k: v.clone().contiguous()
        for k, v in vilt_to_transformers(state, family=config["model_type"]).items()
    }
    dtypes = {v.dtype for v in tensors.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        config["dtype"] = str(dtypes.pop()).removeprefix("torch.")
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(
        path / SAFETENSORS_NAME,
        lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}),
    )
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    write_text(path / CONFIG_NAME, text)
