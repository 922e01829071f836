"""What a recipe script sets up, run with the given flags up to the start of training: the
data it loads (and caches), its tokenizer, model, training config, augmentation, test-time
views and a first collated batch, as a compact JSON-able dict of values and hashes.

Two checkouts that give equal fingerprints for a recipe train the same way from there on
(the training loop reads nothing else). tests/data/recipe_fingerprints_4dbc937.json holds
the fingerprints of main at 4dbc937, before the easy-VQA and digits defaults moved from
vilt/ into recipe presets; recreate them on any checkout with:

    PYTHONPATH=<checkout> python tests/recipe_fingerprint.py <checkout>/recipes > out.json
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import runpy
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import torch

RECIPES = ("vqa", "pretrain", "train_vit")
# the data loaders each job calls, by the name the job module imports them under
LOADERS = {
    "vqa": "vilt.jobs.vqa_data.load_vqa",
    "pretrain": "vilt.jobs.pretrain.load_pairs",
    "train_vit": "vilt.jobs.train_vit.load_classification",
}


class _Stop(BaseException):
    """Raised by the Trainer stand-in: a BaseException, so the vilt command's error guard
    lets it through."""


def _digest(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().numpy().tobytes() + str(value.dtype).encode()
    else:
        data = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _collate_chain(collate: Any) -> list[dict[str, Any]]:
    chain = []
    while collate is not None:
        fields = {k: getattr(collate, k) for k in ("p", "pixels", "fill") if hasattr(collate, k)}
        chain.append({"type": type(collate).__name__, **fields})
        collate = getattr(collate, "collate", None)
    return chain


def _vocab(collate: Any) -> str | None:
    while collate is not None and getattr(collate, "tokenizer", None) is None:
        collate = getattr(collate, "collate", None)
    if collate is None:
        return None
    return _digest(sorted(collate.tokenizer.backend.get_vocab().items()))


def fingerprint(recipes: Path, name: str, argv: list[str]) -> dict[str, Any]:
    """Run ``recipes/<name>.py argv`` until it builds its Trainer; what it built."""
    found: dict[str, Any] = {"loads": []}
    loader_target = LOADERS[name]
    module_name, attr = loader_target.rsplit(".", 1)
    real_loader = getattr(__import__(module_name, fromlist=[attr]), attr)

    def loader(*args: Any, **kwargs: Any) -> Any:
        source = args[0] if args else kwargs.get("source")
        found["loads"].append(
            {"source": source, "split": kwargs.get("split"), "cache": kwargs.get("cache_images")}
        )
        return real_loader(*args, **kwargs)

    def trainer(model, config, *, train_dataset, eval_dataset, collate_fn, eval_collate_fn, **_):
        torch.manual_seed(1234)  # the augmentation draws are seeded; this fixes nothing else
        items = [train_dataset[i] for i in range(8)]
        batch = collate_fn(items)
        pixels = batch.get("pixel_values")
        if "input_ids" in batch and "pixel_mask" not in batch and pixels is not None:
            # ViLT collators leave out the mask of a batch with no padded image: all ones
            batch["pixel_mask"] = torch.ones(pixels.shape[0], *pixels.shape[2:], dtype=torch.long)
        settings = config.to_dict()
        settings.pop("output_dir")
        found.update(
            model=model.config.to_dict(),
            weights=_digest([[k, _digest(v)] for k, v in model.state_dict().items()]),
            training=settings,
            train_items=len(train_dataset),
            eval_items=len(eval_dataset) if eval_dataset is not None else None,
            collate=_collate_chain(collate_fn),
            vocab=_vocab(eval_collate_fn),
            batch={k: _digest(v) for k, v in sorted(batch.items()) if torch.is_tensor(v)},
        )
        raise _Stop

    jobs: list[Any] = []
    real_job_init = __import__("vilt.jobs.common", fromlist=["Job"]).Job.__init__

    def job_init(self, args, *, task):
        jobs.append(args)
        real_job_init(self, args, task=task)

    with tempfile.TemporaryDirectory() as out:
        argv = [*argv, "--output-dir", out]
        with (
            mock.patch(loader_target, loader),
            mock.patch(f"vilt.jobs.{name}.Trainer", trainer),
            mock.patch("vilt.jobs.common.Job.__init__", job_init),
            mock.patch.object(sys, "argv", [str(recipes / f"{name}.py"), *argv]),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.suppress(_Stop),
        ):
            runpy.run_path(str(recipes / f"{name}.py"), run_name="__main__")
    if name == "vqa":
        from vilt.jobs import vqa

        args = jobs[0]
        found["test_time_views"] = [args.tta_flip, args.tta_shift, len(vqa._views(args))]
    return found


if __name__ == "__main__":
    recipes = Path(sys.argv[1]).resolve()
    print(json.dumps({n: fingerprint(recipes, n, []) for n in RECIPES}, indent=1, sort_keys=True))
