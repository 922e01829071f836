"""Saving: every file vilt writes gets the mode the umask gives any new file (a shared model
directory stays readable to the group when the umask says so)."""

from __future__ import annotations

import os
import stat

import pytest
from test_training import make_trainer

import vilt
from vilt.training import latest_checkpoint


def modes(directory) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir() if p.is_file()}


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield 0o644
    os.umask(previous)


def test_save_pretrained_files_follow_the_umask(tmp_path, umask_022):
    model = vilt.ViTForImageClassification(vilt.ViTConfig.from_preset("vit-test"))
    model.save_pretrained(tmp_path / "m")
    found = modes(tmp_path / "m")
    assert {"config.json", "model.safetensors"} <= set(found)
    assert set(found.values()) == {umask_022}, found


def test_training_checkpoint_files_follow_the_umask(tmp_path, umask_022):
    make_trainer(tmp_path, max_steps=2).train()
    found = modes(latest_checkpoint(tmp_path / "checkpoints"))
    assert "model.safetensors" in found and "rng_0.safetensors" in found
    assert set(found.values()) == {umask_022}, found
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == umask_022


def test_the_trainer_saves_the_processor_with_the_model_and_only_then(tmp_path):
    """A run into a directory that holds an earlier model changes model and processor at the
    end, together: a run that fails half way leaves the earlier pair, not its processor."""
    from vilt.processing import ViTImageProcessor

    first = make_trainer(tmp_path, max_steps=2)
    first.processor = ViTImageProcessor(size=16)
    first.train()
    assert ViTImageProcessor.from_pretrained(tmp_path).size == (16, 16)
    saved = (tmp_path / "model.safetensors").read_bytes()
    failing = make_trainer(tmp_path, max_steps=4, train_nan=range(64))
    failing.processor = ViTImageProcessor(size=24)
    with pytest.raises(FloatingPointError):
        failing.train()
    assert ViTImageProcessor.from_pretrained(tmp_path).size == (16, 16)
    assert (tmp_path / "model.safetensors").read_bytes() == saved
    second = make_trainer(tmp_path, max_steps=2, seed=1)
    second.processor = ViTImageProcessor(size=24)
    second.train()
    assert ViTImageProcessor.from_pretrained(tmp_path).size == (24, 24)
    assert (tmp_path / "model.safetensors").read_bytes() != saved


def edit_config(directory, **changes) -> None:
    import json

    path = directory / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("fmt", ["vilt", "transformers"])
def test_architectures_as_a_string_is_refused_by_name(tmp_path, fmt):
    model = vilt.ViTForImageClassification(vilt.ViTConfig.from_preset("vit-test"))
    model.save_pretrained(tmp_path, format=fmt)
    edit_config(tmp_path, architectures="ViTForImageClassification")
    with pytest.raises(vilt.CheckpointError, match=r"config.json: architectures must be a list"):
        vilt.load_model(tmp_path)


@pytest.mark.parametrize(("version", "message"), [(2, "newer format"), ("1", "version number")])
def test_a_checkpoint_format_this_vilt_does_not_know_is_refused(tmp_path, version, message):
    model = vilt.ViTForImageClassification(vilt.ViTConfig.from_preset("vit-test"))
    model.save_pretrained(tmp_path)
    edit_config(tmp_path, vilt_format=version)
    with pytest.raises(vilt.CheckpointError, match=f"vilt_format.*{message}"):
        vilt.ViTForImageClassification.from_pretrained(tmp_path)
