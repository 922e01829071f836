"""Train a ViT image classifier (default: scikit-learn digits, offline) and print the test accuracy.

python recipes/train_vit.py                        # defaults: see --help
torchrun --nproc_per_node 2 recipes/train_vit.py   # or accelerate launch, unchanged

On the digits (the default data) the recipe preset presets/digits.json supplies the
defaults; any flag overrides its value, --recipe-preset none drops it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install

from vilt.cli import main

PRESET = Path(__file__).resolve().parent / "presets" / "digits.json"


def command(argv: list[str]) -> list[str]:
    """The vilt command line this script runs for its own arguments."""
    return ["train-vit", "--default-recipe-preset", str(PRESET), *argv]


if __name__ == "__main__":
    sys.exit(main(command(sys.argv[1:])))
