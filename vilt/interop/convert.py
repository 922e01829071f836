"""``convert``: a checkpoint from one format to the other, keeping its model class.

The class comes from the source's own ``architectures`` (or, for original ViLT .ckpt files,
from the heads it holds); the files that preprocess inputs (processor and tokenizer configs,
vocabularies) travel with the weights, so the converted directory is as usable as the source.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..atomic import file_set
from ..modeling.auto import model_classes
from ..modeling.pretrained import CheckpointError, read_checkpoint
from .reader import resolve

FORMATS = ("transformers", "vilt")
# Preprocessing files copied next to the converted weights when the source has them.
SIDE_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, to: str | None = None) -> Path:
    """Read ``src`` (a vilt or transformers directory, a hub name, or an original ViLT .ckpt)
    and write it to directory ``dst`` in format ``to``; returns ``dst``.

    Floating-point weights keep their dtype (an fp16 checkpoint stays fp16). The source's
    preprocessing files (``SIDE_FILES``) are copied along; the written files change together.

    Args:
        src: the checkpoint to read: a directory, a hub name or an original ViLT file.
        dst: the directory to write; created when missing, its other files left as they are.
        to: "transformers" or "vilt"; None picks the other format: transformers for a vilt
            checkpoint, vilt for anything else.

    Returns:
        ``dst`` as a Path.

    Raises:
        ValueError: for an unknown ``to``.
        CheckpointError: when ``src`` cannot be read, names a class vilt cannot build, or
            holds a model the target format cannot express.
    """
    if to is not None and to not in FORMATS:
        raise ValueError(f"unknown target format {to!r}; choose one of {', '.join(FORMATS)}")
    ckpt = read_checkpoint(src)
    if to is None:
        to = "transformers" if ckpt.format == "vilt" else "vilt"
    classes = model_classes()
    cls = classes.get(ckpt.architecture)
    if cls is None:
        raise CheckpointError(
            f"{ckpt.source}: names architecture {ckpt.architecture or '(none)'!r}, which vilt "
            f"cannot build; known: {', '.join(sorted(classes))}"
        )
    model = cls.from_checkpoint(ckpt)
    dtypes = {v.dtype for v in ckpt.state_dict.values() if v.is_floating_point()}
    if len(dtypes) == 1 and (dtype := dtypes.pop()) != torch.float32:
        model = model.to(dtype)
    out = Path(dst)
    source_dir = resolve(src)
    copy = source_dir is not None and source_dir.is_dir() and source_dir.resolve() != out.resolve()
    with file_set(out) as stage:  # the weights and the files copied along change together
        model.save_pretrained(stage, format=to)
        for name in SIDE_FILES if copy else ():
            if (source_dir / name).is_file():
                shutil.copyfile(source_dir / name, stage / name)
    return out
