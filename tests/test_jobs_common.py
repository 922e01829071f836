"""What every recipe shares: one clear error for a bad flag, --help with examples through
the vilt command and the scripts, and augmentation that replays exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vilt.config import get_preset
from vilt.jobs import pretrain, train_vit, vqa
from vilt.jobs.augment import HorizontalFlip, RandomShift

ROOT = Path(__file__).resolve().parents[1]
JOBS = {"vqa": vqa, "train-vit": train_vit, "pretrain": pretrain}


@pytest.mark.parametrize(
    ("job", "argv", "message"),
    [
        ("vqa", ["--preset", "vit-test"], "--preset 'vit-test' is not a ViltConfig preset"),
        ("train-vit", ["--preset", "nope"], "--preset 'nope' is not a ViTConfig preset"),
        ("vqa", ["--max-train-examples", "0"], "--max-train-examples: must be >= 1, got 0"),
        ("vqa", ["--batch-size", "0"], "TrainingConfig.batch_size=0: must be >= 1"),
        ("vqa", ["--hflip", "2"], "--hflip must be a probability in [0, 1], got 2.0"),
        ("vqa", ["--mixed-precision", "fp8"], "TrainingConfig.mixed_precision='fp8'"),
        ("vqa", ["--init", "x", "--patch-size", "8"], "--patch-size cannot change"),
        ("train-vit", ["--shift", "-1"], "--shift must be >= 0, got -1"),
        ("vqa", ["--shift", "-2"], "--shift must be >= 0 pixels, got -2"),
        ("train-vit", ["--init", "x", "--patch-size", "8"], "--patch-size cannot change"),
        ("pretrain", ["--mlm-probability", "1.5"], "--mlm-probability must be in [0, 1]"),
        ("pretrain", ["--epochs", "two"], "argument --epochs: invalid parse value: 'two'"),
        ("pretrain", ["--nope"], "unrecognized arguments: --nope"),
        ("vqa", ["--tta-shift", "48"], "--tta-shift 48 must be smaller than the image (48"),
        ("train-vit", ["--shift", "16"], "--shift 16 must be smaller than the image (16"),
    ],
)
def test_bad_flags_stop_with_one_error_line(job, argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        JOBS[job].main([*argv, "--output-dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # the message alone, not the whole usage before it
    assert err[0].startswith(f"vilt {job}: error: ") and message in err[0], err
    assert err[0].endswith(f"(see vilt {job} --help)")
    assert not (tmp_path / "out").exists()  # nothing was started


def test_a_failure_after_parsing_is_one_line_through_the_cli(tmp_path, capsys):
    from vilt.cli import main

    missing = tmp_path / "no-such-model"
    code = main(["vqa", "--eval-only", "--init", str(missing), "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and str(missing) in err[0], err


def test_the_jobs_default_model_presets_exist_in_their_family():
    assert get_preset(vqa.DEFAULT_PRESET).model_type == "vilt"
    assert get_preset(train_vit.DEFAULT_PRESET).model_type == "vit"
    assert pretrain.build_parser().get_default("preset") == vqa.DEFAULT_PRESET


@pytest.mark.parametrize("command", [["-m", "vilt.cli", "vqa"], [str(ROOT / "recipes" / "vqa.py")]])
def test_help_through_the_cli_and_the_script(command):
    proc = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: vilt vqa")
    for flag in ("--data", "--preset", "--init", "--eval-only", "--resume", "--max-steps"):
        assert flag in proc.stdout
    assert "examples:" in proc.stdout and "torchrun --nproc_per_node 2" in proc.stdout


def _items(n=6):
    return [
        {"pixel_values": torch.arange(12, dtype=torch.uint8).view(1, 3, 4).expand(3, 3, 4).clone(),
         "meta": {"question_id": i}}
        for i in range(n)
    ]  # fmt: skip


def test_flips_are_a_function_of_seed_epoch_and_items():
    def draw(seed, epoch):
        flip = HorizontalFlip(lambda items: [it["pixel_values"] for it in items], 0.5, seed=seed)
        flip.set_epoch(epoch)
        return torch.stack(flip(_items()))

    first = draw(0, 0)
    assert torch.equal(first, draw(0, 0))  # replayed exactly (resumption, workers)
    assert not torch.equal(first, draw(0, 1)) or not torch.equal(first, draw(1, 0))
    flipped = [bool(torch.equal(im, _items()[0]["pixel_values"].flip(-1))) for im in first]
    unflipped = [bool(torch.equal(im, _items()[0]["pixel_values"])) for im in first]
    assert all(a != b for a, b in zip(flipped, unflipped, strict=True)) and 0 < sum(flipped) < 6


def test_shift_moves_the_image_and_fills_with_zeros():
    shift = RandomShift(lambda items: [it["pixel_values"] for it in items], 1, seed=0)
    image = torch.ones(3, 4, 4, dtype=torch.uint8)
    out = shift([{"pixel_values": image, "meta": {"index": i}} for i in range(20)])
    assert all(o.shape == image.shape and o.dtype == torch.uint8 for o in out)
    kept = [int(o[0].sum()) for o in out]  # 16 unmoved, 12 one way, 9 diagonally
    assert set(kept) <= {16, 12, 9} and len(set(kept)) > 1


@pytest.mark.parametrize("fill", ["zeros", "edge"])
def test_a_shift_as_large_as_the_image_fails_at_the_first_batch(fill):
    shift = RandomShift(lambda items: items, 4, fill=fill)
    with pytest.raises(ValueError, match="up to 4 pixels does not fit an image of 4x4"):
        shift([{"pixel_values": torch.ones(3, 4, 4), "meta": {"index": 0}}])


def test_edge_shift_repeats_the_border_instead_of_black():
    """easy-VQA's backgrounds are light: a zero fill would add a black band (a colour it asks
    about); the edge fill shifts the content and repeats the nearest border pixel."""
    image = torch.arange(16, dtype=torch.uint8).view(1, 4, 4)
    shift = RandomShift(lambda items: [it["pixel_values"] for it in items], 1, fill="edge")
    out = shift([{"pixel_values": image, "meta": {"index": i}} for i in range(30)])
    seen = set()
    for o in out:
        assert o.shape == image.shape and o.dtype == torch.uint8
        # every output pixel is the input pixel at a clamped offset of at most one
        matches = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if torch.equal(
                o,
                image[:, (torch.arange(4) + dy).clamp(0, 3)][
                    ..., (torch.arange(4) + dx).clamp(0, 3)
                ],
            )
        ]
        assert matches, o
        seen.add(matches[0])
    assert len(seen) >= 5  # the offsets vary over the batch
    with pytest.raises(ValueError, match="shift fill must be one of"):
        RandomShift(lambda items: items, 1, fill="black")


def test_vqa_augmentation_flips_and_shifts_and_replays():
    """--shift wraps the training collator with an edge-filled shift under the flip: each
    image is mirrored or not and moved by at most the shift, and a rerun draws the same."""
    from vilt.jobs.vqa import _augment, build_parser

    args = build_parser().parse_args(["--shift", "1"])
    args.hflip = 0.5
    image = torch.arange(16, dtype=torch.uint8).view(1, 4, 4)
    items = [{"pixel_values": image, "meta": {"question_id": i}} for i in range(40)]
    collate = _augment(lambda batch: [it["pixel_values"] for it in batch], args)
    first = collate(items)
    assert all(torch.equal(a, b) for a, b in zip(first, collate(items), strict=True))

    def moved(im, dy, dx):
        return im[:, (torch.arange(4) + dy).clamp(0, 3)][..., (torch.arange(4) + dx).clamp(0, 3)]

    draws = set()
    for out in first:
        found = [
            (flip, dy, dx)
            for flip in (False, True)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if torch.equal(out, moved(image.flip(-1) if flip else image, dy, dx))
        ]
        assert found, out
        draws.add(found[0])
    assert {flip for flip, _, _ in draws} == {False, True}
    assert len({(dy, dx) for _, dy, dx in draws}) >= 5


def test_balance_answers_repeats_rare_answers():
    from types import SimpleNamespace

    from vilt.jobs.vqa_data import VQASplit, balance_answers

    answers = [["yes"]] * 16 + [["circle"]] * 4 + [["red", "red", "blue"]] + [None]
    records = [SimpleNamespace(answers=a) for a in answers]
    split = VQASplit(list(range(len(records))), records, None, [])
    assert balance_answers(split, 0.0) is split.dataset
    balanced = balance_answers(split, 0.5)
    repeats = [list(balanced.indices).count(i) for i in range(len(records))]
    # (16 / 4) ** 0.5 = 2 for circle; (16 / 1) ** 0.5 = 4 for red; unanswered once
    assert repeats == [1] * 16 + [2] * 4 + [4] + [1]
    assert [balanced[i] for i in range(3)] == [0, 1, 2]  # items of the split, in order


def test_balance_templates_evens_the_answers_within_a_question_template():
    from types import SimpleNamespace

    from vilt.data import AnswerVocab
    from vilt.jobs.vqa_data import VQASplit, balance_answers, question_template

    vocab = AnswerVocab(["yes", "no", "circle", "triangle"])
    assert question_template("Is there a circle?", {"circle"}) == "is there a _ ?"
    rows = [("is there a circle?", "no")] * 4 + [("is there a triangle?", "yes")] * 2
    rows += [("is there no circle?", "yes")] * 2 + [("is there no triangle?", "no")] * 2
    records = [SimpleNamespace(question=q, answers=[a]) for q, a in rows]
    split = VQASplit(list(range(len(records))), records, vocab, [q for q, _ in rows])
    assert balance_answers(split, 0.0, 0.0) is split.dataset
    balanced = balance_answers(split, 0.0, 1.0)
    repeats = [list(balanced.indices).count(i) for i in range(len(records))]
    # "is there a _ ?": 4 no, 2 yes -> yes twice; "is there no _ ?" ("no" is not blanked): even
    assert repeats == [1] * 4 + [2] * 2 + [1] * 4
