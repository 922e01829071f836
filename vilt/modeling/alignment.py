"""Word-patch alignment (WPA): an optimal-transport distance between a pair's text tokens and
image patches, which ViLT's pretraining lowers for matched pairs and raises for mismatched ones.

The transport plan comes from the inexact proximal point method (IPOT): a few Sinkhorn-like
scaling steps per proximal iteration, run without gradients; the distance is the cost summed
over the plan, so the gradient flows through the (cosine) cost alone. Every operation is a
batched tensor op with shapes fixed by the input's: nothing is read on the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosine_cost", "ipot_plan", "wpa_distance", "wpa_token_masks"]


def cosine_cost(text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, N, D) -> (B, T, N): 1 - cosine similarity of every text-patch pair."""
    text = F.normalize(text, dim=-1, eps=1e-5)
    image = F.normalize(image, dim=-1, eps=1e-5)
    return 1 - text @ image.transpose(1, 2)


@torch.no_grad()
def ipot_plan(
    cost: torch.Tensor,
    text_mask: torch.Tensor,
    image_mask: torch.Tensor,
    *,
    beta: float = 0.5,
    iterations: int = 50,
    inner: int = 1,
) -> torch.Tensor:
    """(B, T, N) transport plan between uniform weights on the real text tokens and on the
    real patches (masks: True = real), by IPOT with proximal weight ``beta``.

    Each row of a real text token sums to 1 / (real text tokens), each column of a real patch
    to 1 / (real patches), once converged; padding rows and columns are zero."""
    cost = cost.float()
    real = text_mask[:, :, None] & image_mask[:, None, :]
    n_text = text_mask.sum(1, keepdim=True).clamp(min=1).float()  # (B, 1)
    n_image = image_mask.sum(1, keepdim=True).clamp(min=1).float()
    kernel = torch.exp(-cost / beta) * real
    plan = real.float()
    b = torch.where(image_mask, 1.0 / n_image, 0.0)  # (B, N) column scaling
    for _ in range(iterations):
        q = kernel * plan
        for _ in range(inner):
            # a scales rows to 1 / n_text, b columns to 1 / n_image (zero for padding)
            a = torch.where(
                text_mask, 1.0 / (n_text * (q @ b[..., None])[..., 0] + ~text_mask), 0.0
            )
            col = (a[:, None, :] @ q)[:, 0]  # (B, N)
            b = torch.where(image_mask, 1.0 / (n_image * col + ~image_mask), 0.0)
        plan = a[..., None] * q * b[:, None, :]
    return plan


def wpa_token_masks(
    attention_mask: torch.Tensor, image_keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tokens WPA aligns: the text's real tokens without [CLS] (first) and [SEP] (last
    real one), and the real image patches without the image class token (first)."""
    keep = attention_mask.bool()
    positions = torch.arange(keep.shape[1], device=keep.device)
    last = keep.sum(1, keepdim=True) - 1
    text = keep & (positions > 0) & (positions != last)
    image = image_keep.bool().clone()
    image[:, 0] = False
    return text, image


def wpa_distance(
    text: torch.Tensor,
    image: torch.Tensor,
    text_mask: torch.Tensor,
    image_mask: torch.Tensor,
    *,
    beta: float = 0.5,
    iterations: int = 50,
) -> torch.Tensor:
    """(B,) optimal-transport distance of each pair's text tokens to its image patches (in
    fp32 whatever the autocast): the cosine cost summed over the IPOT plan."""
    with torch.autocast(device_type=text.device.type, enabled=False):
        cost = cosine_cost(text.float(), image.float())
        cost = cost * (text_mask[:, :, None] & image_mask[:, None, :])
        plan = ipot_plan(cost.detach(), text_mask, image_mask, beta=beta, iterations=iterations)
        return (cost * plan).sum(dim=(1, 2))
