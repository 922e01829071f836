"""Inputs to model-ready tensors: images (the ViLT and ViT pipelines), text (BERT WordPiece),
and :class:`ViltProcessor` joining both. All read and write transformers' processor files.
Test-time views (:mod:`vilt.processing.views`): the same model inputs seen mirrored or
shifted, their logits averaged at inference."""

from .image_base import BaseImageProcessor
from .image_processor import ImageProcessor, ViTImageProcessor
from .images import ImageInputError
from .processor import ViltProcessor
from .tokenizer import BatchEncoding, Tokenizer, train_tokenizer
from .views import AveragedViews, test_time_views

__all__ = [
    "AveragedViews",
    "BaseImageProcessor",
    "BatchEncoding",
    "ImageInputError",
    "ImageProcessor",
    "Tokenizer",
    "ViTImageProcessor",
    "ViltProcessor",
    "test_time_views",
    "train_tokenizer",
]
