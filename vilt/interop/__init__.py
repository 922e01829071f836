"""transformers checkpoints in and out: importing this package registers the reader (transformers
directories, hub names, original ViLT .ckpt files) and the ``format="transformers"`` writer."""

from ..modeling.from_vit import register_text_reader
from ..modeling.pretrained import register_checkpoint_reader, register_checkpoint_writer
from .bert import read_bert_text_embeddings
from .configs import config_from_transformers, config_to_transformers
from .convert import convert
from .export import save_transformers
from .keymaps import (
    TRANSFORMERS_TO_VILT,
    VILT_TO_TRANSFORMERS,
    transformers_to_vilt,
    vilt_to_transformers,
)
from .original import read_original_checkpoint
from .reader import read_transformers_checkpoint, resolve

register_checkpoint_reader(read_transformers_checkpoint)
register_checkpoint_writer("transformers", save_transformers)
register_text_reader(read_bert_text_embeddings)

__all__ = [
    "TRANSFORMERS_TO_VILT",
    "VILT_TO_TRANSFORMERS",
    "config_from_transformers",
    "config_to_transformers",
    "convert",
    "read_bert_text_embeddings",
    "read_original_checkpoint",
    "read_transformers_checkpoint",
    "resolve",
    "save_transformers",
    "transformers_to_vilt",
    "vilt_to_transformers",
]
