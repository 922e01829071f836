"""Train ViLT on VQA (default: easy-VQA, offline) and print the test accuracy.

python recipes/vqa.py                        # defaults: see --help
torchrun --nproc_per_node 2 recipes/vqa.py   # or accelerate launch, unchanged

On easy-VQA (the default data) the recipe preset presets/easy-vqa.json supplies the
defaults; any flag overrides its value, --recipe-preset none drops it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install

from vilt.cli import main

PRESET = Path(__file__).resolve().parent / "presets" / "easy-vqa.json"


def command(argv: list[str]) -> list[str]:
    """The vilt command line this script runs for its own arguments."""
    return ["vqa", "--default-recipe-preset", str(PRESET), *argv]


if __name__ == "__main__":
    sys.exit(main(command(sys.argv[1:])))
