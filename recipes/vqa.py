"""Train ViLT on VQA (default: easy-VQA, offline) and print the test accuracy.

python recipes/vqa.py                        # defaults: see --help
torchrun --nproc_per_node 2 recipes/vqa.py   # or accelerate launch, unchanged
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install

from vilt.cli import main

if __name__ == "__main__":
    sys.exit(main(["vqa", *sys.argv[1:]]))
