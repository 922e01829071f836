"""vilt: Vision Transformers and single-stream vision-and-language transformers on torch."""

from .config import ConfigError, ViltConfig, ViTConfig, get_preset, preset_names
from .modeling import (
    CheckpointError,
    CheckpointWarning,
    PreTrainedModel,
    ViltForImagesAndTextClassification,
    ViltForImageTextMatching,
    ViltForMaskedLM,
    ViltForPreTraining,
    ViltForQuestionAnswering,
    ViltModel,
    ViTForImageClassification,
    ViTModel,
    load_model,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "ConfigError",
    "PreTrainedModel",
    "ViTConfig",
    "ViTForImageClassification",
    "ViTModel",
    "ViltConfig",
    "ViltForImageTextMatching",
    "ViltForImagesAndTextClassification",
    "ViltForMaskedLM",
    "ViltForPreTraining",
    "ViltForQuestionAnswering",
    "ViltModel",
    "__version__",
    "get_preset",
    "load_model",
    "preset_names",
]
