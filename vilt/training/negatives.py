"""Hard ITM negatives, chosen in the training step by the model being trained.

A collator cannot run the model, so the work is split. :class:`vilt.data.PretrainingCollator`
(``negatives="hard"``) picks which pairs become negatives, as for random negatives, and gives
each K candidate images from elsewhere in its batch (``itm_hard_rows`` (N,) and
``itm_hard_candidates`` (N, K)). :class:`HardNegatives`, passed to the Trainer as
``prepare_inputs``, runs in the step before the forward: it scores the N x K candidate pairs
with the current model's ITM head (no gradients, evaluation mode), and gives each negative
the candidate image the model finds most matching: the mismatch it is most wrong about.

Everything stays on the device: the choice is an argmax and the swap an ``index_copy``,
with shapes the collator fixed; nothing is read on the host. The cost is one forward pass
without gradients over N x K pairs, about ``itm_negative_ratio * K`` times a batch (2x with
the default 0.5 and K = 4, against a training step's forward and backward of ~3x): the
negatives are harder, the steps slower. Choosing among K random candidates of the batch,
rather than among every image, keeps a pair's true match from being picked too often (a
picked image that does match the caption is a false negative).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["HARD_NEGATIVE_KEYS", "HardNegatives"]

HARD_NEGATIVE_KEYS = ("itm_hard_rows", "itm_hard_candidates")
_TEXT = ("input_ids", "attention_mask", "token_type_ids")


class HardNegatives:
    """``prepare_inputs`` for the Trainer: hard ITM negatives by the current model's scores.

    ``model`` must have ``match_scores(**inputs)`` ((B,) log-odds of a match), as
    :class:`vilt.ViltForPreTraining` has. Batches without the collator's candidate keys
    (evaluation, other collators) pass through unchanged.
    """

    def __call__(self, model: torch.nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs with each chosen negative's image replaced.

        Args:
            model: the bare model being trained (not a DDP or compile wrapper).
            inputs: the batch's model inputs on the device, with the collator's
                ``itm_hard_rows`` and ``itm_hard_candidates``.
        """
        inputs = dict(inputs)
        rows = inputs.pop("itm_hard_rows", None)
        candidates = inputs.pop("itm_hard_candidates", None)
        if rows is None or candidates is None or rows.numel() == 0:  # shapes, not values
            return inputs
        n, k = candidates.shape
        flat = candidates.reshape(-1)
        pair = {key: inputs[key][rows].repeat_interleave(k, 0) for key in _TEXT if key in inputs}
        pair["pixel_values"] = inputs["pixel_values"][flat]
        if inputs.get("pixel_mask") is not None:
            pair["pixel_mask"] = inputs["pixel_mask"][flat]
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                scores = model.match_scores(**pair).reshape(n, k)
        finally:
            model.train(training)
        chosen = candidates.gather(1, scores.argmax(1, keepdim=True)).reshape(n)
        for key in ("pixel_values", "pixel_mask"):
            if inputs.get(key) is not None:
                images = inputs[key]
                inputs[key] = images.index_copy(0, rows, images[chosen])
        return inputs
