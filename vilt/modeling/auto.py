"""Load whatever model a checkpoint holds, by the architecture it names."""

from __future__ import annotations

import os
from typing import Any

from .pretrained import CheckpointError, PreTrainedModel, read_checkpoint


def model_classes() -> dict[str, type[PreTrainedModel]]:
    """Every concrete vilt model class by name."""
    from . import ranking, vilt_tasks, vit
    from . import vilt as vilt_models

    classes = {}
    for module in (vit, vilt_models, vilt_tasks, ranking):
        for name in dir(module):
            obj = getattr(module, name)
            is_model = isinstance(obj, type) and issubclass(obj, PreTrainedModel)
            if is_model and obj.__module__ == module.__name__ and not name.startswith("_"):
                classes[name] = obj
    return classes


def load_model(path_or_name: str | os.PathLike, **overrides: Any) -> PreTrainedModel:
    """The model class the checkpoint names (vilt or transformers format), with its weights.

    Args:
        path_or_name: a checkpoint directory, an original ViLT file or a hub name.
        **overrides: config fields to change (as in ``from_pretrained``).

    Returns:
        An instance of the vilt class named by the checkpoint's ``architectures``.

    Raises:
        CheckpointError: when the checkpoint cannot be read, names no class vilt can build,
            or its weights do not fit that class.
    """
    ckpt = read_checkpoint(path_or_name)
    classes = model_classes()
    cls = classes.get(ckpt.architecture)
    if cls is None:
        known = ", ".join(sorted(classes))
        raise CheckpointError(
            f"{ckpt.source}: names architecture {ckpt.architecture or '(none)'!r}, which vilt "
            f"cannot build; known: {known}. Load it with a model class instead."
        )
    return cls.from_checkpoint(ckpt, **overrides)
