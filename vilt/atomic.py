"""Atomic file writes: a file is written beside its target and renamed into place, so a
reader (or a run that crashed mid-write) sees the old file or the new one, never half. Files
that must change together (a model's config.json and weights, the processor files saved with
them) are written as one set (:func:`file_set`).

Every single-file writer of vilt goes through :func:`atomic_write`: weights, configs,
processor and tokenizer files, results.json, metrics.csv, predictions, embeddings. The
temporary file lives in the target's directory (a rename within one file system is atomic),
is named after the target (``.NAME.<unique>.tmp<suffix>``, so tools that pick a format by
suffix, such as ``numpy.save``, keep it), is flushed to disk before the rename, and is
removed when the write fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "file_set",
    "flush_to_disk",
    "honour_umask",
    "settle",
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


# -- sets of files that change together -------------------------------------------------------
_STAGE_PREFIX = ".vilt-staged."
_COMMIT_NAME = ".committed.json"


@contextlib.contextmanager
def file_set(directory: str | os.PathLike) -> Iterator[Path]:
    """Write several files of ``directory`` so that they change together: a reader sees the
    old set or the new one, never a mix, even after a crash at any point.

    The body writes the new files into the staging directory it is given (inside
    ``directory``, so every rename stays on one file system). On leaving the block the set
    is committed: a list of its files is written into the stage (the commit point) and each
    file is renamed into ``directory``. A crash before the commit leaves the old files
    untouched (the stage is ignored, and removed by a later save); a crash after it leaves a
    committed stage, whose renames every reader finishes first (:func:`settle`), so the new
    set is what anyone reads. An exception in the block discards the stage. Files of
    ``directory`` that the set does not hold are left as they are. A set written into another
    set's stage joins that set.

        with file_set(out) as stage:
            processor.save_pretrained(stage)
            atomic_write(stage / "config.json", ...)
            atomic_write(stage / "model.safetensors", ...)

    Args:
        directory: where the files go; created when missing.
    """
    target = Path(directory)
    if target.name.startswith(_STAGE_PREFIX):  # inside another set: its commit covers these
        yield target
        return
    target.mkdir(parents=True, exist_ok=True)
    settle(target)
    stage = target / f"{_STAGE_PREFIX}{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    committed = False
    try:
        yield stage
        names = sorted(p.name for p in stage.iterdir() if p.is_file() and p.name[0] != ".")
        write_json(stage / _COMMIT_NAME, {"files": names})  # the commit point
        _fsync_directory(stage)
        committed = True
        _finish(stage, target, names)
    finally:
        if not committed:
            shutil.rmtree(stage, ignore_errors=True)


def settle(directory: str | os.PathLike) -> None:
    """Finish what an interrupted :func:`file_set` left in ``directory``: the renames of a
    committed set are completed (its files are the current ones); an uncommitted stage of a
    process that no longer runs is removed. Readers of a set call it before reading.

    Args:
        directory: a directory written with :func:`file_set` (any other is left alone).

    Raises:
        OSError: naming the stage, when a committed set cannot be finished (no write access).
    """
    target = Path(directory)
    try:
        stages = [p for p in target.iterdir() if p.name.startswith(_STAGE_PREFIX) and p.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return
    for stage in stages:
        try:
            names = json.loads((stage / _COMMIT_NAME).read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            if not _owner_alive(stage.name):
                shutil.rmtree(stage, ignore_errors=True)  # a save that died before its commit
            continue
        try:
            _finish(stage, target, names)
        except PermissionError as err:
            raise OSError(
                f"{target}: a save was interrupted after it committed its files to "
                f"{stage.name}; open the directory once with write access to finish it ({err})"
            ) from None


def _finish(stage: Path, target: Path, names: list[str]) -> None:
    """Move a committed stage's files into ``target`` (those already moved are skipped, so
    that two processes finishing the same stage agree), then remove the stage."""
    for name in names:
        # a file moved already (by the writer before a crash, or by another reader) is skipped
        with contextlib.suppress(FileNotFoundError):
            os.replace(stage / name, target / name)
    _fsync_directory(target)
    shutil.rmtree(stage, ignore_errors=True)


def _owner_alive(stage_name: str) -> bool:
    """Whether the process that made a stage (named host.pid.unique) may still be writing it:
    True unless it ran on this host and is gone."""
    try:
        host, pid, _ = stage_name[len(_STAGE_PREFIX) :].rsplit(".", 2)
        pid_number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname() or pid_number == os.getpid():
        return True
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _fsync_directory(path: Path) -> None:
    """fsync a directory, so that the renames in it survive a crash (where the system can)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
