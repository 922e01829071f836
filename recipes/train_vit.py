"""Train a ViT image classifier (default: scikit-learn digits, offline) and print the test accuracy.

python recipes/train_vit.py                        # defaults: see --help
torchrun --nproc_per_node 2 recipes/train_vit.py   # or accelerate launch, unchanged
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install

from vilt.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-vit", *sys.argv[1:]]))
