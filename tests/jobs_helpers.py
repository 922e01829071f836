"""Shared pieces of the recipe job tests: tiny settings and readers of what a run wrote."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# the recipe presets that recipes/vqa.py, train_vit.py and pretrain.py apply
EASY_VQA = ["--recipe-preset", str(RECIPES / "presets" / "easy-vqa.json")]
DIGITS = ["--recipe-preset", str(RECIPES / "presets" / "digits.json")]
EASY_VQA_PRETRAIN = ["--recipe-preset", str(RECIPES / "presets" / "easy-vqa-pretrain.json")]

# A handful of examples, a tiny preset, a few steps: every output, in seconds. The VQA runs
# (and the others) use their recipe's preset, the model overridden.
TINY_VQA = [*EASY_VQA, "--preset", "vilt-test", "--max-train-examples", "48"]
TINY_VQA += ["--max-eval-examples", "24"]
TINY_VQA += ["--batch-size", "8", "--eval-batch-size", "16", "--examples", "2"]
TINY_VIT = [*DIGITS, "--preset", "vit-test", "--max-train-examples", "64"]
TINY_VIT += ["--max-eval-examples", "40"]
TINY_VIT += ["--batch-size", "16"]
TINY_PRETRAIN = [*EASY_VQA_PRETRAIN, "--preset", "vilt-test", "--max-train-examples", "48"]
TINY_PRETRAIN += ["--max-eval-examples", "24", "--batch-size", "8"]


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def weights(path: Path) -> dict:
    return load_file(str(path / "model.safetensors"))


def same_weights(a: dict, b: dict, atol: float = 0.0) -> bool:
    """Equal tensors under equal names (``atol``: e.g. the 1e-30 steps of a frozen run)."""
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


def assert_run_outputs(out: Path, *, steps: int, metric: str, curves: bool = True) -> dict:
    """The files every training job leaves, and results.json's common fields."""
    for name in ("results.json", "metrics.csv", "config.json", "model.safetensors"):
        assert (out / name).is_file(), name
    if curves:
        assert (out / "loss.png").stat().st_size > 0 and (out / "metrics.png").stat().st_size > 0
    found = results(out)
    assert found["steps"] == steps and found["world_size"] == 1
    assert found["num_parameters"] > 0 and found["wall_time_s"] > 0
    assert found["total_time_s"] >= found["wall_time_s"]
    assert 0.0 <= found["metrics"][metric] <= 1.0
    assert [int(r["step"]) for r in rows(out)][-1] == steps
    return found
