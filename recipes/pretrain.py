"""ITM + MLM pretraining of ViLT on image-text pairs (default: easy-VQA captions, offline).

python recipes/pretrain.py                        # defaults: see --help
torchrun --nproc_per_node 2 recipes/pretrain.py   # or accelerate launch, unchanged

On easy-VQA (the default data) the recipe preset presets/easy-vqa-pretrain.json supplies the
defaults; any flag overrides its value, --recipe-preset none drops it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install

from vilt.cli import main

PRESET = Path(__file__).resolve().parent / "presets" / "easy-vqa-pretrain.json"


def command(argv: list[str]) -> list[str]:
    """The vilt command line this script runs for its own arguments."""
    return ["pretrain", "--default-recipe-preset", str(PRESET), *argv]


if __name__ == "__main__":
    sys.exit(main(command(sys.argv[1:])))
