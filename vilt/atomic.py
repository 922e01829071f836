"""Atomic file writes: a file is written beside its target and renamed into place, so a
reader (or a run that crashed mid-write) sees the old file or the new one, never half.

Every single-file writer of vilt goes through :func:`atomic_write`: weights, configs,
processor and tokenizer files, results.json, metrics.csv, predictions, embeddings. The
temporary file lives in the target's directory (a rename within one file system is atomic),
is named after the target (``.NAME.<unique>.tmp<suffix>``, so tools that pick a format by
suffix, such as ``numpy.save``, keep it), is flushed to disk before the rename, and is
removed when the write fails.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "flush_to_disk",
    "honour_umask",
    "temporary_name",
    "write_bytes",
    "write_json",
    "write_text",
]


def temporary_name(path: Path) -> Path:
    """A fresh name beside ``path`` for its temporary file: unique per process and call."""
    unique = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.name}.{unique}.tmp{path.suffix}")


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp)`` with the name of a temporary file beside ``path``, then flush that
    file to disk and rename it to ``path``. If ``write`` raises, the temporary file is
    removed and ``path`` keeps what it held.

    Args:
        path: the file to (re)write; its directory is created when missing.
        write: writes the whole content to the file name it is given (a ``str``), e.g.
            ``lambda tmp: save_file(tensors, tmp)``.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(os.fspath(tmp))
        honour_umask(tmp)
        flush_to_disk(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Args:
        path: the target file.
        data: its whole content.
    """

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    return atomic_write(path, write)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically as UTF-8, line endings as given.

    Args:
        path: the target file.
        text: its whole content.
    """
    return write_bytes(path, text.encode("utf-8"))


def write_json(
    path: str | os.PathLike,
    data: Any,
    *,
    indent: int | None = 2,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically as JSON (keys sorted, a final newline).

    Args:
        path: the target file.
        data: anything ``json.dumps`` takes.
        indent: as ``json.dumps``'s.
        default: as ``json.dumps``'s: a function for values JSON has no type for (e.g.
            ``str``); without it such a value raises TypeError and nothing is written.
    """
    text = json.dumps(data, indent=indent, sort_keys=True, default=default) + "\n"
    return write_text(path, text)


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it and set it back
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike) -> None:
    """Give file ``path`` the mode a newly created file gets under the current umask.

    Writers that make their file with a private mode (safetensors: 0600) would otherwise
    leave a model that other users of a shared directory cannot read.

    Args:
        path: a regular file this process just wrote.
    """
    os.chmod(path, 0o666 & ~current_umask())


def flush_to_disk(path: str | os.PathLike) -> None:
    """fsync ``path``, so that after a crash the renamed file holds the data, not zeros.

    Args:
        path: a file this process wrote.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # Windows fsyncs writable handles only; the rename is atomic regardless
        pass
    finally:
        os.close(fd)
