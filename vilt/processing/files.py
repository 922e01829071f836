"""Processor files on disk: JSON in and out, and finding a directory from a path or hub name
(the hub lookup that vilt.interop's checkpoint reader shares).

The file names are transformers' own, so a directory written here is a transformers processor
directory too, and one written by transformers (older ``preprocessor_config.json`` or the
newer ``processor_config.json`` holding an ``image_processor`` entry) reads here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import atomic
from ..textfiles import read_text

__all__ = [
    "HUB_TIMEOUT_S",
    "PREPROCESSOR_CONFIG",
    "PROCESSOR_CONFIG",
    "hub_offline",
    "hub_snapshot",
    "is_repo_id",
    "read_image_processor_dict",
    "read_json",
    "resolve_directory",
    "write_json",
]

HUB_TIMEOUT_S = 10.0  # huggingface_hub's wait for an answer from the hub, per request
PREPROCESSOR_CONFIG = "preprocessor_config.json"
PROCESSOR_CONFIG = "processor_config.json"
# What a hub download of a processor fetches: never weights.
_HUB_PATTERNS = [
    PREPROCESSOR_CONFIG,
    PROCESSOR_CONFIG,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "config.json",
]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (UTF-8, a byte-order mark allowed); errors name the file
    (and the line of a syntax error or of a byte that is not UTF-8)."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``path`` atomically, so a crash leaves no half file."""
    return atomic.write_json(path, data)


def read_image_processor_dict(directory: Path) -> tuple[dict[str, Any], Path] | None:
    """The image processor settings in ``directory`` and the file they came from, or None."""
    legacy = directory / PREPROCESSOR_CONFIG
    if legacy.is_file():
        return read_json(legacy), legacy
    combined = directory / PROCESSOR_CONFIG
    if combined.is_file():
        data = read_json(combined)
        inner = data.get("image_processor")
        if isinstance(inner, dict):
            return inner, combined
    return None


def hub_offline() -> bool:
    """True when the environment asks for no network (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE),
    read at call time rather than at import."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return constants.HF_HUB_OFFLINE or any(f.upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def is_repo_id(name: str) -> bool:
    """Whether ``name`` could name a hub repository ("org/name")."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_snapshot(
    name: str, patterns: list[str], *, usable: Callable[[Path], bool] = Path.is_dir
) -> tuple[Path | None, str]:
    """(a local copy of hub repository ``name``, limited to ``patterns``, "") or (None, why).

    huggingface_hub's cache first, with no network and no waiting; a cached copy that is not
    ``usable`` (e.g. has no weights) does not count. Then, unless offline, a download that
    gives up on an unanswered request after HUB_TIMEOUT_S."""
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
        if usable(local):
            return local, ""
        why = "the cached copy lacks files"
    except Exception:  # huggingface_hub raises several types for "not cached"
        why = "not in the local cache"
    if hub_offline():
        return None, why + " and offline mode is on (HF_HUB_OFFLINE)"
    try:
        return Path(
            snapshot_download(name, allow_patterns=patterns, etag_timeout=HUB_TIMEOUT_S)
        ), ""
    except Exception as err:
        return None, why + f" and fetching it from the hub failed ({type(err).__name__})"


def resolve_directory(path_or_name: str | os.PathLike) -> Path:
    """A local directory (or file) for ``path_or_name``: an existing path as it is, else a hub
    name fetched (processor files only) from huggingface_hub's cache or, when online, the hub.
    Fails at once, in one line naming what was asked for, when neither works."""
    path = Path(path_or_name).expanduser()
    if path.exists():
        atomic.settle(path if path.is_dir() else path.parent)  # finish an interrupted save
        return path
    name = os.fspath(path_or_name)
    if not is_repo_id(name):
        raise FileNotFoundError(f"{name}: no such file or directory")
    local, why = hub_snapshot(name, _HUB_PATTERNS)
    if local is None:
        raise FileNotFoundError(
            f"{name}: not a local path, and as a hub name it cannot be resolved ({why}); "
            "pass a local directory holding the processor files instead"
        )
    return local
