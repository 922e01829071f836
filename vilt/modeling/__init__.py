"""Models: the shared layers, ViT, ViLT and their heads, and the checkpoint mechanism."""

from .auto import load_model, model_classes
from .outputs import EncoderOutput, ModelOutput, PreTrainingOutput, TaskOutput
from .pretrained import CheckpointError, CheckpointWarning, PreTrainedModel
from .ranking import ViltForImageTextRetrieval
from .vilt import ViltModel
from .vilt_tasks import (
    ViltForImagesAndTextClassification,
    ViltForImageTextMatching,
    ViltForMaskedLM,
    ViltForPreTraining,
    ViltForQuestionAnswering,
)
from .vit import ViTForImageClassification, ViTModel

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "EncoderOutput",
    "ModelOutput",
    "PreTrainedModel",
    "PreTrainingOutput",
    "TaskOutput",
    "ViTForImageClassification",
    "ViTModel",
    "ViltForImageTextMatching",
    "ViltForImageTextRetrieval",
    "ViltForImagesAndTextClassification",
    "ViltForMaskedLM",
    "ViltForPreTraining",
    "ViltForQuestionAnswering",
    "ViltModel",
    "load_model",
    "model_classes",
]
