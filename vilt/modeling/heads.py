"""Task heads on top of the shared encoder, laid out as the public ViLT checkpoints are."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ViltConfig
from .activations import activation


class Pooler(nn.Module):
    """tanh(Linear(state of the first token)): the pooled output of ViLT and of ViTModel."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def mlp_classifier(in_dim: int, hidden_dim: int, num_labels: int) -> nn.Sequential:
    """Linear(in, hidden), LayerNorm, GELU, Linear(hidden, labels): ViLT's VQA and NLVR2 heads.

    VQA widens D to 2D; NLVR2 keeps its width (D times the number of images). The LayerNorm
    keeps torch's default eps, as the public checkpoints were trained with it.
    """
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.LayerNorm(hidden_dim),
        nn.GELU(),
        nn.Linear(hidden_dim, num_labels),
    )


class MLMHead(nn.Module):
    """Dense, activation, LayerNorm, then a decoder that shares the word-embedding matrix.

    Sharing (rather than a tied copy) keeps one tensor, so safetensors can save it as is.
    """

    def __init__(self, config: ViltConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.dense = nn.Linear(d, d)
        self.act = activation(config.hidden_act)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(hidden))), word_embeddings, self.bias)


def itm_scores(logits: torch.Tensor) -> torch.Tensor:
    """Match score of a 2-way ITM head: logit(match) - logit(mismatch), i.e. the log-odds."""
    return logits[:, 1] - logits[:, 0]
