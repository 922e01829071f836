"""Fault injection: a save killed at each of its write points, and each checkpoint file
corrupted in turn; what a reader then sees is the old checkpoint or the new one, never a mix,
and a damaged file is named.

A kill is simulated in a forked child that ends with ``os._exit`` just before its k-th write
operation (a rename, a file's fsync or chmod, a directory made or removed): nothing after it runs,
no ``finally`` block and no clean-up, as after SIGKILL or a power cut (the data written before
it was flushed, which the writers' fsyncs guarantee on a real disk)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import vilt

# The operations that change what is on disk, as the writers reach them: each file a writer
# makes is flushed (fsync) once written, so a kill before each fsync is a kill after each file.
WRITE_OPS = [(os, "replace"), (os, "rename"), (os, "mkdir"), (shutil, "rmtree"),
             (os, "fsync"), (os, "unlink"), (os, "chmod")]  # fmt: skip


def count_write_points(action) -> int:
    """How many write operations ``action()`` makes (run in this process)."""
    counter = {"n": 0}
    saved = [(m, name, getattr(m, name)) for m, name in WRITE_OPS]
    for module, name, real in saved:

        def counting(*args, _real=real, **kwargs):
            counter["n"] += 1
            return _real(*args, **kwargs)

        setattr(module, name, counting)
    try:
        action()
    finally:
        for module, name, real in saved:
            setattr(module, name, real)
    return counter["n"]


def killed_at(point: int, action) -> int:
    """Run ``action()`` in a forked child that dies just before its ``point``-th write
    operation (1-based); returns the child's exit status (137: it was killed there)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            counter = {"n": 0}
            for module, name in WRITE_OPS:
                real = getattr(module, name)

                def dying(*args, _real=real, **kwargs):
                    counter["n"] += 1
                    if counter["n"] == point:
                        os._exit(137)
                    return _real(*args, **kwargs)

                setattr(module, name, dying)
            action()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# -- save_pretrained with its processor ---------------------------------------------------------
def version(n: int) -> tuple[vilt.ViltForQuestionAnswering, vilt.ViltProcessor]:
    """Model and processor version ``n``: its labels, weights and processor all differ."""
    texts = [f"what color is shape {i}" for i in range(40)] + [f"word{n}x{i}" for i in range(n)]
    tokenizer = vilt.train_tokenizer(texts, vocab_size=60 + 10 * n)
    labels = {i: f"v{n}-answer{i}" for i in range(3 + n)}
    config = vilt.ViltConfig.from_preset(
        "vilt-test", vocab_size=100, id2label=labels, max_position_embeddings=16 + n
    )
    torch.manual_seed(n)
    model = vilt.ViltForQuestionAnswering(config)
    processor = vilt.ViltProcessor.from_config(config, tokenizer)
    return model, processor


def fingerprint(model, processor=None) -> tuple:
    """What tells the versions apart, read from every file of the set."""
    found = (
        model.config.num_labels,
        model.config.id2label[0],
        model.config.max_position_embeddings,
        round(float(model.classifier[-1].bias.detach().sum()), 5),
    )
    if processor is None:
        return found
    return (*found, processor.max_length, processor.tokenizer.vocab_size)


def read_back(directory: Path) -> tuple:
    model = vilt.load_model(directory)
    processor = vilt.ViltProcessor.from_pretrained(directory)
    return fingerprint(model, processor)


def test_save_pretrained_killed_at_every_write_point_leaves_old_or_new(tmp_path):
    old, new = version(1), version(2)
    expected_old, expected_new = fingerprint(*old), fingerprint(*new)
    assert expected_old != expected_new
    seed_dir = tmp_path / "seed"
    old[0].save_pretrained(seed_dir, processor=old[1])

    def save_new(directory: Path):
        return lambda: new[0].save_pretrained(directory, processor=new[1])

    points = count_write_points(save_new(tmp_path / "count"))
    assert points >= 10  # every file is a write point or more
    seen = []
    for point in range(1, points + 1):
        target = tmp_path / f"at{point}"
        shutil.copytree(seed_dir, target)
        assert killed_at(point, save_new(target)) == 137, point
        found = read_back(target)
        assert found in (expected_old, expected_new), (point, found)
        seen.append("new" if found == expected_new else "old")
        # after a vilt read the files on disk are one whole set: other readers see it too
        assert not [p for p in target.iterdir() if p.name.startswith(".")], point
    assert seen[0] == "old" and seen[-1] == "new"
    assert seen == sorted(seen, key=lambda s: s == "new")  # old until the commit, new after


def test_model_save_killed_at_every_write_point_never_pairs_new_weights_with_old_config(tmp_path):
    old, new = version(1)[0], version(2)[0]
    seed_dir = tmp_path / "seed"
    old.save_pretrained(seed_dir)
    expected = {fingerprint(old), fingerprint(new)}
    points = count_write_points(lambda: new.save_pretrained(tmp_path / "count"))
    for point in range(1, points + 1):
        target = tmp_path / f"at{point}"
        shutil.copytree(seed_dir, target)
        assert killed_at(point, lambda t=target: new.save_pretrained(t)) == 137, point
        found = fingerprint(vilt.load_model(target))
        assert found in expected, (point, found)


# -- the trainer's checkpoints ------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run with a checkpoint at step 2 that goes on to step 4, its save not yet made."""
    from test_training import make_trainer

    root = tmp_path_factory.mktemp("trained")
    trainer = make_trainer(root / "seed", max_steps=4, save_every=2)
    trainer.train()
    shutil.rmtree(root / "seed" / "checkpoints" / "step_00000004")
    return trainer, root


def save_step_4(trainer, directory: Path):
    """The trainer's checkpoint of step 4 into ``directory``."""
    from vilt.training import checkpoint as ckpt

    seed = trainer.output_dir / "checkpoints" / "step_00000002"
    record = {**ckpt.read_state(seed), "global_step": 4}
    for key in ("files", "checksums", "format"):
        record.pop(key)
    return lambda: ckpt.save_checkpoint(
        trainer.accelerator, directory, model=trainer.model, optimizer=trainer.optimizer,
        scheduler=trainer.scheduler, state=record, keep_last=1,
    )  # fmt: skip


def resumes_from(directory: Path) -> str:
    """The step a resume picks under ``directory``, after loading it whole."""
    from test_training import make_trainer

    from vilt.training.resume import find_resume

    path, _ = find_resume(True, directory)
    trainer = make_trainer(directory.parent, max_steps=4)
    trainer._resume(path)  # every file read back
    return path.name


def test_trainer_checkpoint_killed_at_every_write_point_resumes_from_a_whole_one(trained):
    trainer, root = trained
    seed = root / "seed" / "checkpoints"
    points = count_write_points(save_step_4(trainer, root / "count"))
    assert points >= 8
    chosen = []
    for point in range(1, points + 1):
        target = root / f"at{point}" / "checkpoints"
        shutil.copytree(seed, target)
        assert killed_at(point, save_step_4(trainer, target)) == 137, point
        chosen.append(resumes_from(target))
    assert chosen[0] == "step_00000002" and chosen[-1] == "step_00000004"
    assert set(chosen) == {"step_00000002", "step_00000004"}


def test_each_file_of_a_checkpoint_corrupted_in_turn_is_named_and_passed_over(trained, tmp_path):
    from vilt.training.resume import find_resume

    trainer, root = trained
    save_step_4(trainer, tmp_path / "whole")()
    names = sorted(p.name for p in (tmp_path / "whole" / "step_00000004").iterdir())
    assert "optimizer.pt" in names and "trainer_state.json" in names
    for name in names:
        target = tmp_path / name / "checkpoints"
        shutil.copytree(root / "seed" / "checkpoints", target)
        shutil.copytree(tmp_path / "whole" / "step_00000004", target / "step_00000004")
        file = target / "step_00000004" / name
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit, in the middle
        file.write_bytes(bytes(data))
        path, note = find_resume(True, target)
        assert path.name == "step_00000002", name
        named = "trainer_state.json" if name == "trainer_state.json" else name
        assert f"step_00000004 passed over: {named}" in note, (name, note)
