"""vilt: Vision Transformers and single-stream vision-and-language transformers on torch."""

from . import viz
from .checks import check_inputs
from .config import ConfigError, ViltConfig, ViTConfig, get_preset, preset_names
from .embedding import Embedder, embed
from .interop import convert  # importing interop registers transformers' reader and writer
from .modeling import (
    CheckpointError,
    CheckpointWarning,
    PreTrainedModel,
    ViltForImagesAndTextClassification,
    ViltForImageTextMatching,
    ViltForImageTextRetrieval,
    ViltForMaskedLM,
    ViltForPreTraining,
    ViltForQuestionAnswering,
    ViltModel,
    ViTForImageClassification,
    ViTModel,
    load_model,
)
from .predict import answer_question, attention_map
from .processing import ImageProcessor, Tokenizer, ViltProcessor, ViTImageProcessor, train_tokenizer
from .retrieval import RetrievalResult, chance_recall, retrieval_recall

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "ConfigError",
    "Embedder",
    "ImageProcessor",
    "PreTrainedModel",
    "RetrievalResult",
    "Tokenizer",
    "ViTConfig",
    "ViTForImageClassification",
    "ViTImageProcessor",
    "ViTModel",
    "ViltConfig",
    "ViltForImageTextMatching",
    "ViltForImageTextRetrieval",
    "ViltForImagesAndTextClassification",
    "ViltForMaskedLM",
    "ViltForPreTraining",
    "ViltForQuestionAnswering",
    "ViltModel",
    "ViltProcessor",
    "__version__",
    "answer_question",
    "attention_map",
    "chance_recall",
    "check_inputs",
    "convert",
    "embed",
    "get_preset",
    "load_model",
    "preset_names",
    "retrieval_recall",
    "train_tokenizer",
    "viz",
]
