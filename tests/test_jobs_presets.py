"""Recipe presets: what one data set needs lives in recipes/presets/*.json, not in vilt/.

The recipe scripts apply their data set's preset and resolve, flag by flag, to what they
resolved to before the move (main at 4dbc937, tests/data/); the vilt commands have generic
defaults; every flag given overrides the preset's value, and a bad preset file is one error
line naming it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from vilt.config import get_preset, preset_names
from vilt.jobs import pretrain, train_vit, vqa
from vilt.jobs.augment import DEFAULT_RANDAUGMENT_OPS

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
JOBS = {"vqa": vqa, "pretrain": pretrain, "train_vit": train_vit}
# the model presets, named by their data set before, by their shape now
RENAMED = {"vilt-easy-vqa": "vilt-small-h16", "vit-digits": "vit-nano"}
# config fields added since 4dbc937, at the values that leave the model as it was
NEW_CONFIG_FIELDS = {
    "drop_path_rate": 0.0,
    "layer_scale_init_value": 0.0,
    "wpa_weight": 0.0,
    "problem_type": None,
}
# TrainingConfig fields (and flags) added since 4dbc937, at their defaults; a run that meets
# no NaN trains as it did; no layer decay, EMA, best model or early stopping
NEW_TRAINING_FIELDS = {
    "max_consecutive_skips": 20,
    "layer_decay": None,
    "ema_decay": None,
    "ema_warmup": True,
    "save_best": None,
    "save_best_mode": None,
    "early_stop_patience": None,
}
# the ViT job's flags added since 4dbc937, at their defaults: no augmentation or
# regularisation beyond the preset's shift
NEW_VIT_FLAGS = {
    "drop_path": None,
    "layer_scale": None,
    "crop_scale": None,
    "randaugment": 0,
    "randaugment_magnitude": 9,
    "trivialaugment": False,
    "random_erasing": 0.0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "mixup_prob": 1.0,
    "label_smoothing": 0.0,
}
# flags added since, at the values that start and train as before
NEW_FLAGS = {"global_batch_size": None, "no_init_run": False}
NEW_VILT_FLAGS = {
    "init_vision": None,
    "init_text": None,
    "max_text_length": None,
    "vocab_nlvr2_statements": None,
}
NEW_PRETRAIN_FLAGS = {
    "streaming": False,
    "whole_word_masking": True,
    "itm_negatives": "in-batch",
    "itm_hard_candidates": 4,
    "wpa_weight": None,
}


def assert_same_config(now: dict, before: dict) -> None:
    """``now`` holds every field of ``before`` at its value, and new fields at their neutral
    values only."""
    assert {k: now[k] for k in before} == before
    added = {k: v for k, v in now.items() if k not in before}
    assert added == {k: NEW_CONFIG_FIELDS[k] for k in added}, added


def recipe_command(name: str, argv: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The vilt command line that recipes/<name>.py runs for ``argv``."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.command(list(argv))


def recipe_args(name: str, argv: list[str] | tuple[str, ...] = ()):
    """The flags a run of recipes/<name>.py resolves to."""
    return JOBS[name].parse_args(recipe_command(name, argv)[1:])


def _plain(value):
    return json.loads(json.dumps(value, default=str))


@pytest.mark.parametrize(
    ("name", "new"),
    [
        (
            "vqa",
            {
                "recipe_preset": "easy-vqa",
                "cache_images": True,
                # RandAugment, new since: off in the preset
                "randaugment": 0,
                "randaugment_magnitude": 9,
                "randaugment_ops": list(DEFAULT_RANDAUGMENT_OPS),
            },
        ),
        (
            "pretrain",
            {
                "recipe_preset": "easy-vqa-pretrain",
                "cache_images": True,
                "vocab_vqa_questions": "easy-vqa",
            },
        ),
        ("train_vit", {"recipe_preset": "digits", "cache_images": True}),
    ],
)
def test_a_recipe_with_no_flags_resolves_field_by_field_as_before(name, new):
    """Every flag as main resolved it; the model preset renamed to the same config; the
    behaviours main keyed on the data set's name now flags the preset sets."""
    before = json.loads((DATA / "recipe_defaults_4dbc937.json").read_text())[name]
    args = vars(recipe_args(name))
    for key, value in before["args"].items():
        if key == "preset":
            assert args[key] == RENAMED[value]
            assert_same_config(get_preset(args[key]).to_dict(), before["model_config"])
        else:
            assert _plain(args[key]) == value, key
    added = {k: v for k, v in args.items() if k not in before["args"] and not k.startswith("_")}
    new_flags = {**NEW_TRAINING_FIELDS, **NEW_FLAGS}
    if name != "train_vit":
        new_flags.update(NEW_VILT_FLAGS)
    if name == "pretrain":
        new_flags.update(NEW_PRETRAIN_FLAGS)
    if name == "vqa":  # a shared ViLT flag now, pretraining's before
        new_flags["vocab_vqa_questions"] = None
    for key, value in new_flags.items():
        assert added.pop(key) == value, key
    for key, value in NEW_VIT_FLAGS.items() if name == "train_vit" else ():
        assert added.pop(key) == value, key
    preset_file = added.pop("default_recipe_preset")
    assert Path(preset_file) == ROOT / "recipes" / "presets" / f"{new['recipe_preset']}.json"
    assert added == new


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vqa", "pretrain", "train_vit"])
def test_a_recipe_with_no_flags_sets_up_training_as_before(name):
    """Run up to the Trainer, the recipe loads and caches the same data, trains the same
    vocabulary, builds the same model with the same initial weights, augments and collates
    the same first batch, and scores over the same views as main did (a few seconds: easy-VQA
    read in full)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from recipe_fingerprint import fingerprint

    before = json.loads((DATA / "recipe_fingerprints_4dbc937.json").read_text())[name]
    now = json.loads(json.dumps(fingerprint(ROOT / "recipes", name, [])))
    extra = before["training"]["extra"]
    assert now["training"]["extra"]["preset"] == RENAMED[extra["preset"]]
    now["training"]["extra"]["preset"] = extra["preset"]
    assert_same_config(now.pop("model"), before.pop("model"))
    for key, value in NEW_TRAINING_FIELDS.items():
        assert now["training"].pop(key) == value, key
    assert now == before


def test_flags_given_override_the_preset_one_by_one():
    args = recipe_args("vqa", ["--epochs", "3", "--no-tta-flip", "--shift", "1"])
    assert (args.epochs, args.tta_flip, args.shift) == (3, False, 1)
    # the rest as the preset says
    assert (args.hflip, args.tta_shift, args.balance_answers, args.cache_images) == (
        0.5,
        2,
        0.5,
        True,
    )
    assert args.preset == "vilt-small-h16"
    record = args._recipe_record
    assert record["overridden"] == {"epochs": 3, "shift": 1, "tta-flip": False}
    assert record["flags"]["epochs"] == 6 and record["name"] == "easy-vqa"
    header, values, overridden = args._recipe_message.splitlines()
    assert header.startswith("recipe preset easy-vqa (") and "easy-vqa.json): easy-VQA" in header
    assert "--epochs 6 --hflip 0.5 --shift 2 --tta-flip --tta-shift 2" in values
    assert overridden == "  overridden: --epochs 3 --shift 1 --no-tta-flip"


@pytest.mark.parametrize("argv", [[], ["--data", "easy-vqa"]])
def test_vilt_vqa_on_easy_vqa_without_a_preset_has_the_generic_defaults(argv):
    args = vqa.parse_args(argv)
    assert (args.hflip, args.shift, args.balance_answers) == (0.0, 0, 0.0)
    assert (args.tta_flip, args.tta_shift, args.cache_images) == (False, 0, False)
    assert args.recipe_preset is None and args._recipe_record is None
    assert args._recipe_message == ""


def test_vilt_pretrain_and_train_vit_on_their_default_data_have_the_generic_defaults():
    args = pretrain.parse_args([])
    assert args.vocab_vqa_questions is None and not args.cache_images
    args = train_vit.parse_args([])
    assert args.shift == 0 and not args.cache_images and args.recipe_preset is None


def test_a_recipe_leaves_its_preset_out_on_other_data(tmp_path):
    args = recipe_args("vqa", ["--data", str(tmp_path)])
    assert args.recipe_preset is None and args.hflip == 0.0 and not args.tta_flip
    assert args._recipe_message.startswith(
        "recipe preset easy-vqa not applied: it is for --data easy-vqa, not "
    )
    assert recipe_args("vqa", ["--data", "Easy_VQA"]).recipe_preset == "easy-vqa"
    assert recipe_args("train_vit", ["--data", str(tmp_path)]).shift == 0
    # asked for by name (beside the recipe's default) it applies to any data
    args = recipe_args("vqa", ["--data", str(tmp_path), "--recipe-preset", "easy-vqa"])
    assert args.recipe_preset == "easy-vqa" and args.tta_flip
    # none: the generic defaults in a recipe too
    args = recipe_args("vqa", ["--recipe-preset", "none"])
    assert args.recipe_preset is None and args.tta_shift == 0 and args._recipe_message == ""


def init_run(job="pretrain", output="p", flags="{}", preset="easy-vqa-pretrain") -> str:
    """A preset file whose init_run has these values (the preset a name or a file)."""
    if preset == "easy-vqa-pretrain":
        preset = str(ROOT / "recipes" / "presets" / f"{preset}.json")
    run = f'{{"job": "{job}", "recipe_preset": "{preset}", "output": "{output}", "flags": {flags}}}'
    return f'{{"flags": {{}}, "init_run": {run}}}'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "invalid JSON at line 1"),
        ("[]", 'a recipe preset is a JSON object with a "flags" object'),
        ('{"flags": {}, "extras": 1}', "unknown keys ['extras']"),
        ('{"flags": {"hflipp": 0.5}}', "'hflipp' is not a flag of vilt vqa"),
        ('{"flags": {"epochs": "many"}}', "flag 'epochs': "),
        ('{"flags": {"tta-flip": 1}}', "flag 'tta-flip': expected true or false, got 1"),
        ('{"flags": {"max-train-examples": 0}}', "flag 'max-train-examples': must be >= 1"),
        ('{"for_data": "easy-vqa", "flags": {}}', '"for_data" must be a list of --data names'),
        ('{"flags": {}, "init_run": []}', '"init_run" must be an object'),
        ('{"flags": {}, "init_run": {"job": "pretrain"}}', "missing keys ['output', 'recipe"),
        (init_run(job="pretrian"), "job 'pretrian' is not one of ['nlvr2', 'pretrain'"),
        (init_run(output="../p"), '"output" must be a directory name under --output-dir'),
        (init_run(flags='{"epochs": false}'), '"flags" must be an object of flag -> value'),
        (init_run(flags='{"tta-flip": true}'), "'tta-flip' is not a flag of vilt pretrain"),
        (init_run(preset="nope"), "--recipe-preset 'nope': no such file or preset"),
    ],
)
def test_a_bad_preset_file_is_one_error_line_naming_it(content, message, tmp_path, capsys):
    path = tmp_path / "mine.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        vqa.main(["--recipe-preset", str(path), "--output-dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vilt vqa: error: ") and message in err[-1], err
    assert str(path) in err[-1] and not (tmp_path / "out").exists()


def test_a_preset_name_is_looked_up_beside_the_recipes_default(capsys):
    with pytest.raises(SystemExit):  # a VQA preset has flags pretraining has not
        recipe_args("pretrain", ["--recipe-preset", "easy-vqa"])
    assert "'hflip' is not a flag of vilt pretrain" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recipe_args("vqa", ["--recipe-preset", "nope"])
    assert "presets in recipes/presets: ['digits', 'easy-vqa'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the vilt command knows no directory of presets
        vqa.parse_args(["--recipe-preset", "easy-vqa"])
    assert "give `vilt` the path of a preset file" in capsys.readouterr().err


def test_help_shows_the_defaults_in_effect(capsys):
    def help_text(argv):
        with pytest.raises(SystemExit):
            vqa.main(argv)
        return " ".join(capsys.readouterr().out.split())

    generic = help_text(["--help"])
    recipe = help_text([*recipe_command("vqa", ["--help"])[1:]])
    assert "vilt vqa applies one only with --recipe-preset" in generic
    assert "left and right (default: 0.0)" in generic and "(default: 0.5)" not in generic
    assert "left and right (default: 0.5)" in recipe
    assert "this recipe applies easy-vqa (" in recipe and "this recipe" not in generic


def test_the_recipe_presets_pick_model_shapes_by_shape_names():
    for file in (ROOT / "recipes" / "presets").glob("*.json"):
        flags = json.loads(file.read_text())["flags"]
        if file.stem in ("vit-scratch", "vit-finetune"):  # regularisation for any shape
            assert "preset" not in flags, file
        else:
            assert flags["preset"] in preset_names(), file
    assert not set(RENAMED) & set(preset_names())
    small = get_preset("vilt-small-h16")
    assert (small.image_size, small.patch_size, small.num_attention_heads) == (48, 8, 16)
    assert small.head_dim == 8 and get_preset("vilt-small").head_dim == 32
    nano = get_preset("vit-nano")
    assert (nano.image_size, nano.patch_size, nano.pooling) == (16, 4, "mean")


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("vit-scratch", {"mixup": 0.8, "cutmix": 1.0, "randaugment": 2, "layer_decay": None}),
        ("vit-finetune", {"layer_decay": 0.75, "ema_decay": 0.999, "head_lr_multiplier": 1.0}),
    ],
)
def test_the_vit_presets_for_scratch_and_fine_tuning_apply_by_name(preset, expected):
    args = recipe_args("train_vit", ["--recipe-preset", preset, "--init", "runs/some-vit"])
    assert {k: getattr(args, k) for k in expected} == expected
    assert args._recipe_record["name"] == preset and args.drop_path == 0.1
    assert args.label_smoothing == 0.1 and not args.cache_images  # the digits preset is left out
