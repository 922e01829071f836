"""ONNX export of vilt models, and a small onnxruntime runner for what it writes.

``export_onnx(model, out)`` writes a directory that runs without torch: ``model.onnx`` (and
``model.int8.onnx`` with ``int8=True``), the model's ``config.json`` (label names), its
processor files, and ``onnx_export.json`` naming the graph's inputs and outputs. Every
axis that varies between requests is dynamic: batch, text length, image height and width (and
so the pixel mask). ViLT's eval forward has no per-sample loop, no random patch sampling and
no value-dependent branch, so one graph serves every shape and a pair's outputs do not depend
on what else is in its batch.

One operator needs a translation of its own: the stable argsort that puts each image's real
patches before its padding. ONNX's ``TopK`` breaks ties by the lower index, so a full-length
ascending ``TopK`` is that stable sort.

The exporter (``torch.onnx.export(dynamo=True)``) needs ``onnxscript`` and ``onnx``; checking
and running need ``onnxruntime``: the ``onnx`` extra (``pip install 'vilt[onnx]'``), imported
only when called.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checks import check_inputs
from ..modeling.pretrained import CONFIG_NAME, FORMAT_VERSION, PreTrainedModel

__all__ = [
    "INT8_FILE",
    "ONNX_FILE",
    "OnnxModel",
    "export_onnx",
    "onnx_signature",
    "quantize_onnx",
]

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
META_FILE = "onnx_export.json"
EXTRA = "pip install 'vilt[onnx]'"

_VILT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "pixel_mask")
# the outputs each class exports, by attribute of its output object
_OUTPUTS = {
    "ViTForImageClassification": ("logits",),
    "ViTModel": ("last_hidden_state", "pooler_output"),
    "ViltModel": ("last_hidden_state", "pooler_output"),
    "ViltForQuestionAnswering": ("logits", "pooler_output"),
    "ViltForImageTextMatching": ("logits", "scores", "pooler_output"),
    "ViltForMaskedLM": ("logits", "pooler_output"),
    "ViltForPreTraining": ("itm_logits", "mlm_logits", "scores", "pooler_output"),
    "ViltForImagesAndTextClassification": ("logits", "pooler_output"),
}
# heads that read the pooled state alone: their backbone is exported pooled_only (exact, and
# the last block computes one token instead of the whole sequence)
_POOLED_HEADS = (
    "ViltForQuestionAnswering",
    "ViltForImageTextMatching",
    "ViltForImagesAndTextClassification",
)


def _require(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs {module}: {EXTRA}") from None


def onnx_signature(model: PreTrainedModel) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of ``model``'s ONNX graph.

    Args:
        model: a vilt model (any ViT or ViLT class).

    Raises:
        TypeError: for a class that has no ONNX export.
    """
    name = type(model).__name__
    if name not in _OUTPUTS:
        raise TypeError(f"{name} has no ONNX export; exportable: {', '.join(sorted(_OUTPUTS))}")
    outputs = _OUTPUTS[name]
    if name == "ViTModel" and model.pooler is None:
        outputs = ("last_hidden_state",)
    inputs = ("pixel_values",) if name.startswith("ViT") else _VILT_INPUTS
    return inputs, outputs


class _Graph(nn.Module):
    """The model behind positional inputs and a tuple of named outputs, as ONNX sees it."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.input_names, self.output_names = onnx_signature(model)
        self.vit = self.input_names == ("pixel_values",)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs = dict(zip(self.input_names, inputs, strict=True))
        if self.vit:  # any image size; the position grid follows it, as in torch
            kwargs["interpolate_pos_encoding"] = True
        out = self.model(**kwargs)
        return tuple(getattr(out, name) for name in self.output_names)


def _example(model: PreTrainedModel, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with: two samples, padded text and a padded image, a patch grid
    (3 x 5) unlike the model's own so that nothing specialises to it."""
    config = model.config
    ph, pw = (config.patch_size,) * 2 if isinstance(config.patch_size, int) else config.patch_size
    b, t, h, w = 2, min(7, getattr(config, "max_position_embeddings", 7)), 3 * ph, 5 * pw
    images = getattr(config, "num_images", -1)
    lead = (b, images) if type(model).__name__ == "ViltForImagesAndTextClassification" else (b,)
    gen = torch.Generator().manual_seed(0)
    pixel_mask = torch.ones(*lead, h, w, dtype=torch.long)
    pixel_mask[1, ..., 2 * ph :, :] = 0
    attention_mask = torch.ones(b, t, dtype=torch.long)
    attention_mask[1, t - 2 :] = 0
    values = {
        "input_ids": torch.randint(1, getattr(config, "vocab_size", 2), (b, t), generator=gen),
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros(b, t, dtype=torch.long),
        "pixel_values": torch.randn(*lead, config.num_channels, h, w, generator=gen),
        "pixel_mask": pixel_mask,
    }
    return tuple(values[n] for n in names)


def _dynamic_shapes(model: PreTrainedModel, names: tuple[str, ...]) -> dict[str, dict]:
    from torch.export import Dim

    config = model.config
    ph, pw = (config.patch_size,) * 2 if isinstance(config.patch_size, int) else config.patch_size
    batch = Dim("batch", min=1, max=1 << 16)
    height, width = Dim("height", min=2 * ph), Dim("width", min=2 * pw)
    nlvr2 = type(model).__name__ == "ViltForImagesAndTextClassification"
    lead = 2 if nlvr2 else 1  # NLVR2's images: (batch, images, ...)
    axes: dict[str, dict] = {}
    for name in names:
        if name in ("input_ids", "attention_mask", "token_type_ids"):
            text = Dim("text", min=1, max=config.max_position_embeddings)
            axes[name] = {0: batch, 1: text}
        elif name == "pixel_values":
            axes[name] = {0: batch, lead + 1: height, lead + 2: width}
        else:  # pixel_mask
            axes[name] = {0: batch, lead: height, lead + 1: width}
    return axes


def _sort_stable(self, *, stable=None, dim: int = -1, descending: bool = False):
    """aten::sort.stable as ONNX TopK over the whole axis (ties: the lower index first)."""
    from onnxscript import opset18 as op

    length = op.Reshape(op.Gather(op.Shape(self), dim, axis=0), op.Constant(value_ints=[1]))
    return op.TopK(self, length, axis=dim, largest=descending, sorted=True)


@contextlib.contextmanager
def _export_mode(model: PreTrainedModel) -> Iterator[None]:
    """Eval mode, no value checks, and pooled_only where the head reads the pooled state
    alone; everything restored after."""
    training = model.training
    backbone = getattr(model, "vilt", None)
    pooled = getattr(backbone, "pooled_only", None)
    model.eval()
    if pooled is not None and type(model).__name__ in _POOLED_HEADS:
        backbone.pooled_only = True
    try:
        with check_inputs(False), torch.no_grad():
            yield
    finally:
        model.train(training)
        if pooled is not None:
            backbone.pooled_only = pooled


def _atomic_dir_write(out: Path, write: Any) -> None:
    """Write the files into a fresh sibling directory, then move each into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        write(Path(tmp))
        for item in sorted(Path(tmp).iterdir()):
            os.replace(item, out / item.name)


def export_onnx(
    model: PreTrainedModel | str | os.PathLike,
    out: str | os.PathLike,
    *,
    processor: Any = None,
    int8: bool = False,
    opset: int | None = None,
) -> Path:
    """Write ``model`` as an ONNX directory: model.onnx, config.json, processor files,
    onnx_export.json (and model.int8.onnx with ``int8``).

    Args:
        model: a checkpoint directory (its processor is copied along) or a loaded model.
        out: the directory to write (created; files of the same names are replaced).
        processor: the processor to save beside a loaded model (anything with
            ``save_pretrained``); None with a loaded model writes no processor files.
        int8: also write ``model.int8.onnx``, onnxruntime's dynamic int8 quantisation of
            every MatMul and Gemm weight (see :func:`quantize_onnx`).
        opset: the ONNX opset (default: the exporter's).

    Returns:
        The output directory.
    """
    _require("onnxscript", "ONNX export")
    _require("onnx", "ONNX export")
    if isinstance(model, str | os.PathLike):
        from ..embedding import image_processor_for
        from ..modeling import load_model

        source = model
        model = load_model(source)
        if processor is None:
            processor = image_processor_for(source, model)
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a vilt model or a checkpoint path, got {type(model)}")
    with _export_mode(model):
        graph = _Graph(model).eval()
        names = graph.input_names
        program = _trace(graph, _example(model, names), _dynamic_shapes(model, names), opset)
    out = Path(out)

    def write(tmp: Path) -> None:
        program.save(str(tmp / ONNX_FILE))
        if int8:
            quantize_onnx(tmp / ONNX_FILE, tmp / INT8_FILE)
        config = model.config.to_dict() | {
            "architectures": [type(model).__name__],
            "vilt_format": FORMAT_VERSION,
        }
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        (tmp / CONFIG_NAME).write_text(text, encoding="utf-8")
        if processor is not None:
            processor.save_pretrained(tmp)
        meta = {
            "architecture": type(model).__name__,
            "model": ONNX_FILE,
            "int8": INT8_FILE if int8 else None,
            "inputs": list(names),
            "outputs": list(graph.output_names),
            "opset": _opset_of(tmp / ONNX_FILE),
            "torch": torch.__version__,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    _atomic_dir_write(out, write)
    return out


def _trace(graph: _Graph, example: tuple, dynamic: dict, opset: int | None) -> Any:
    options: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    with warnings.catch_warnings():
        # torch.export's notes on its own internals; the parity tests judge the result
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # one Dim shared by several inputs (batch, text, height, width) is what we mean
        warnings.filterwarnings(
            "ignore", message=".*axis name.*will not be used", category=UserWarning
        )
        return torch.onnx.export(
            graph,
            example,
            dynamo=True,
            input_names=list(graph.input_names),
            output_names=list(graph.output_names),
            dynamic_shapes={"inputs": tuple(dynamic[n] for n in graph.input_names)},
            custom_translation_table={torch.ops.aten.sort.stable: _sort_stable},
            verbose=False,
            **options,
        )


def _opset_of(path: Path) -> int:
    onnx = _require("onnx", "ONNX export")
    proto = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """onnxruntime's dynamic int8 quantisation: weights of MatMul and Gemm stored as int8
    (per output channel), activations quantised on the fly; LayerNorm, softmax, GELU and
    the embeddings stay fp32.

    Args:
        src: an fp32 ONNX file.
        dst: the int8 file to write.
    """
    _require("onnxruntime", "int8 quantisation")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        # onnxruntime's own graph optimisation first, as its quantiser asks; its symbolic
        # shape inference is skipped (it cannot follow the dynamic patch grid)
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(Path(src), prepared, skip_symbolic_shape=True)
        quantize_dynamic(
            prepared,
            Path(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    return Path(dst)


class OnnxModel:
    """An exported directory in onnxruntime: call it with the processor's outputs.

    Args:
        directory: what :func:`export_onnx` wrote.
        int8: run ``model.int8.onnx`` instead of ``model.onnx``.
        threads: onnxruntime's intra-op threads (default: its own choice).
        spin: let onnxruntime's threads busy-wait for the next call (onnxruntime's default).
            Off here: spinning threads hold cores that the rest of the process (torch, the
            image processor, a server's event loop) may need between calls.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        int8: bool = False,
        threads: int | None = None,
        spin: bool = False,
    ) -> None:
        ort = _require("onnxruntime", "running an ONNX model")
        self.directory = Path(directory)
        meta_file = self.directory / META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"{self.directory}: no {META_FILE}; write it with vilt export")
        self.meta = json.loads(meta_file.read_text(encoding="utf-8"))
        name = self.meta["int8"] if int8 else self.meta["model"]
        if not name:
            raise FileNotFoundError(f"{self.directory}: exported without int8 (vilt export --int8)")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(
            str(self.directory / name), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        config = json.loads((self.directory / "config.json").read_text(encoding="utf-8"))
        self.id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}

    @property
    def architecture(self) -> str:
        return self.meta["architecture"]

    def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
        """Outputs by name, from inputs by name (torch tensors or numpy arrays; a processor's
        output as it is). Inputs the graph does not take are an error, as missing ones are."""
        missing = [n for n in self.inputs if n not in inputs]
        extra = [n for n in inputs if n not in self.inputs]
        if missing or extra:
            raise ValueError(
                f"the ONNX model takes {', '.join(self.inputs)}; "
                + (f"missing {', '.join(missing)}" if missing else f"got {', '.join(extra)}")
            )
        feed = {}
        for name in self.inputs:
            value = inputs[name]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            array = np.asarray(array)
            feed[name] = array.astype(np.float32 if name == "pixel_values" else np.int64)
        return dict(zip(self.outputs, self.session.run(None, feed), strict=True))

    def __repr__(self) -> str:
        return f"OnnxModel({self.directory}, {self.architecture})"
