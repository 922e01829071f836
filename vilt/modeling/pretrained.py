"""The one checkpoint mechanism every vilt model shares.

vilt's own format is a directory with ``config.json`` (the config, the model class and a
``vilt_format`` version) and ``model.safetensors``. Other formats (transformers checkpoints, hub
names) plug in as readers and writers registered by ``vilt.interop``; modeling never imports
interop, so the dependency points one way.

Whatever the format, a save writes its files (and the processor's, when one is saved with the
model) as one set (:func:`vilt.atomic.file_set`): a reader sees the previous checkpoint or the
new one, never new weights under an old config, even when the save was killed half way.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_write, file_set, settle
from ..config import ConfigError, ViltConfig, ViTConfig, to_pair
from ..textfiles import TextFileError, read_text
from .embeddings import init_embedding_params, resample_positions

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound="PreTrainedModel")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the requested model; the message says why."""


class CheckpointWarning(UserWarning):
    """Keys that were newly initialised or left unused when loading a checkpoint."""


@dataclass
class Checkpoint:
    """What a reader returns: a config dict, a state dict in vilt's names, and the class name of
    the model that wrote it (to tell a change of head from a broken checkpoint)."""

    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    architecture: str
    source: str
    notes: list[str] = field(default_factory=list)
    format: str = "vilt"  # what was read: "vilt", "transformers" or "original" (a .ckpt)


Reader = Callable[[str, "type | None"], "Checkpoint | None"]
Writer = Callable[["PreTrainedModel", Path], None]
CHECKPOINT_READERS: list[Reader] = []
CHECKPOINT_WRITERS: dict[str, Writer] = {}


def register_checkpoint_reader(reader: Reader) -> Reader:
    """Add a reader: ``reader(path_or_name, model_cls)`` returns a Checkpoint or None.

    ``model_cls`` is the class asked for, or None when the caller lets the checkpoint decide
    (``vilt.load_model``); ``Checkpoint.architecture`` must then name a vilt class."""
    if reader not in CHECKPOINT_READERS:
        CHECKPOINT_READERS.append(reader)
    return reader


def register_checkpoint_writer(name: str, writer: Writer) -> None:
    """Add a ``save_pretrained(path, format=name)`` writer."""
    CHECKPOINT_WRITERS[name] = writer


def read_vilt_checkpoint(path: str, model_cls: type | None = None) -> Checkpoint | None:
    """vilt's own format; None when ``path`` is not such a directory."""
    config_file = Path(path) / CONFIG_NAME
    if not config_file.is_file():
        return None
    try:
        data = json.loads(read_text(config_file))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_file}: not valid JSON ({err})") from err
    except TextFileError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(data, dict) or "vilt_format" not in data:
        return None
    check_format_version(data["vilt_format"], f"{config_file}: vilt_format", FORMAT_VERSION)
    arch = architecture_of(data, str(config_file))
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{path}: has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{weights}: cannot be read as safetensors ({err})") from err
    return Checkpoint(config=data, state_dict=state, architecture=arch, source=str(path))


def check_format_version(version: Any, where: str, known: int) -> None:
    """Refuse a file format this vilt does not know: a newer one may mean something else by
    the same names, so loading it anyway could give a silently wrong model.

    Args:
        version: the version the file records.
        where: the file and field, for the message.
        known: the newest version this code reads (it reads 1..known).

    Raises:
        CheckpointError: naming the file, the version found and the versions readable.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where} must be a format version number, got {version!r}")
    if version > known:
        raise CheckpointError(
            f"{where} is {version}, a newer format than this vilt reads (1 to {known}); "
            "upgrade vilt to load it"
        )


def architecture_of(config: dict[str, Any], where: str) -> str:
    """The model class a checkpoint's config names (its ``architectures`` list), "" if none.

    Args:
        config: the config.json contents.
        where: the file, for the message.

    Raises:
        CheckpointError: when ``architectures`` is not a list of class names (a bare string
            would otherwise be read one letter at a time).
    """
    value = config.get("architectures")
    if value is None or value == []:
        return ""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CheckpointError(
            f"{where}: architectures must be a list of model class names, e.g. "
            f'["ViltForQuestionAnswering"], got {value!r}'
        )
    return value[0]


def read_checkpoint(path_or_name: str | os.PathLike, model_cls: type | None = None) -> Checkpoint:
    """Read a checkpoint in vilt's format or any registered one; CheckpointError if none fits."""
    source = os.fspath(path_or_name)
    if Path(source).is_dir():
        settle(source)  # a save interrupted after its commit: finish it before reading
    ckpt = read_vilt_checkpoint(source, model_cls)
    for reader in CHECKPOINT_READERS:
        if ckpt is not None:
            break
        ckpt = reader(source, model_cls)
    if ckpt is None:
        hint = "" if CHECKPOINT_READERS else " (import vilt to enable transformers checkpoints)"
        if not Path(source).exists():
            raise CheckpointError(f"{source}: no such checkpoint directory{hint}")
        raise CheckpointError(f"{source}: not a vilt or transformers checkpoint directory{hint}")
    _check_config(ckpt)
    return ckpt


def _check_config(ckpt: Checkpoint) -> None:
    """Validate the checkpoint's config now, naming its file: every path that reads a
    checkpoint (from_pretrained, the jobs' --init, load_model) then gets the same error."""
    family = {"vit": ViTConfig, "vilt": ViltConfig}.get(ckpt.config.get("model_type"))
    if family is None:
        return  # from_checkpoint names a family mismatch
    try:
        family.from_dict(ckpt.config)
    except ConfigError as err:
        where = Path(ckpt.source) / CONFIG_NAME if Path(ckpt.source).is_dir() else ckpt.source
        raise CheckpointError(f"{where}: {err}") from None


def _write_vilt(model: PreTrainedModel, out: Path) -> None:
    """vilt's own format into ``out``: model.safetensors and config.json."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    data = model.config.to_dict()
    data["architectures"] = [type(model).__name__]
    data["vilt_format"] = FORMAT_VERSION
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(out / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, "utf-8"))


class PreTrainedModel(nn.Module):
    """Base class: weight init, save/load, weight-decay groups, gradient checkpointing.

    Args:
        config: the model's config, an instance of the class's ``config_class``.

    Raises:
        TypeError: for a config of the other family (a ViTConfig for a ViLT model, ...).
    """

    config_class: type[ViTConfig] | type[ViltConfig] = ViltConfig
    # Attribute holding the backbone in models with a head ("" for the backbones themselves).
    base_model_prefix: str = ""
    # Parameter-name prefixes of task heads: these train at the head learning-rate multiplier.
    head_prefixes: tuple[str, ...] = ()
    # Parameters a checkpoint may lack even for this very class (a pooler that a backbone was
    # saved without): initialised, with a warning, rather than refused.
    optional_prefixes: tuple[str, ...] = ()
    # What the model is trained for ("vqa", ...; "" for the backbones): picks its metrics.
    task: ClassVar[str] = ""

    def __init__(self, config: ViTConfig | ViltConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.loading_info: dict[str, list[str]] = {}

    # -- initialisation -----------------------------------------------------------------------
    def post_init(self) -> None:
        """Initialise every weight as transformers does (normal(0, initializer_range))."""
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        init_embedding_params(module, std)

    # -- optimisation helpers -----------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Names of parameters that skip weight decay: biases, norms, class tokens, positions."""
        return {
            name
            for name, param in self.named_parameters()
            if param.ndim <= 1 or name.endswith(("cls_token", "position_embeddings"))
        }

    def gradient_checkpointing_enable(self) -> None:
        """Recompute block activations in backward: less memory, about a third more compute."""
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = False

    def num_parameters(self, trainable_only: bool = False) -> int:
        """The number of parameter elements.

        Args:
            trainable_only: count only parameters with ``requires_grad``.
        """
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- saving -------------------------------------------------------------------------------
    def save_pretrained(
        self, path: str | os.PathLike, format: str = "vilt", *, processor: Any = None
    ) -> None:
        """Write the model to directory ``path``: vilt's format, or another registered one
        (``format="transformers"`` once vilt.interop is imported, as ``import vilt`` does).

        Args:
            path: the directory (created when missing).
            format: "vilt" or a registered writer's name.
            processor: a processor (anything with ``save_pretrained(directory)``) whose files
                are written with the model's, as one set: the directory never holds this
                model with another processor, whatever stops the save.
        """
        if format != "vilt" and format not in CHECKPOINT_WRITERS:
            raise ValueError(
                f"unknown checkpoint format {format!r}; known: vilt, "
                + ", ".join(sorted(CHECKPOINT_WRITERS))
            )
        writer = CHECKPOINT_WRITERS[format] if format != "vilt" else _write_vilt
        with file_set(path) as stage:
            if processor is not None:
                processor.save_pretrained(stage)
            writer(self, stage)

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls: type[M], path_or_name: str | os.PathLike, **overrides: Any) -> M:
        """Load a model from vilt's format or any registered one (transformers directories and
        hub names through vilt.interop).

        Args:
            path_or_name: a checkpoint directory, an original ViLT file or a hub name.
            **overrides: config fields to replace; one that changes a head's shape
                (num_labels) re-initialises that head and says so (a CheckpointWarning).

        Raises:
            CheckpointError: when the checkpoint cannot be read, holds the other model
                family, or has weights that do not fit this class.
            ConfigError: for an override that is not a config field or is invalid.
        """
        return cls.from_checkpoint(read_checkpoint(path_or_name, cls), **overrides)

    @classmethod
    def from_checkpoint(cls: type[M], ckpt: Checkpoint, **overrides: Any) -> M:
        """Build this class from a checkpoint that was already read (see ``read_checkpoint``).

        Args:
            ckpt: the checkpoint (config dict and state dict in vilt's names).
            **overrides: config fields to replace, as in ``from_pretrained``.

        Raises:
            CheckpointError: when the checkpoint holds the other model family or has weights
                that do not fit this class.
            ConfigError: for an override that is not a config field or is invalid.
        """
        model_type = ckpt.config.get("model_type")
        if model_type and model_type != cls.config_class.model_type:
            raise CheckpointError(
                f"{ckpt.source}: holds a {model_type!r} model, which {cls.__name__} cannot load "
                f"(it needs {cls.config_class.model_type!r})"
            )
        config = cls.config_class.from_dict(ckpt.config, **overrides)
        model = cls(config)
        model.load_checkpoint_state(ckpt, overrides)
        return model

    def _adapt_prefix(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Move a backbone's keys under this model's backbone attribute, or out of it."""
        own = self.state_dict()
        if self.base_model_prefix:
            prefix = self.base_model_prefix + "."
            if not any(k.startswith(prefix) for k in state):
                return {prefix + k: v for k, v in state.items()}
            return state
        for prefix in ("vilt.", "vit."):
            if not any(k in own for k in state) and any(k.startswith(prefix) for k in state):
                return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)} | {
                    k: v for k, v in state.items() if not k.startswith(prefix)
                }
        return state

    def _resample_positions(
        self, state: dict[str, torch.Tensor], ckpt: Checkpoint
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The checkpoint's image position tables resampled to this model's patch grid when
        its image size differs (an ``image_size`` override: fine-tuning at a new
        resolution), each the way its embedding resizes positions; and a note saying so."""
        size = ckpt.config.get("image_size")
        patch = ckpt.config.get("patch_size")
        if size is None or patch is None:
            return state, []
        (ih, iw), (ph, pw) = to_pair(size), to_pair(patch)
        old, new = (ih // ph, iw // pw), self.config.patch_grid
        if old == new:
            return state, []
        own = self.state_dict()
        out, notes = dict(state), []
        for key, value in state.items():
            owner, _, leaf = key.rpartition(".")
            if leaf != "position_embeddings" or key not in own or value.ndim != 3:
                continue
            resize = getattr(self.get_submodule(owner), "position_resize", None)
            fits = (
                value.shape[1] == 1 + old[0] * old[1] and own[key].shape[1] == 1 + new[0] * new[1]
            )
            if resize is None or not fits:
                continue
            out[key] = resample_positions(value, old, new, mode=resize[0], align_corners=resize[1])
            notes.append(
                f"{key} resampled ({resize[0]}) from {old[0]}x{old[1]} to {new[0]}x{new[1]} "
                f"patches (image size {ih}x{iw} -> {'x'.join(map(str, to_pair(self.config.image_size)))})"
            )
        return out, notes

    def load_checkpoint_state(self, ckpt: Checkpoint, overrides: dict[str, Any]) -> None:
        """Load ``ckpt.state_dict`` strictly, except where a change of head explains the gap
        or a new image size the position table's (resampled, with a warning).

        Sets ``loading_info`` (newly initialised and unused keys, notes) and warns
        (CheckpointWarning) about each.

        Args:
            ckpt: the checkpoint to load; its backbone keys may sit under this model's
                ``base_model_prefix`` or not.
            overrides: the config overrides this model was built with; "num_labels" among them
                lets head weights of another shape be re-initialised.

        Raises:
            CheckpointError: for weights of the wrong shape, missing weights (other than a
                new head's), or unused weights from a checkpoint of this very class.
        """
        state, resampled = self._resample_positions(self._adapt_prefix(ckpt.state_dict), ckpt)
        own = self.state_dict()
        same_class = ckpt.architecture == type(self).__name__
        is_head = lambda k: k.startswith(self.head_prefixes)  # noqa: E731

        reinit = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
        bad_shapes = [k for k in reinit if not (is_head(k) and "num_labels" in overrides)]
        if bad_shapes:
            details = "; ".join(
                f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                for k in bad_shapes
            )
            raise CheckpointError(f"{ckpt.source}: weights of the wrong shape: {details}")
        missing = sorted(k for k in own if k not in state)
        unexpected = sorted(k for k in state if k not in own)
        optional = lambda k: k.startswith(self.optional_prefixes)  # noqa: E731
        hard_missing = [k for k in missing if not optional(k) and (same_class or not is_head(k))]
        if hard_missing or (unexpected and same_class):
            parts = []
            if hard_missing:
                parts.append(f"missing keys: {', '.join(hard_missing)}")
            if unexpected and same_class:
                parts.append(f"unexpected keys: {', '.join(unexpected)}")
            raise CheckpointError(
                f"{ckpt.source}: does not match {type(self).__name__}: " + "; ".join(parts)
            )
        loadable = {k: v for k, v in state.items() if k in own and k not in reinit}
        self.load_state_dict(loadable, strict=False)
        new = sorted(set(missing) | set(reinit))
        self.loading_info = {
            "newly_initialized": new,
            "unused": unexpected,
            "notes": [*ckpt.notes, *resampled],
        }
        if resampled:
            warnings.warn(
                f"{type(self).__name__} from {ckpt.source}: " + "; ".join(resampled),
                CheckpointWarning,
                stacklevel=3,
            )
        if new:
            if reinit:
                why = "num_labels changed"
            elif same_class:
                why = "not in the checkpoint"
            else:
                why = f"the checkpoint is a {ckpt.architecture}"
            warnings.warn(
                f"{type(self).__name__} from {ckpt.source}: newly initialised ({why}): "
                + ", ".join(new),
                CheckpointWarning,
                stacklevel=3,
            )
        if unexpected:
            warnings.warn(
                f"{type(self).__name__} from {ckpt.source}: unused checkpoint weights: "
                + ", ".join(unexpected),
                CheckpointWarning,
                stacklevel=3,
            )
