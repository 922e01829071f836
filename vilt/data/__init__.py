"""Data sets for the tasks (image classification, VQA, image-text pairs, retrieval with
negatives, NLVR2), the collators that batch them, and the image decoding and error reporting
they share.

    from functools import partial
    # workers resize to uint8 (a quarter of the bytes); the collator's pad normalises
    transform = partial(processor.image_processor.preprocess_one, normalize=False)
    train = load_vqa(split="train", transform=transform, cache_images=True)  # easy-VQA
    test = load_vqa(split="test", vocab=train.vocab, transform=transform)
    loader = DataLoader(train, batch_size=32, shuffle=True, collate_fn=VQACollator(processor))
    for batch in loader:
        if batch is None:  # every item of the batch was skipped (skip_bad=True)
            continue
        meta = batch.pop("meta")  # question ids and human answers: not model inputs
        loss = model(**batch).loss
    print(train.skips.summary())  # with skip_bad=True: what was skipped, by reason
"""

from .base import ImageRecord, RecordDataset, pil_to_tensor
from .classification import ClassificationDataset, load_classification
from .collate import (
    ClassificationCollator,
    PretrainingCollator,
    VQACollator,
    collate_classification,
)
from .errors import SKIP_REASONS, DataError, ImageError, SkipCounter
from .images import load_image
from .masking import whole_word_mask
from .nlvr2 import NLVR2Collator, NLVR2Dataset, load_nlvr2
from .pairs import PairsDataset, load_pairs
from .ranking import (
    RankingCollator,
    RankingDataset,
    RetrievalPool,
    load_retrieval_pairs,
    retrieval_pool,
)
from .streaming import StreamingDataset
from .vqa import (
    AnswerVocab,
    VQADataset,
    build_answer_vocab,
    load_vqa,
    normalize_answer,
    soft_score,
    vqa_accuracy,
    write_vqa_predictions,
)

__all__ = [
    "SKIP_REASONS",
    "AnswerVocab",
    "ClassificationCollator",
    "ClassificationDataset",
    "DataError",
    "ImageError",
    "ImageRecord",
    "NLVR2Collator",
    "NLVR2Dataset",
    "PairsDataset",
    "PretrainingCollator",
    "RankingCollator",
    "RankingDataset",
    "RecordDataset",
    "RetrievalPool",
    "SkipCounter",
    "StreamingDataset",
    "VQACollator",
    "VQADataset",
    "build_answer_vocab",
    "collate_classification",
    "load_classification",
    "load_image",
    "load_nlvr2",
    "load_pairs",
    "load_retrieval_pairs",
    "load_vqa",
    "normalize_answer",
    "pil_to_tensor",
    "retrieval_pool",
    "soft_score",
    "vqa_accuracy",
    "whole_word_mask",
    "write_vqa_predictions",
]
