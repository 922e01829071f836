"""Type checks of config fields: a config.json written by hand or by other code gets an error
naming the field, never a raw Python error or a value misread.

Types are checked, never converted: ``"image_size": "384"`` is refused (it used to be read one
character at a time), as are floats where integers belong, strings where true/false belong,
and a list where a mapping belongs. ``id2label`` must name every label id from 0 up, without
gaps: a model whose answer 3 has no name would answer with a bare index.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["check_field_types"]


def check_field_types(config: Any) -> None:
    """Raise the config's ConfigError naming the first field whose value has the wrong type.

    Args:
        config: a vilt config dataclass, before its values are converted or validated.

    Raises:
        ConfigError: ``<Class>.<field> must be <what>, got <value> (<type>)``.
    """
    from .config import ConfigError

    name = type(config).__name__
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        expected = _type_problem(str(f.type), value)
        if expected:
            raise ConfigError(
                f"{name}.{f.name} must be {expected}, got {value!r} ({type(value).__name__})"
            )
    if config.id2label is not None:
        ids = sorted(_label_id(k) for k in config.id2label)
        if ids != list(range(len(ids))):
            missing = sorted(set(range(max(ids) + 1)) - set(ids))
            raise ConfigError(
                f"{name}.id2label must number its labels 0 to {len(ids) - 1} without gaps "
                f"(ids {ids[:10]}{'...' if len(ids) > 10 else ''}; missing {missing[:10]}): "
                "an answer with no name would come out as a bare index"
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _label_id(key: Any) -> int:
    """An id2label key as an int: JSON writes them as strings ("0"), Python code as ints."""
    return key if _is_int(key) else int(key)


def _type_problem(annotation: str, value: Any) -> str | None:
    """What a config field of type ``annotation`` must be, when ``value`` is not that; None
    when it is. Types are checked, never converted: "384" is refused, not read as 384."""
    if value is None and annotation.endswith("| None"):
        return None
    if annotation in ("int", "int | None"):
        return None if _is_int(value) else "an integer"
    if annotation == "float":
        ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
        return None if ok else "a finite number"
    if annotation == "bool":
        return None if isinstance(value, bool) else "true or false"
    if annotation in ("str", "str | None"):
        return None if isinstance(value, str) else "a string"
    if annotation == "int | tuple[int, int]":
        pair = isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_int, value))
        return None if _is_int(value) or pair else "one size or (height, width), in whole pixels"
    if annotation == "dict[int, str] | None":
        ok = isinstance(value, dict) and all(
            (_is_int(k) or (isinstance(k, str) and k.isdecimal())) and isinstance(v, str)
            for k, v in value.items()
        )
        return None if ok else "a mapping of label ids (0, 1, ...) to label names (strings)"
    if annotation == "dict[str, int] | None":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and _is_int(v) for k, v in value.items()
        )
        return None if ok else "a mapping of label names (strings) to label ids (integers)"
    raise TypeError(f"no type check for config fields of type {annotation!r}")
