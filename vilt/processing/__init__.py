"""Inputs to model-ready tensors: images (the ViLT and ViT pipelines), text (BERT WordPiece),
and :class:`ViltProcessor` joining both. All read and write transformers' processor files."""

from .image_base import BaseImageProcessor
from .image_processor import ImageProcessor, ViTImageProcessor
from .images import ImageInputError
from .processor import ViltProcessor
from .tokenizer import BatchEncoding, Tokenizer, train_tokenizer

__all__ = [
    "BaseImageProcessor",
    "BatchEncoding",
    "ImageInputError",
    "ImageProcessor",
    "Tokenizer",
    "ViTImageProcessor",
    "ViltProcessor",
    "train_tokenizer",
]
