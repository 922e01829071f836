"""The one atomic writer: a failed write keeps the old file and leaves no temporary file."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from vilt import atomic


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "f.json"
    atomic.write_json(target, {"v": 1})

    def half_then_crash(tmp):
        with open(tmp, "w") as handle:
            handle.write('{"v": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.atomic_write(target, half_then_crash)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_json_that_cannot_be_encoded_writes_nothing(tmp_path):
    target = tmp_path / "results.json"
    with pytest.raises(TypeError):
        atomic.write_json(target, {"x": object()})
    assert list(tmp_path.iterdir()) == []
    atomic.write_json(target, {"x": object()}, default=lambda _: "obj")
    assert json.loads(target.read_text()) == {"x": "obj"}


def test_text_json_and_bytes_round_trip_into_new_directories(tmp_path):
    text = atomic.write_text(tmp_path / "a" / "t.csv", "step,loss\r\n1,2\n")
    assert text.read_bytes() == b"step,loss\r\n1,2\n"  # line endings as given
    data = atomic.write_json(tmp_path / "b" / "d.json", {"b": 2, "a": [1]})
    assert data.read_text() == '{\n  "a": [\n    1\n  ],\n  "b": 2\n}\n'  # sorted, final newline
    raw = atomic.write_bytes(tmp_path / "c.bin", b"\x00\xff")
    assert raw.read_bytes() == b"\x00\xff"


def test_the_temporary_file_keeps_the_suffix_and_is_unique(tmp_path):
    """numpy.save appends .npy to a name without it: the temporary name must end in it."""
    target = tmp_path / "emb.npy"
    atomic.atomic_write(target, lambda tmp: np.save(tmp, np.arange(3)))
    assert np.load(target).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["emb.npy"]
    names = {atomic.temporary_name(target).name for _ in range(5)}
    assert len(names) == 5 and all(n.startswith(".emb.npy.") and n.endswith(".npy") for n in names)


def test_a_written_file_gets_the_usual_permissions(tmp_path):
    """Not the 0600 of a mkstemp file: a saved model is readable as any file the user writes."""
    mask = os.umask(0o022)
    try:
        path = atomic.write_text(tmp_path / "config.json", "{}")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_writer_that_makes_a_private_file_still_gets_the_umask_mode(tmp_path, umask):
    """safetensors' save_file makes its file 0600: other users of a shared model directory
    could not read it. The umask decides, as for any file the user writes."""
    import torch
    from safetensors.torch import save_file

    mask = os.umask(umask)
    try:
        path = atomic.atomic_write(
            tmp_path / "model.safetensors", lambda tmp: save_file({"w": torch.zeros(1)}, tmp)
        )
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_file_set_changes_together_or_not_at_all(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "old a")
    atomic.write_text(tmp_path / "b.txt", "old b")
    with pytest.raises(RuntimeError, match="half way"), atomic.file_set(tmp_path) as stage:
        atomic.write_text(stage / "a.txt", "new a")
        raise RuntimeError("half way")
    assert (tmp_path / "a.txt").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # stage removed
    with atomic.file_set(tmp_path) as stage:
        atomic.write_text(stage / "a.txt", "new a")
        atomic.write_text(stage / "c.txt", "new c")
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt", "c.txt")] == [
        "new a", "old b", "new c"
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "c.txt"]


def test_settle_finishes_a_committed_set_and_drops_a_dead_writers_stage(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "old a")
    atomic.write_text(tmp_path / "b.txt", "old b")
    # a writer killed after its commit, one file moved: the set is new
    done = tmp_path / ".vilt-staged.somehost.1.aaaa"
    done.mkdir()
    atomic.write_text(done / "b.txt", "new b")
    atomic.write_json(done / ".committed.json", {"files": ["a.txt", "b.txt"]})
    atomic.write_text(tmp_path / "a.txt", "new a")
    # a writer on this host killed before its commit: ignored and removed
    import socket

    dead = subprocess_pid_that_has_ended()
    left = tmp_path / f".vilt-staged.{socket.gethostname()}.{dead}.bbbb"
    left.mkdir()
    atomic.write_text(left / "a.txt", "never committed")
    atomic.settle(tmp_path)
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["new a", "new b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_committed_set_in_a_read_only_directory_is_named(tmp_path, monkeypatch):
    stage = tmp_path / ".vilt-staged.somehost.1.cccc"
    stage.mkdir()
    atomic.write_text(stage / "a.txt", "new a")
    atomic.write_json(stage / ".committed.json", {"files": ["a.txt"]})

    def read_only(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", read_only)  # as on a directory without write access
    with pytest.raises(OSError, match=r"vilt-staged\.somehost.*write access"):
        atomic.settle(tmp_path)


def subprocess_pid_that_has_ended() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)
