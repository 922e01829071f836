"""Visual question answering data: sources, answer vocabulary, soft targets, metric."""

from .answers import AnswerVocab, build_answer_vocab, soft_score, vqa_accuracy
from .dataset import VQADataset, load_vqa, load_vqa_hf_records, write_vqa_predictions
from .normalize import normalize_answer
from .records import VQARecord, load_easy_vqa_records, load_vqav2_records

__all__ = [
    "AnswerVocab",
    "VQADataset",
    "VQARecord",
    "build_answer_vocab",
    "load_easy_vqa_records",
    "load_vqa",
    "load_vqa_hf_records",
    "load_vqav2_records",
    "normalize_answer",
    "soft_score",
    "vqa_accuracy",
    "write_vqa_predictions",
]
