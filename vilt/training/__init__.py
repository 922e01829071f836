"""Training: one accelerate loop for every vilt task, with exact resumption.

    from vilt.training import Trainer, TrainingConfig, set_seed

    config = TrainingConfig(output_dir="runs/vqa", epochs=10, batch_size=32, lr=1e-4,
                            save_every=500, resume=True)
    set_seed(config.seed)  # before building the model, so its initialisation repeats
    model = vilt.ViltForQuestionAnswering(vilt.ViltConfig.from_preset("vilt-small"))
    trainer = Trainer(model, config, train_dataset=train, eval_dataset=test,
                      collate_fn=VQACollator(processor))
    results = trainer.train()

Batches are dicts. The model is called as ``model(**inputs)`` and must return an output
with ``.loss``. Values that are not model inputs go under ``batch["meta"]`` (a dict) or
under keys starting with ``meta_``: they are removed before the forward and handed to the
metrics (``meta_answers`` as ``meta["answers"]``). A collator may return None for a batch
whose items were all skipped; the loops skip it (under DDP the training step runs a zero loss
in its place, to stay paired with the other processes).

The training step reads nothing on the host: losses and gradient norms are read every
``log_every`` steps, before a save and at the end (see :mod:`vilt.training.trainer`).

``output_dir`` receives ``metrics.csv`` (per logged step), ``results.json`` (at the end),
the trained model (``save_pretrained``) and ``checkpoints/step_N/`` (the last ``keep_last``).
SIGTERM saves a checkpoint at the next step boundary and exits with status 143; Ctrl-C
saves one and raises KeyboardInterrupt. ``resume=True`` continues from the latest complete
checkpoint and ends with the weights an uninterrupted run would have.

Fine-tuning aids: ``layer_decay`` (layer-wise learning rates, :func:`param_groups`),
``ema_decay`` (a moving average of the weights, evaluated as ``ema_eval_*`` and saved to
``output_dir/ema``, :class:`ModelEma`), ``save_best`` with ``early_stop_patience`` (the best
model in ``output_dir/best``, :class:`BestModel`).
"""

from accelerate.utils import set_seed

from .best import BestModel
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainingConfig
from .ema import ModelEma
from .evaluate import evaluate, split_batch
from .loaders import EpochSampler, make_loader
from .metrics import (
    Metric,
    accuracy,
    itm_accuracy,
    metrics_for,
    mlm_accuracy,
    rank_accuracy,
    register_task_metrics,
    top_k_accuracy,
    vqa_accuracy,
)
from .negatives import HardNegatives
from .optim import (
    build_optimizer,
    build_scheduler,
    describe_param_groups,
    layer_id,
    lr_lambda,
    param_groups,
)
from .state import TrainState
from .trainer import SIGTERM_EXIT_CODE, Trainer

__all__ = [
    "SIGTERM_EXIT_CODE",
    "BestModel",
    "EpochSampler",
    "HardNegatives",
    "Metric",
    "ModelEma",
    "TrainState",
    "Trainer",
    "TrainingConfig",
    "accuracy",
    "build_optimizer",
    "build_scheduler",
    "describe_param_groups",
    "evaluate",
    "itm_accuracy",
    "latest_checkpoint",
    "layer_id",
    "load_checkpoint",
    "lr_lambda",
    "make_loader",
    "metrics_for",
    "mlm_accuracy",
    "param_groups",
    "rank_accuracy",
    "register_task_metrics",
    "save_checkpoint",
    "set_seed",
    "split_batch",
    "top_k_accuracy",
    "vqa_accuracy",
]
