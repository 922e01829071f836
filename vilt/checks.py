"""Value checks of model inputs, and the switch that runs them inside a model's forward.

A check that reads a tensor's value (are the token ids inside the vocabulary? do the labels
lie in range?) waits for the device and breaks a ``torch.compile`` graph, so forwards never
run one by default. The data vilt makes is right by construction and checked where it is made
(processors, collators, data sets, which call the functions below). Inputs built by hand are
checked in the forward only when asked::

    with vilt.check_inputs():        # or VILT_CHECK_INPUTS=1 in the environment
        model(**batch)               # ValueError naming what is out of range

Each check raises ValueError with the message the forward would give. Shape checks cost nothing
and always run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = [
    "check_class_labels",
    "check_image_type_ids",
    "check_inputs",
    "check_itm_labels",
    "check_patch_coverage",
    "check_token_ids",
    "input_checks_enabled",
]

_enabled = os.environ.get("VILT_CHECK_INPUTS", "").strip().lower() not in ("", "0", "false", "no")


def input_checks_enabled() -> bool:
    """Whether forwards run the value checks now: the switch is on and nothing is compiling."""
    return _enabled and not torch.compiler.is_compiling()


@contextlib.contextmanager
def check_inputs(enabled: bool = True) -> Iterator[None]:
    """Run (or, with ``enabled=False``, skip) the value checks in forwards inside the block.

    Args:
        enabled: the state of the switch inside the block; the previous state comes back after.
    """
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def check_token_ids(input_ids: torch.Tensor, vocab_size: int, *, where: str = "input_ids") -> None:
    """Token ids must index the word-embedding table: each in ``[0, vocab_size)``.

    Args:
        input_ids: token ids of any shape.
        vocab_size: the number of rows of the embedding table.
        where: what to call the ids in the message.
    """
    if input_ids.numel() == 0:
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"{where} hold token ids outside the vocabulary [0, {vocab_size}): "
            f"min {low}, max {high}"
        )


def check_image_type_ids(type_ids: torch.Tensor, num_types: int) -> None:
    """Image modality types index the modality table past the text's 0: each in [1, n)."""
    if type_ids.numel() and (int(type_ids.min()) < 1 or int(type_ids.max()) >= num_types):
        raise ValueError(
            f"image_token_type_idx values must lie in [1, {num_types}), got "
            f"{sorted(set(type_ids.tolist()))}"
        )


def check_patch_coverage(valid_h: torch.Tensor, valid_w: torch.Tensor) -> None:
    """Every image's pixel_mask must cover at least one whole patch (rows and columns)."""
    empty = (valid_h == 0) | (valid_w == 0)
    if bool(empty.any()):
        bad = empty.nonzero(as_tuple=True)[0].tolist()
        raise ValueError(f"pixel_mask of sample(s) {bad} covers less than one whole patch")


def check_class_labels(labels: torch.Tensor, num_labels: int) -> None:
    """Class ids must lie in ``[0, num_labels)``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
        raise ValueError(
            f"labels must lie in [0, {num_labels}), got min {int(labels.min())}, "
            f"max {int(labels.max())}"
        )


def check_itm_labels(labels: torch.Tensor) -> None:
    """Image-text matching labels are 0 (mismatch) or 1 (match)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 1):
        raise ValueError(
            f"ITM labels must be 0 (mismatch) or 1 (match), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
