"""ViltProcessor: the tokenizer and the image processor behind one call and one directory."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..atomic import file_set
from .files import read_image_processor_dict, read_json, resolve_directory
from .image_processor import ImageProcessor
from .tokenizer import _SANE_MAX_LENGTH, BatchEncoding, Tokenizer
from .truncation import TruncationCounter

__all__ = ["ViltProcessor"]


class ViltProcessor:
    """Images and texts -> input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask.

    Text is padded to the longest of the batch and always truncated at ``max_length`` (the
    model's max_position_embeddings, 40 for the public ViLT checkpoints), so long text
    cannot overflow the position table; ``truncation`` (a :class:`TruncationCounter`) counts
    the texts cut. ``tokenizer`` may be a vilt :class:`Tokenizer` or any transformers fast
    tokenizer (wrapped).

    Args:
        image_processor: the image pipeline (default: ViLT's at 384).
        tokenizer: the text tokenizer.
        max_length: the longest text kept, in tokens: the model's max_position_embeddings.
    """

    def __init__(
        self,
        image_processor: ImageProcessor | None = None,
        tokenizer: Tokenizer | Any = None,
        *,
        max_length: int = 40,
    ) -> None:
        if tokenizer is None:
            raise ValueError(
                "ViltProcessor needs a tokenizer: Tokenizer.from_pretrained(dir), "
                "train_tokenizer(texts, vocab_size) or a transformers fast tokenizer"
            )
        if not isinstance(tokenizer, Tokenizer):
            tokenizer = Tokenizer.from_transformers(tokenizer, model_max_length=max_length)
        self.image_processor = image_processor or ImageProcessor()
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.truncation = TruncationCounter()

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        return_tensors: str = "pt",
        padding: bool | str = True,
        truncation: bool = True,
        *,
        max_length: int | None = None,
    ) -> BatchEncoding:
        """Encode a batch. Either input may be left out, giving only its own outputs.

        Args:
            images: one image or a list (paths, PIL images, arrays; a list of pairs for NLVR2).
            text: one string or a list, one per image.
            return_tensors: "pt" (the only one).
            padding: as for :class:`Tokenizer` (True: to the longest text of the batch).
            truncation: cut texts at the length limit (counted in ``self.truncation``).
            max_length: the length limit for this call (default: ``self.max_length``).

        Raises:
            ValueError: for neither input, another ``return_tensors``, or a number of
                images other than the number of texts.
        """
        if images is None and text is None:
            raise ValueError("pass images=, text= or both")
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt', got {return_tensors!r}")
        out = BatchEncoding({}, [])
        if text is not None:
            limit = max_length or self.max_length
            out = self.tokenizer(
                text, padding=padding, truncation=truncation, max_length=limit, return_tensors="pt"
            )
            if truncation:
                self.truncation.add(out, limit)
        if images is not None:
            pixels = self.image_processor(images, return_tensors="pt")
            n_texts = 1 if isinstance(text, str) else len(text) if text is not None else None
            n_images = pixels["pixel_values"].shape[0]
            if n_texts is not None and n_texts != n_images:
                raise ValueError(
                    f"got {n_images} images but {n_texts} texts; pass one image (or one "
                    "list of images) per text"
                )
            out.update(pixels)
        return out

    def check_model(self, config: Any, source: str = "the model") -> None:
        """Refuse a model whose tables this processor's output would overrun: token ids past
        its word embeddings, or texts longer than its position table. The processor's ids
        are then in range by construction, which is why a model's forward never checks them.

        Args:
            config: the model's ViltConfig (vocab_size, max_position_embeddings).
            source: how to name the model in the message (a path, a preset).

        Raises:
            ValueError: naming both sizes.
        """
        size = self.tokenizer.vocab_size
        if size > config.vocab_size:
            raise ValueError(
                f"the tokenizer has {size} tokens but {source} embeds only "
                f"{config.vocab_size}; use the model's own tokenizer (or a smaller vocabulary)"
            )
        if self.max_length > config.max_position_embeddings:
            raise ValueError(
                f"the processor keeps texts of up to {self.max_length} tokens but {source} has "
                f"{config.max_position_embeddings} text positions; pass max_length="
                f"{config.max_position_embeddings}"
            )

    @classmethod
    def from_config(
        cls, config: Any, tokenizer: Tokenizer | Any, **image_options: Any
    ) -> ViltProcessor:
        """A processor for a ViltConfig: image sizes from it (:meth:`ImageProcessor.from_config`)
        and ``max_length`` = its max_position_embeddings.

        Args:
            config: a ViltConfig (anything with image_size, patch_size and
                max_position_embeddings).
            tokenizer: a vilt Tokenizer or a transformers fast tokenizer.
            **image_options: ImageProcessor settings that replace those from the config.
        """
        return cls(
            ImageProcessor.from_config(config, **image_options),
            tokenizer,
            max_length=config.max_position_embeddings,
        )

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write preprocessor_config.json and the tokenizer files (max_length is saved as the
        tokenizer's model_max_length, as in the dandelin checkpoints), as one set: a reader
        never meets the new image settings with the old vocabulary (see
        :func:`vilt.atomic.file_set`). To save the processor with a model, in the same set,
        pass it to the model's ``save_pretrained(directory, processor=...)``.

        Args:
            directory: where the files go (created when missing).
        """
        previous = self.tokenizer.model_max_length
        self.tokenizer.model_max_length = self.max_length
        try:
            with file_set(directory) as stage:
                self.image_processor.save_pretrained(stage)
                self.tokenizer.save_pretrained(stage)
        finally:
            self.tokenizer.model_max_length = previous
        return Path(directory)

    @classmethod
    def from_pretrained(
        cls, path_or_name: str | os.PathLike, **image_options: Any
    ) -> ViltProcessor:
        """Read a vilt or transformers directory (or hub name): tokenizer.json or vocab.txt
        (+ tokenizer_config.json), preprocessor_config.json or processor_config.json.

        Without image processor settings the model's config.json decides the sizes (ViLT
        defaults without one). max_length: the tokenizer's model_max_length, else the
        config's max_position_embeddings, else 40.

        Args:
            path_or_name: a directory (or a file in it) or a hub name.
            **image_options: ImageProcessor settings that replace the saved ones.

        Raises:
            FileNotFoundError: when the path does not exist, a hub name cannot be resolved,
                or the directory holds no tokenizer.
            ValueError: for tokenizer or image processor files that cannot be read.
        """
        directory = resolve_directory(path_or_name)
        if directory.is_file():
            directory = directory.parent
        tokenizer = Tokenizer.from_pretrained(directory)
        model_config = _vilt_model_config(directory)
        if read_image_processor_dict(directory) is not None:
            image_processor = ImageProcessor.from_pretrained(directory, **image_options)
        elif model_config is not None:
            image_processor = ImageProcessor.from_config(model_config, **image_options)
        else:
            image_processor = ImageProcessor(**image_options)
        max_length = _saved_max_length(directory)
        if max_length is None:
            max_length = model_config.max_position_embeddings if model_config else 40
        return cls(image_processor, tokenizer, max_length=max_length)

    def __repr__(self) -> str:
        return (
            f"ViltProcessor(image_processor={self.image_processor!r}, "
            f"tokenizer={self.tokenizer!r}, max_length={self.max_length})"
        )


def _saved_max_length(directory: Path) -> int | None:
    config_file = directory / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    value = read_json(config_file).get("model_max_length")
    if isinstance(value, int | float) and 2 <= value <= _SANE_MAX_LENGTH:
        return int(value)
    return None


def _vilt_model_config(directory: Path) -> Any:
    """The sizes a ViLT config.json in ``directory`` gives the processor, or None (absent, or
    not a ViLT model). Only these fields are read, so any ViLT config (vilt's or
    transformers') will do."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        return None
    data = read_json(config_file)
    if data.get("model_type") != "vilt":
        return None
    return SimpleNamespace(
        image_size=data.get("image_size", 384),
        patch_size=data.get("patch_size", 32),
        max_position_embeddings=int(data.get("max_position_embeddings", 40)),
    )
