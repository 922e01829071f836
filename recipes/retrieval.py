"""Fine-tune ViLT for image-text retrieval (default: captions of easy-VQA images, offline)
and print recall@1/5/10 both ways.

python recipes/retrieval.py                        # defaults: see --help
torchrun --nproc_per_node 2 recipes/retrieval.py   # or accelerate launch, unchanged

On easy-VQA (the default data) the recipe preset presets/easy-vqa-retrieval.json supplies
the defaults; any flag overrides its value, --recipe-preset none drops it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install

from vilt.cli import main

PRESET = Path(__file__).resolve().parent / "presets" / "easy-vqa-retrieval.json"


def command(argv: list[str]) -> list[str]:
    """The vilt command line this script runs for its own arguments."""
    return ["retrieval", "--default-recipe-preset", str(PRESET), *argv]


if __name__ == "__main__":
    sys.exit(main(command(sys.argv[1:])))
