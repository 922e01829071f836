"""State-dict names: transformers <-> vilt, for the ViT and ViLT backbones and their heads.

transformers splits each attention projection into query/key/value and nests its names
(``encoder.layer.N.attention.attention.query``); vilt fuses them into one ``qkv`` Linear
(rows [q; k; v]) under ``encoder.blocks.N``. Both directions go through the same rename rules,
so a key that one direction writes the other reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..modeling.pretrained import CheckpointError

# transformers architecture -> the vilt class that holds the same weights.
TRANSFORMERS_TO_VILT = {
    "ViTModel": "ViTModel",
    "ViTForImageClassification": "ViTForImageClassification",
    "ViltModel": "ViltModel",
    "ViltForQuestionAnswering": "ViltForQuestionAnswering",
    "ViltForMaskedLM": "ViltForMaskedLM",
    "ViltForImageAndTextRetrieval": "ViltForImageTextMatching",
    "ViltForImagesAndTextClassification": "ViltForImagesAndTextClassification",
}
VILT_TO_TRANSFORMERS = {v: k for k, v in TRANSFORMERS_TO_VILT.items()}
# transformers has no ITM + MLM class; pretraining models export their MLM half.
VILT_TO_TRANSFORMERS["ViltForPreTraining"] = "ViltForMaskedLM"
# the ITM model trained to rank: the same weights, transformers' retrieval class
VILT_TO_TRANSFORMERS["ViltForImageTextRetrieval"] = "ViltForImageAndTextRetrieval"

BACKBONE_PREFIX = {"vit": "vit.", "vilt": "vilt."}


@dataclass(frozen=True)
class Rule:
    """A module path in one naming and its counterpart in the other; ``{i}`` is a layer index.

    A rule matches a key whose dotted path starts with the stem, so one rule carries a module's
    weight and bias (and anything below it)."""

    source: str
    target: str

    def pattern(self, reverse: bool) -> re.Pattern[str]:
        stem = self.target if reverse else self.source
        return re.compile("^" + re.escape(stem).replace(r"\{i\}", r"(\d+)") + r"(?=\.|$)")

    def apply(self, key: str, reverse: bool = False) -> str | None:
        match = self.pattern(reverse).match(key)
        if match is None:
            return None
        target = self.source if reverse else self.target
        for index in match.groups():
            target = target.replace("{i}", index, 1)
        return target + key[match.end() :]


def rename(key: str, rules: list[Rule], reverse: bool = False) -> str | None:
    """The key under the first rule that matches it, or None."""
    for rule in rules:
        renamed = rule.apply(key, reverse)
        if renamed is not None:
            return renamed
    return None


# transformers (legacy on-disk names, which transformers 5 still writes) -> vilt.
ENCODER_RULES = [
    Rule("encoder.layer.{i}.layernorm_before", "encoder.blocks.{i}.norm1"),
    Rule("encoder.layer.{i}.layernorm_after", "encoder.blocks.{i}.norm2"),
    Rule("encoder.layer.{i}.attention.output.dense", "encoder.blocks.{i}.attn.proj"),
    Rule("encoder.layer.{i}.intermediate.dense", "encoder.blocks.{i}.mlp.fc1"),
    Rule("encoder.layer.{i}.output.dense", "encoder.blocks.{i}.mlp.fc2"),
    Rule("layernorm", "encoder.norm"),
    Rule("pooler.dense", "pooler.dense"),
]
BACKBONE_RULES = {
    "vit": [
        Rule("embeddings.patch_embeddings.projection", "embeddings.patch_embeddings.proj"),
        Rule("embeddings.cls_token", "embeddings.cls_token"),
        Rule("embeddings.position_embeddings", "embeddings.position_embeddings"),
        *ENCODER_RULES,
    ],
    "vilt": [
        Rule("embeddings.text_embeddings.word_embeddings", "embeddings.text.word_embeddings"),
        Rule(
            "embeddings.text_embeddings.position_embeddings", "embeddings.text.position_embeddings"
        ),
        Rule(
            "embeddings.text_embeddings.token_type_embeddings",
            "embeddings.text.token_type_embeddings",
        ),
        Rule("embeddings.text_embeddings.LayerNorm", "embeddings.text.norm"),
        Rule("embeddings.patch_embeddings.projection", "embeddings.image.patch_embeddings.proj"),
        Rule("embeddings.cls_token", "embeddings.image.cls_token"),
        Rule("embeddings.position_embeddings", "embeddings.image.position_embeddings"),
        Rule("embeddings.token_type_embeddings", "embeddings.modality_type_embeddings"),
        *ENCODER_RULES,
    ],
}
HEAD_RULES = [
    Rule("classifier", "classifier"),
    Rule("mlm_score.transform.dense", "mlm_head.dense"),
    Rule("mlm_score.transform.LayerNorm", "mlm_head.norm"),
    Rule("mlm_score.decoder.bias", "mlm_head.bias"),
    Rule("mlm_score.bias", "mlm_head.bias"),  # transformers 4 kept the bias here as well
]

# transformers 5 names in memory (a state_dict() saved by hand) -> the on-disk names above.
_MODERN_NAMES = [
    (r"^layers\.(\d+)\.attention\.q_proj", r"encoder.layer.\1.attention.attention.query"),
    (r"^layers\.(\d+)\.attention\.k_proj", r"encoder.layer.\1.attention.attention.key"),
    (r"^layers\.(\d+)\.attention\.v_proj", r"encoder.layer.\1.attention.attention.value"),
    (r"^layers\.(\d+)\.attention\.o_proj", r"encoder.layer.\1.attention.output.dense"),
    (r"^layers\.(\d+)\.mlp\.fc1", r"encoder.layer.\1.intermediate.dense"),
    (r"^layers\.(\d+)\.mlp\.fc2", r"encoder.layer.\1.output.dense"),
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
]
_QKV_SPLIT = re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(\w+)$")
_QKV_FUSED = re.compile(r"^encoder\.blocks\.(\d+)\.attn\.qkv\.(\w+)$")
_BUFFERS = re.compile(r"(^|\.)(position_ids|token_type_ids)$")
_QKV_ORDER = ("query", "key", "value")


def _split_prefix(key: str, prefix: str) -> tuple[str, str]:
    return (prefix, key[len(prefix) :]) if key.startswith(prefix) else ("", key)


def _modern_to_legacy(key: str) -> str:
    for pattern, repl in _MODERN_NAMES:
        key, n = re.subn(pattern, repl, key)
        if n:
            break
    return key


def fuse_qkv(
    parts: dict[tuple[str, str, str], dict[str, torch.Tensor]], source: str
) -> dict[str, torch.Tensor]:
    """{(prefix, layer, param): {query, key, value}} -> {prefix}encoder.blocks.N.attn.qkv.param."""
    out = {}
    for (prefix, layer, param), group in sorted(parts.items()):
        absent = [name for name in _QKV_ORDER if name not in group]
        if absent:
            raise CheckpointError(
                f"{source}: layer {layer} has no attention {', '.join(absent)} {param} "
                "(query, key and value come together)"
            )
        fused = torch.cat([group[name] for name in _QKV_ORDER], dim=0)
        out[f"{prefix}encoder.blocks.{layer}.attn.qkv.{param}"] = fused
    return out


def transformers_to_vilt(
    state: dict[str, torch.Tensor], *, family: str, source: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A transformers ViT/ViLT state dict in vilt's names, and notes on what was left out.

    Keys no rule knows are kept as they are, so loading reports them as unused.

    Args:
        state: the state dict in transformers' names (query, key and value apart).
        family: "vit" or "vilt".
        source: how error messages name the checkpoint.

    Returns:
        The state dict in vilt's names (qkv fused, ITM rank output widened to two logits),
        and notes on what changes outputs (a separate MLM decoder left out).

    Raises:
        CheckpointError: when a layer has only some of its query, key and value weights.
    """
    prefix = BACKBONE_PREFIX[family]
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    notes: list[str] = []
    for key, tensor in state.items():
        head, rest = _split_prefix(key, prefix)
        rest = _modern_to_legacy(rest)
        if _BUFFERS.search(rest):
            continue  # index buffers, rebuilt by the model
        if match := _QKV_SPLIT.match(rest):
            layer, which, param = match.groups()
            qkv.setdefault((head, layer, param), {})[which] = tensor
            continue
        if rest == "rank_output.weight" and not head:
            out["itm_head.weight"] = torch.cat([torch.zeros_like(tensor), tensor], dim=0)
            continue
        if rest == "rank_output.bias" and not head:
            out["itm_head.bias"] = torch.cat([torch.zeros_like(tensor), tensor], dim=0)
            continue
        if rest == "mlm_score.decoder.weight" and not head:
            out["mlm_score.decoder.weight"] = tensor  # checked against the word embeddings below
            continue
        rules = BACKBONE_RULES[family] if head else BACKBONE_RULES[family] + HEAD_RULES
        renamed = rename(rest, rules)
        out[head + renamed if renamed is not None else key] = tensor
    out.update(fuse_qkv(qkv, source))
    decoder = out.pop("mlm_score.decoder.weight", None)
    if decoder is not None:
        words = out.get(prefix + "embeddings.text.word_embeddings.weight")
        if words is not None and not torch.equal(decoder, words):
            notes.append(
                "mlm_score.decoder.weight differs from the word embeddings; vilt's MLM head "
                "shares the word embeddings, so this separate decoder is not loaded and MLM "
                "logits differ from transformers'"
            )
    return out, notes


def vilt_to_transformers(state: dict[str, torch.Tensor], *, family: str) -> dict[str, torch.Tensor]:
    """A vilt state dict in transformers' on-disk names (the inverse of transformers_to_vilt).

    Args:
        state: a vilt model's state dict.
        family: "vit" or "vilt".

    Returns:
        The state dict in transformers' names (qkv split, the ITM head as one rank output).

    Raises:
        CheckpointError: for a weight that has no transformers name.
    """
    prefix = BACKBONE_PREFIX[family]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        head, rest = _split_prefix(key, prefix)
        if match := _QKV_FUSED.match(rest):
            layer, param = match.groups()
            for which, part in zip(_QKV_ORDER, tensor.chunk(3, dim=0), strict=True):
                out[f"{head}encoder.layer.{layer}.attention.attention.{which}.{param}"] = part
            continue
        if not head and rest in ("itm_head.weight", "itm_head.bias"):
            # rank output = logit(match) - logit(mismatch), which is vilt's ITM score
            name = "rank_output." + rest.rsplit(".", 1)[1]
            out[name] = (tensor[1] - tensor[0]).reshape(1, *tensor.shape[1:])
            continue
        rules = BACKBONE_RULES[family] if head else BACKBONE_RULES[family] + HEAD_RULES
        renamed = rename(rest, rules, reverse=True)
        if renamed is None:
            raise CheckpointError(f"no transformers name for vilt weight {key!r}")
        out[head + renamed] = tensor
    words = out.get(prefix + "embeddings.text_embeddings.word_embeddings.weight")
    if "mlm_score.decoder.bias" in out and words is not None:
        out["mlm_score.decoder.weight"] = words  # tied in transformers; written for older readers
    return out
