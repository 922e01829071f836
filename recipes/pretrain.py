"""ITM + MLM pretraining of ViLT on image-text pairs (default: easy-VQA captions, offline).

python recipes/pretrain.py                        # defaults: see --help
torchrun --nproc_per_node 2 recipes/pretrain.py   # or accelerate launch, unchanged
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without install

from vilt.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
