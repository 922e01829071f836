"""A record's fields as every data loader reads them: one policy, one error text.

- **Text** (a question, caption or answer) must be a string: ``null``, a number, a list or
  an object is a :class:`DataError` naming the field and record, never turned into "None",
  "0" or the Python text of a list. It must be valid Unicode: a lone surrogate (JSON allows
  the escape "\\ud800") is refused here, where the record is read, rather than crash the
  tokenizer mid-epoch. A question or caption that is empty or only whitespace is refused
  (reason ``empty_text``); an answer may be empty.
- **Ids** (question, image, annotation ids) are integers or non-empty strings. A boolean
  is refused (``true`` would name image 1), and so is a number with a fraction (7.9 would
  name image 7); a float that is a whole number (7.0, as some JSON writers print integers)
  is read as that integer.
- **Duplicate ids** where ids key the data (question ids, COCO image ids) are refused
  (reason ``duplicate_id``), naming both records: the later one would otherwise overwrite
  the earlier's answers or file.

Each error carries a skip reason: with ``skip_bad=True`` the record is skipped and counted
instead of raising (see :mod:`vilt.data.errors`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["IdRegistry", "identifier", "kind_of", "text"]


def kind_of(value: Any) -> str:
    """How an error message describes a value of the wrong type ("null", "the number 0")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float | np.integer | np.floating):
        return f"the number {value!r}"
    if isinstance(value, list | tuple):
        return f"a list ({len(value)} items)"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def text(value: Any, what: str, where: str, *, allow_empty: bool = False) -> str:
    """``value`` as text, or a DataError naming ``what`` and ``where``.

    Args:
        value: the field as read (from JSON, CSV, a data set row).
        what: the field's name in messages ("question", "caption", "answer").
        where: the record (file and record number).
        allow_empty: accept "" and whitespace (answers).

    Raises:
        DataError: not a string (reason ``bad_record``), not valid Unicode
            (``invalid_text``), or empty (``empty_text``).
    """
    if not isinstance(value, str):
        raise DataError(f"{where}: {what} is {kind_of(value)}, not text", reason="bad_record")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataError(
            f"{where}: {what} is not valid Unicode (a lone surrogate "
            f"{value[err.start]!r} at character {err.start})",
            reason="invalid_text",
        ) from None
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: empty {what}", reason="empty_text")
    return value


def identifier(value: Any, what: str, where: str) -> int | str:
    """``value`` as an id: an int, or a non-empty string.

    Args:
        value: the field as read.
        what: its name in messages ("image id").
        where: the record.

    Raises:
        DataError: a boolean, a number with a fraction, or anything but a number or string.
    """
    if isinstance(value, bool | np.bool_):
        raise DataError(f"{where}: {what} is {kind_of(value)}, not an id", reason="bad_record")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise DataError(
            f"{where}: {what} {value!r} is not a whole number (it would name another record)",
            reason="bad_record",
        )
    if isinstance(value, str) and value.strip():
        return text(value, what, where)
    raise DataError(f"{where}: {what} is {kind_of(value)}, not an id", reason="bad_record")


class IdRegistry:
    """The ids seen so far in one file, to refuse a repeated one.

    Args:
        what: the id's name in messages ("question id").
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.first: dict[Any, str] = {}

    def add(self, key: Any, where: str) -> None:
        """Note ``key`` for the record ``where``.

        Raises:
            DataError: (reason ``duplicate_id``) when an earlier record had ``key``.
        """
        if key in self.first:
            raise DataError(
                f"{where}: {self.what} {key!r} appears again (first at {self.first[key]})",
                reason="duplicate_id",
            )
        self.first[key] = where
