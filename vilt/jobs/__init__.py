"""The recipes' jobs: ``vilt train-vit``, ``vilt vqa``, ``vilt pretrain`` and the
``recipes/*.py`` scripts run these ``main(argv)`` functions.

Each job parses its flags (the common ones from :mod:`vilt.jobs.common`, the training ones
from :class:`vilt.training.TrainingConfig`), builds its data, processor and model, trains
with :class:`vilt.training.Trainer` (or only evaluates, ``--eval-only``), and writes to
``--output-dir``: ``results.json``, ``metrics.csv``, the model with its processor
(``save_pretrained`` format), PNG curves, and task extras (VQA predictions and examples).
"""
