"""Recipe presets: what one data set needs, as a named set of flag values in a JSON file.

The library keys no behaviour on a data set's name. What a data set needs (its model shape,
augmentations, answer balancing, test-time views, epochs, image caching) is written down in
a preset file, which a job applies as defaults: every flag given on the command line
overrides its value, one by one. The recipe scripts apply their data set's preset
(``recipes/presets/*.json``) when run on their default data; ``vilt vqa`` and the other
commands apply one only when asked (``--recipe-preset FILE``).

A preset file::

    {
      "description": "one line: what the preset is for",
      "for_data": ["easy-vqa"],
      "flags": {"preset": "vilt-small-h16", "epochs": 6, "tta-flip": true},
      "notes": {"tta-flip": "why this value"}
    }

``flags`` are the job's flags without the leading ``--``, with the values the command line
would give (``true``/``false`` for on/off flags). ``for_data``: the ``--data`` values the
preset was made for; a recipe applies its default preset when ``--data`` is absent or one
of these. ``notes`` (optional) say why a value was chosen.

``init_run`` (optional) names a run that makes the checkpoint this one starts from, as ViLT
fine-tunes from a pretrained model rather than from scratch::

    "init_run": {"job": "pretrain", "recipe_preset": "easy-vqa-pretrain",
                 "flags": {"epochs": 5}, "output": "pretrain", "why": "..."}

Unless ``--init``, ``--init-vision``, ``--eval-only`` or ``--no-init-run`` is given, the job
first runs ``vilt JOB`` with that preset (a name in the same directory, or a file) and
``flags`` into ``OUTPUT_DIR/OUTPUT``, then starts from it (``--init``). A finished run there
is reused; an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..textfiles import read_text

__all__ = [
    "AppliedPreset",
    "InitRun",
    "RecipePreset",
    "apply_recipe_preset",
    "note_overrides",
    "preset_defaults",
    "read_recipe_preset",
]

NO_PRESET = "none"  # --recipe-preset none: the job's generic defaults, even in a recipe


@dataclass(frozen=True)
class InitRun:
    """A preset's ``init_run``: the job and preset of the run whose model it starts from.

    Attributes:
        job: the ``vilt`` command (``pretrain``, ``vqa``, ...).
        recipe_preset: the preset file that run applies.
        flags: its flags beyond the preset's (flag name -> value; true for an on/off flag).
        output: its output directory, under the job's ``--output-dir``.
        why: one line on why the job starts there.
    """

    job: str
    recipe_preset: Path
    flags: Mapping[str, Any]
    output: str
    why: str = ""

    def argv(self, output_dir: Path, seed: int) -> list[str]:
        """The run's command line (after ``vilt JOB``); ``--resume`` continues one that
        stopped."""
        out = ["--recipe-preset", str(self.recipe_preset)]
        out += ["--output-dir", str(output_dir / self.output), "--seed", str(seed), "--resume"]
        for flag, value in self.flags.items():
            if value is True:
                out.append(f"--{flag}")
            else:
                out += [
                    f"--{flag}",
                    *(str(v) for v in (value if isinstance(value, list) else [value])),
                ]
        return out


@dataclass(frozen=True)
class RecipePreset:
    """A preset file as read: its name (the file's stem), where it is, and its flag values."""

    name: str
    path: Path
    description: str
    flags: Mapping[str, Any]
    for_data: tuple[str, ...] = ()
    notes: Mapping[str, str] = field(default_factory=dict)
    init_run: InitRun | None = None

    def made_for(self, data: str | list[str] | None) -> bool:
        """Whether ``--data`` (None: the job's default source; a list: each of several) is
        data this preset is for."""
        if isinstance(data, list):
            return all(self.made_for(d) for d in data)
        return data is None or _data_key(data) in {_data_key(d) for d in self.for_data}


@dataclass(frozen=True)
class AppliedPreset:
    """The preset a job runs with, and the flags the command line set to other values."""

    preset: RecipePreset
    overridden: Mapping[str, Any]

    def describe(self, parser: argparse.ArgumentParser) -> str:
        """The block a job prints at its start: the preset, its values, the overrides."""
        lines = [f"recipe preset {self.preset.name} ({_shown(self.preset.path)})"]
        if self.preset.description:
            lines[0] += f": {self.preset.description}"
        lines.append("  " + " ".join(_tokens(parser, self.preset.flags)))
        if self.overridden:
            lines.append("  overridden: " + " ".join(_tokens(parser, self.overridden)))
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """What results.json keeps of it."""
        return {
            "name": self.preset.name,
            "file": str(self.preset.path),
            "flags": dict(self.preset.flags),
            "overridden": dict(self.overridden),
        }


def read_recipe_preset(
    name_or_file: str | os.PathLike, *, search: Path | None = None
) -> RecipePreset:
    """A preset from a JSON file, or by name from ``search`` (``search/NAME.json``).

    Args:
        name_or_file: a path to a preset file, or a preset's name.
        search: the directory holding the named presets (the recipes' ``presets/``).

    Raises:
        ValueError: naming the file and what is wrong in it, or the names ``search`` holds.
    """
    path = Path(name_or_file)
    if not path.is_file():
        named = search / f"{name_or_file}.json" if search is not None else None
        if named is None or not named.is_file():
            raise ValueError(_not_found(str(name_or_file), search))
        path = named
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("flags"), dict):
        raise ValueError(f'{path}: a recipe preset is a JSON object with a "flags" object')
    unknown = sorted(set(data) - {"description", "for_data", "flags", "notes", "init_run"})
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {unknown}; known: description, for_data, flags, notes, init_run"
        )
    for_data = data.get("for_data", [])
    if not isinstance(for_data, list) or not all(isinstance(d, str) for d in for_data):
        raise ValueError(f'{path}: "for_data" must be a list of --data names')
    notes = data.get("notes") or {}
    if not isinstance(notes, dict):
        raise ValueError(f'{path}: "notes" must be an object of flag name -> why')
    return RecipePreset(
        name=path.stem,
        path=path,
        description=str(data.get("description", "")),
        flags=data["flags"],
        for_data=tuple(for_data),
        notes=notes,
        init_run=_init_run(path, data["init_run"]) if "init_run" in data else None,
    )


_INIT_RUN_KEYS = {"job", "recipe_preset", "flags", "output", "why"}


def _init_run(path: Path, spec: Any) -> InitRun:
    """A preset's ``init_run`` object, checked: its job known, its preset found beside
    ``path``, each of its flags one that job takes."""
    import importlib

    from ..cli import JOBS

    where = f'{path}: "init_run"'
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be an object with {sorted(_INIT_RUN_KEYS)}")
    unknown = sorted(set(spec) - _INIT_RUN_KEYS)
    missing = sorted({"job", "recipe_preset", "output"} - set(spec))
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}")
    if spec["job"] not in JOBS:
        raise ValueError(f"{where}: job {spec['job']!r} is not one of {sorted(JOBS)}")
    flags = spec.get("flags") or {}
    if not isinstance(flags, dict) or any(v is False or v is None for v in flags.values()):
        raise ValueError(f'{where}: "flags" must be an object of flag -> value (not false)')
    output = str(spec["output"])
    if not output or Path(output).is_absolute() or ".." in Path(output).parts:
        raise ValueError(f'{where}: "output" must be a directory name under --output-dir')
    try:
        preset = read_recipe_preset(str(spec["recipe_preset"]), search=path.parent)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if preset.init_run is not None:
        raise ValueError(f"{where}: {preset.path} has an init_run of its own (one level only)")
    parser = importlib.import_module(JOBS[spec["job"]][0]).build_parser()
    preset_defaults(parser, RecipePreset(preset.name, path, "", flags))  # flags it takes
    return InitRun(str(spec["job"]), preset.path, flags, output, str(spec.get("why", "")))


def apply_recipe_preset(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[AppliedPreset | None, str]:
    """Choose the preset for ``argv``, make its values ``parser``'s defaults and say how.

    The preset is ``--recipe-preset`` when given (``none``: no preset), else the recipe's
    ``--default-recipe-preset`` when ``--data`` is data it was made for. Returns the applied
    preset (its overrides are filled in by :func:`note_overrides` after parsing) or None,
    and a line to print when a recipe's default preset was left out."""
    first, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    default = first.default_recipe_preset
    search = Path(default).parent if default else None
    if default:
        _say_default_in_help(parser, Path(default))
    chosen = first.recipe_preset
    if chosen is not None and chosen.lower() == NO_PRESET:
        return None, ""
    if chosen is None and default is None:
        return None, ""
    preset = read_recipe_preset(chosen or default, search=search)
    if chosen is None and not preset.made_for(first.data):
        return None, (
            f"recipe preset {preset.name} not applied: it is for --data "
            f"{', '.join(preset.for_data) or '(the default)'}, not "
            f"{' '.join(first.data) if isinstance(first.data, list) else first.data} "
            f"(--recipe-preset {preset.name} applies it anyway)"
        )
    parser.set_defaults(**preset_defaults(parser, preset))
    return AppliedPreset(preset, {}), ""


def note_overrides(
    applied: AppliedPreset | None, parser: argparse.ArgumentParser, args: argparse.Namespace
) -> AppliedPreset | None:
    """``applied`` with the preset's flags that the command line set to other values."""
    if applied is None:
        return None
    wanted = preset_defaults(parser, applied.preset)
    overridden = {}
    for flag in applied.preset.flags:
        dest = _action(parser, flag, applied.preset).dest
        if getattr(args, dest) != wanted[dest]:
            overridden[_positive(parser, flag)] = getattr(args, dest)
    return AppliedPreset(applied.preset, overridden)


def preset_defaults(parser: argparse.ArgumentParser, preset: RecipePreset) -> dict[str, Any]:
    """The preset's flags as parser destinations and values, each checked as the command
    line would check it (its type, its choices)."""
    out = {}
    for flag, value in preset.flags.items():
        action = _action(parser, flag, preset)
        try:
            out[action.dest] = _value(action, flag, value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            raise ValueError(f"{preset.path}: flag {flag!r}: {err}") from None
    return out


def _action(parser: argparse.ArgumentParser, flag: str, preset: RecipePreset) -> argparse.Action:
    action = parser._option_string_actions.get("--" + flag)
    if action is None or action.dest in ("recipe_preset", "default_recipe_preset", "help"):
        raise ValueError(f"{preset.path}: {flag!r} is not a flag of {parser.prog} (see --help)")
    return action


def _value(action: argparse.Action, flag: str, value: Any) -> Any:
    """What the parser would store for ``--flag`` with ``value`` (a JSON value)."""
    if value is None:
        return None
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value != flag.startswith("no-")
    if action.nargs == 0:  # store_true / store_false / store_const
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return action.const if value else action.default
    if isinstance(action.nargs, int) or action.nargs in ("*", "+"):
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {value!r}")
        return [_one(action, v) for v in value]
    return _one(action, value)


def _one(action: argparse.Action, value: Any) -> Any:
    if isinstance(value, (dict, list)):
        raise TypeError(f"expected one value, got {value!r}")
    converted = action.type(str(value)) if callable(action.type) else value
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"{converted!r} is not one of {list(action.choices)}")
    return converted


def _positive(parser: argparse.ArgumentParser, flag: str) -> str:
    """The flag's positive spelling (``tta-flip`` for ``no-tta-flip``)."""
    action = parser._option_string_actions["--" + flag]
    return action.option_strings[0].removeprefix("--")


def _tokens(parser: argparse.ArgumentParser, flags: Mapping[str, Any]) -> list[str]:
    """``flags`` (flag name -> value) as a command line: ``--epochs 6 --tta-flip``."""
    out = []
    for flag, value in flags.items():
        action = parser._option_string_actions["--" + flag]
        if isinstance(action, argparse.BooleanOptionalAction) and isinstance(value, bool):
            positive = action.option_strings[0]
            on = value != flag.startswith("no-")
            out.append(positive if on else "--no-" + positive.removeprefix("--"))
        elif action.nargs == 0:
            out.append(f"--{flag}" if value else f"(no --{flag})")
        elif isinstance(value, (list, tuple)):
            out.append(" ".join([f"--{flag}", *(str(v) for v in value)]))
        else:
            out.append(f"--{flag} {value}")
    return out


def _say_default_in_help(parser: argparse.ArgumentParser, default: Path) -> None:
    action = parser._option_string_actions["--recipe-preset"]
    action.help = (
        f"{action.help}; this recipe applies {default.stem} ({_shown(default)}) when --data is "
        "data it was made for; `none`: the generic defaults"
    )


def _not_found(name: str, search: Path | None) -> str:
    if search is None:
        return (
            f"--recipe-preset {name!r}: no such file (a preset name is looked up by the recipe "
            "scripts, in recipes/presets/; give `vilt` the path of a preset file)"
        )
    names = sorted(p.stem for p in search.glob("*.json"))
    return f"--recipe-preset {name!r}: no such file or preset; presets in {_shown(search)}: {names}"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when under it, else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _data_key(name: str) -> str:
    return name.strip().lower().replace("_", "-")
