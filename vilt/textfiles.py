"""Reading text files (JSON, JSONL, CSV, vocabularies, lists of paths) the one way every
reader in vilt does: UTF-8, with or without a byte-order mark (spreadsheets and Windows
editors write one), and a file in another encoding refused with the file, line and column
of the first byte that is not UTF-8, rather than a bare codec error or a first column whose
name starts with an invisible character.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TextFileError", "read_text"]


class TextFileError(ValueError):
    """A text file that is not UTF-8; the message names the file, line and column."""


def read_text(path: str | os.PathLike) -> str:
    """The contents of ``path`` as text (a leading byte-order mark dropped; line endings as
    in the file).

    Args:
        path: the file.

    Raises:
        TextFileError: the file is not UTF-8 (e.g. Latin-1), naming where.
        OSError: the file cannot be read (as ``open`` raises it).
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise TextFileError(
            f"{path}: line {line}, column {column}: byte 0x{data[start]:02x} is not UTF-8 "
            "(the file looks like another encoding, e.g. Latin-1); save it as UTF-8"
        ) from None
