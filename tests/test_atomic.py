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
