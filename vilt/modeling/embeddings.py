"""Token embeddings: image patches (ViT and ViLT flavours) and text (BERT-style).

ViLT images keep their own size: each image's learned position grid is interpolated to its own
patch grid, padding patches are masked, and (in training, when ``max_image_length`` > 0) a
random subset of patches is drawn (from torch's generator) — all vectorised over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_patch_coverage, check_token_ids, input_checks_enabled
from ..config import ViltConfig, ViTConfig, to_pair
from .layers import trunc_normal_


class PatchEmbedding(nn.Module):
    """Cut an image into P x P patches and project each to D (one strided convolution)."""

    def __init__(self, *, patch_size: tuple[int, int], in_chans: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D, H // P, W // P)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.in_chans:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.in_chans}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        ph, pw = self.patch_size
        if pixel_values.shape[2] < ph or pixel_values.shape[3] < pw:
            raise ValueError(
                f"image of {pixel_values.shape[2]}x{pixel_values.shape[3]} pixels is smaller than "
                f"one {ph}x{pw} patch"
            )
        return self.proj(pixel_values.to(self.proj.weight.dtype))


def resize_pos_grid(
    grid: torch.Tensor, size: tuple[int, int], mode: str, align_corners: bool
) -> torch.Tensor:
    """(1, D, gh, gw) position grid -> (1, D, h, w); no-op when the size already matches."""
    if tuple(grid.shape[-2:]) == tuple(size):
        return grid
    return F.interpolate(grid, size=size, mode=mode, align_corners=align_corners)


def resample_positions(
    table: torch.Tensor,
    old: tuple[int, int],
    new: tuple[int, int],
    *,
    mode: str = "bicubic",
    align_corners: bool = False,
) -> torch.Tensor:
    """(1, 1 + gh * gw, D) position table -> the same for the ``new`` patch grid: the class
    row kept, the grid resized (bicubic by default, as ViT's interpolate_pos_encoding does;
    an image embedding's ``position_resize`` says how it resizes its own grid)."""
    if tuple(old) == tuple(new):
        return table
    d = table.shape[-1]
    grid = table[:, 1:].reshape(1, *old, d).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(new), mode=mode, align_corners=align_corners)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], d).to(table.dtype)
    return torch.cat([table[:, :1], grid], dim=1)


class ViTImageEmbeddings(nn.Module):
    """ViT: class token + patches + learned positions (bicubic-interpolated on request)."""

    # how the position grid is resized for another patch grid: (mode, align_corners)
    position_resize = ("bicubic", False)

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.grid = config.patch_grid
        self.patch_embeddings = PatchEmbedding(
            patch_size=to_pair(config.patch_size), in_chans=config.num_channels, dim=d
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, d))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        x = self.patch_embeddings(pixel_values)
        b, d, h, w = x.shape
        pos = self.position_embeddings
        if (h, w) != self.grid:
            if not interpolate_pos_encoding:
                raise ValueError(
                    f"image size {tuple(pixel_values.shape[-2:])} gives a {h}x{w} patch grid but "
                    f"the model was built for {self.grid[0]}x{self.grid[1]}; pass "
                    "interpolate_pos_encoding=True to interpolate the position embeddings"
                )
            grid = pos[:, 1:].reshape(1, *self.grid, d).permute(0, 3, 1, 2)
            mode, corners = self.position_resize
            grid = resize_pos_grid(grid, (h, w), mode=mode, align_corners=corners)
            pos = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        return self.dropout(x + pos)


def _linear_taps(
    valid: torch.Tensor, size: int, length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a 1-D linear resize (corners aligned) of ``size`` grid points to each sample's
    ``valid`` points, padded to ``length``: the two taps of every output point, the weight of
    the second, and whether the point is real. Computed as ``F.interpolate`` does (the same
    float32 scale and source coordinate), so the blend matches it within rounding."""
    idx = torch.arange(length, device=valid.device, dtype=torch.float32)
    n = valid.to(torch.float32)[:, None]
    scale = torch.where(n > 1, (size - 1) / (n - 1).clamp(min=1), 0.0)
    src = scale * idx  # (B, length)
    first = src.long().clamp(max=size - 1)
    second = torch.where(first < size - 1, first + 1, first)
    return first, second, src - first, idx < n


class ViltImageEmbeddings(nn.Module):
    """ViLT: patches of variable-size, padded images with per-image interpolated positions.

    Returns the image tokens (class token first), their keep-mask, and for each token the flat
    index of its patch in the padded grid (-1 for the class token), which attention maps use.

    Every shape here follows from the input's shape alone, never from its values, so the
    forward compiles as one graph and never waits on the device: each image's real patches
    come first (in raster order; in training with ``max_image_length``, a random draw of
    them), then its padding patches, masked. Without sampling the sequence holds every patch
    of the padded grid; with it, ``min(max_image_length, patches)``.
    """

    # each image's positions: the grid resized bilinearly, corners aligned (as ViLT does)
    position_resize = ("bilinear", True)

    def __init__(self, config: ViltConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.grid = config.patch_grid
        self.max_image_length = config.max_image_length
        self.patch_embeddings = PatchEmbedding(
            patch_size=to_pair(config.patch_size), in_chans=config.num_channels, dim=d
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, d))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def _positions(
        self, valid_h: torch.Tensor, valid_w: torch.Tensor, h: int, w: int
    ) -> torch.Tensor:
        """(B, h * w, D): per image, the position grid resized (bilinear, corners aligned) to
        its own valid patch area, zero over its padding. One vectorised pass over the batch:
        each patch gathers its four grid taps and blends them as the interpolation does."""
        gw = self.grid[1]
        table = self.position_embeddings[0, 1:]  # (gh * gw, D), the grid in raster order
        h0, h1, hl, h_in = _linear_taps(valid_h, self.grid[0], h)
        w0, w1, wl, w_in = _linear_taps(valid_w, gw, w)

        def tap(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            return table[rows[:, :, None] * gw + cols[:, None, :]]  # (B, h, w, D)

        wl, hl = wl[:, None, :, None], hl[:, :, None, None]
        top = (1 - wl) * tap(h0, w0) + wl * tap(h0, w1)
        bottom = (1 - wl) * tap(h1, w0) + wl * tap(h1, w1)
        inside = (h_in[:, :, None] & w_in[:, None, :])[..., None]
        pos = torch.where(inside, (1 - hl) * top + hl * bottom, 0.0)
        return pos.flatten(1, 2)

    def forward(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        x = self.patch_embeddings(pixel_values)
        b, d, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, HW, D)
        sample = self.training and self.max_image_length > 0
        if pixel_mask is None:  # every pixel real: one position grid serves the batch
            grid = self.position_embeddings[:, 1:].transpose(1, 2).reshape(1, d, *self.grid)
            mode, corners = self.position_resize
            pos = resize_pos_grid(grid, (h, w), mode=mode, align_corners=corners)
            pos = pos.flatten(2).transpose(1, 2).expand(b, -1, -1)  # (B, HW, D)
            keep = torch.ones(b, h * w, dtype=torch.long, device=x.device)
            if not sample:  # raster order already
                order = torch.arange(h * w, device=x.device).expand(b, -1)
                return self._join(x, pos.to(x.dtype), keep, order, (h, w))
        else:
            if pixel_mask.shape != (b, *pixel_values.shape[-2:]):
                raise ValueError(
                    f"pixel_mask must have shape {(b, *pixel_values.shape[-2:])} to match "
                    f"pixel_values, got {tuple(pixel_mask.shape)}"
                )
            patch_mask = F.interpolate(pixel_mask[:, None].float(), size=(h, w))[:, 0].long()
            # Padding is at the bottom/right, so the first column and row count the valid patches.
            valid_h = patch_mask[:, :, 0].sum(dim=1)
            valid_w = patch_mask[:, 0, :].sum(dim=1)
            if input_checks_enabled():
                check_patch_coverage(valid_h, valid_w)
            pos = self._positions(valid_h, valid_w, h, w)
            keep = patch_mask.flatten(1)
        if sample:
            # torch's generator on the device: seeded by set_seed, restored on resume
            keys = torch.rand(keep.shape, device=keep.device)
        else:
            keys = torch.zeros(keep.shape, device=keep.device)
        # Keys in [0, 1) for real patches, above 2 (in raster order) for padding: sorting puts
        # the real patches first (a random draw of them when sampling), then the padding.
        keys = torch.where(
            keep.bool(), keys, 2.0 + torch.arange(h * w, device=keep.device) / (h * w)
        )
        order = keys.argsort(dim=1, stable=True)
        if sample:
            order = order[:, : min(h * w, self.max_image_length)]
        x = x.gather(1, order[..., None].expand(-1, -1, d))
        pos = pos.gather(1, order[..., None].expand(-1, -1, d)).to(x.dtype)
        return self._join(x, pos, keep.gather(1, order), order, (h, w))

    def _join(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        keep: torch.Tensor,
        order: torch.Tensor,
        grid: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Add positions (the class token's first) and put the class token in front."""
        b = x.shape[0]
        pos = torch.cat([self.position_embeddings[:, :1].expand(pos.shape[0], -1, -1), pos], 1)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = self.dropout(x + pos)
        keep = torch.cat([keep.new_ones(b, 1), keep], dim=1)
        patch_index = torch.cat([order.new_full((b, 1), -1), order], dim=1)
        return x, keep, patch_index, grid


class TextEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (BERT's text embedding)."""

    def __init__(self, config: ViltConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.vocab_size = config.vocab_size
        self.max_positions = config.max_position_embeddings

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if input_ids.ndim != 2:
            raise ValueError(
                f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}"
            )
        t = input_ids.shape[1]
        if t > self.max_positions:
            raise ValueError(
                f"text of {t} tokens is longer than max_position_embeddings ({self.max_positions}); "
                "truncate it (ViltProcessor does by default)"
            )
        if input_checks_enabled():
            check_token_ids(input_ids, self.vocab_size)
        if token_type_ids is None:
            token_types = self.token_type_embeddings.weight[0]
        else:
            token_types = self.token_type_embeddings(token_type_ids)
        # Summed in transformers' order so that fp32 results match it bit for bit where possible.
        x = self.word_embeddings(input_ids) + token_types + self.position_embeddings.weight[:t]
        return self.dropout(self.norm(x))


def init_embedding_params(module: nn.Module, std: float) -> None:
    """Class tokens and position grids: truncated normal (transformers leaves ViLT's at zero,
    which slows training from scratch; pretrained weights overwrite them anyway)."""
    if isinstance(module, ViTImageEmbeddings | ViltImageEmbeddings):
        trunc_normal_(module.cls_token, std)
        trunc_normal_(module.position_embeddings, std)
