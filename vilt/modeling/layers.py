"""The transformer layers every vilt model shares: Attention, Mlp, Block, Encoder.

One attention module serves ViT and ViLT. It runs through ``F.scaled_dot_product_attention``
with a boolean key-padding mask; an explicit softmax path exists only to return the attention
weights (``output_attentions=True``) and gives the same output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .activations import activation, activation_linear


def key_padding_bias(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, N) keep-mask -> (B, 1, 1, N) boolean attention mask; None stays None (no mask).

    Whether every key is real is not asked of the values (that would wait on the device):
    callers with no padding pass no mask."""
    if mask is None:
        return None
    return mask.bool()[:, None, None, :]


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        queries: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, N, D); mask: (B, 1, 1, N) bool, True = attend. Returns (out, weights or None).

        ``queries``: only the first ``queries`` tokens attend (out is (B, queries, D)); every
        token is still a key and a value. The query rows of the fused weight are used alone."""
        b, n, d = x.shape
        if queries is None or not isinstance(self.qkv.weight, torch.Tensor):
            # Split along the qkv axis, then move heads forward as views: in backward the
            # three gradients are stacked straight into the projection's (B, N, 3D) layout in
            # one copy (a permuted (3, B, H, N, hd) view costs a cat and two more copies).
            # A dynamic int8 Linear (vilt.quantize_int8) keeps no weight rows to take apart:
            # it projects every token, and the first ``queries`` are kept.
            qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim)
            q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
            if queries is not None:
                q = q[:, :, :queries]
        else:
            weight, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :queries], weight[:d], None if bias is None else bias[:d])
            q = q.view(b, queries, self.num_heads, self.head_dim).transpose(1, 2)
            kv = F.linear(x, weight[d:], None if bias is None else bias[d:])
            kv = kv.view(b, n, 2, self.num_heads, self.head_dim)
            k, v = (t.transpose(1, 2) for t in kv.unbind(2))
        dropout_p = self.attn_drop if self.training else 0.0
        weights = None
        if output_attentions:
            scores = (q @ k.transpose(-2, -1)) * self.scale
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, dropout_p, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(b, q.shape[2], d)
        return self.proj_drop(self.proj(out)), weights


class Mlp(nn.Module):
    """Linear -> activation -> Linear -> dropout.

    In training the activation is not kept for backward but recomputed from the
    pre-activation (see ``activation_linear``): the same results for a third less of a
    block's saved activations."""

    def __init__(self, *, dim: int, hidden_dim: int, act: str = "gelu", drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = activation(act)
        self.act_name = act
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(activation_linear(self.fc1(x), self.fc2, self.act_name, self.act))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a random ``rate`` of the
    samples and scale the rest by 1 / (1 - rate); the identity in eval or at rate 0."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}"


class LayerScale(nn.Module):
    """A learned per-channel scale on a residual branch (CaiT's layer scale)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    ``drop_path`` (stochastic depth) and ``layer_scale`` (an initial per-channel scale, 0: off)
    act on both residual branches; both are off by default, as in the public checkpoints."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        act: str = "gelu",
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        eps: float = 1e-12,
        drop_path: float = 0.0,
        layer_scale: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(
            dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop
        )
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim=dim, hidden_dim=mlp_dim, act=act, drop=drop)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        queries: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``queries``: compute the output of the first ``queries`` tokens only."""
        attn_out, weights = self.attn(self.norm1(x), mask, output_attentions, queries)
        x = (x if queries is None else x[:, :queries]) + self.drop_path(self.ls1(attn_out))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return x, weights


class Encoder(nn.Module):
    """A stack of Blocks and a final LayerNorm; optional gradient checkpointing."""

    def __init__(self, config) -> None:
        super().__init__()
        depth = config.num_hidden_layers
        # stochastic depth rises linearly from 0 at the first block to the rate at the last
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(
                dim=config.hidden_size,
                num_heads=config.num_attention_heads,
                mlp_dim=config.intermediate_size,
                act=config.hidden_act,
                qkv_bias=config.qkv_bias,
                drop=config.hidden_dropout_prob,
                attn_drop=config.attention_probs_dropout_prob,
                eps=config.layer_norm_eps,
                drop_path=rate,
                layer_scale=config.layer_scale_init_value,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        keep_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        first_only: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """keep_mask: (B, N), 1 = real token. Returns (normed output, hidden states, attentions).

        hidden_states holds the embeddings and every block's output before the final norm, as
        transformers does. ``first_only``: the output holds the first ``first_only`` tokens
        only, and the last block computes nothing else (less work for pooled heads).
        """
        if first_only is not None and (output_hidden_states or output_attentions):
            raise ValueError(
                "first_only (pooled_only) computes the first tokens' final states only; it "
                "cannot return hidden_states or attentions"
            )
        mask = key_padding_bias(keep_mask)
        hidden: list[torch.Tensor] = []
        attentions: list[torch.Tensor] = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if output_hidden_states:
                hidden.append(x)
            queries = first_only if i == last else None
            if self.gradient_checkpointing and self.training and not output_attentions:
                x, weights = checkpoint(block, x, mask, False, queries, use_reentrant=False)
            else:
                x, weights = block(x, mask, output_attentions, queries)
            if output_attentions:
                attentions.append(weights)
        if output_hidden_states:
            hidden.append(x)
        return (
            self.norm(x),
            tuple(hidden) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )


def trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Truncated normal at two standard deviations (what ViT uses for position embeddings)."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)
