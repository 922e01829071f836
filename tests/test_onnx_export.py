"""ONNX export (vilt.interop.onnx, `vilt export`): onnxruntime gives torch's outputs within
1e-4 on batches of several sizes, text lengths, image sizes and paddings; a pair's outputs in a
batch are its outputs alone; the int8 file is quantised and stays close; the directory carries
the processor and the label names. Each model is exported once per module (one layer, to keep
the export to a few seconds)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed")

from tiny_checkpoints import TEXTS, images, save_vilt, save_vit

import vilt
from vilt.cli import main
from vilt.interop.onnx import OnnxModel, export_onnx

ATOL = 1e-4
ONE_LAYER = {"num_hidden_layers": 1}
NLVR2 = {"num_images": 2, "modality_type_vocab_size": 3}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (torch model, processor, ONNX directory), exported on first use."""
    root = tmp_path_factory.mktemp("onnx")
    made: dict[str, tuple] = {}

    def get(name: str):
        if name in made:
            return made[name]
        src, out = root / f"{name}-model", root / f"{name}-onnx"
        if name == "vit":
            save_vit(src, **ONE_LAYER)
            processor = vilt.ViTImageProcessor.from_pretrained(src)
        else:
            cls, extra = {
                "vqa": (vilt.ViltForQuestionAnswering, {"num_labels": 5}),
                "itm": (vilt.ViltForImageTextMatching, {}),
                "nlvr2": (vilt.ViltForImagesAndTextClassification, NLVR2),
                "pretraining": (vilt.ViltForPreTraining, {}),
            }[name]
            save_vilt(src, cls, **ONE_LAYER, **extra)
            processor = vilt.ViltProcessor.from_pretrained(src)
        model = vilt.load_model(src).eval()
        if name == "vqa":  # the command line, with int8
            assert main(["export", str(src), str(out), "--format", "onnx", "--int8"]) == 0
        elif name == "itm":  # a loaded model in training mode, and its processor
            model.train()
            export_onnx(model, out, processor=processor)
            assert model.training and model.vilt.pooled_only is False  # as it came
            model.eval()
        else:
            export_onnx(src, out)
        made[name] = (model, processor, out)
        return made[name]

    return get


def batch_for(name: str, processor, n: int, offset: int = 0) -> dict[str, torch.Tensor]:
    """``n`` pairs of different image sizes and text lengths, through the processor."""
    pics = images(n + offset + 1)
    texts = [TEXTS[(i + offset) % len(TEXTS)] for i in range(n)]
    if name == "nlvr2":
        pics = [[pics[offset + i], pics[offset + i + 1]] for i in range(n)]
    else:
        pics = pics[offset : offset + n]
    if name == "vit":
        return dict(processor(pics, return_tensors="pt"))
    return dict(processor(images=pics, text=texts))


def torch_outputs(model, inputs: dict[str, torch.Tensor], names: list[str]) -> dict:
    options = {"interpolate_pos_encoding": True} if "input_ids" not in inputs else {}
    with torch.no_grad():
        out = model(**inputs, **options)
    return {k: getattr(out, k).numpy() for k in names}


def assert_close(got: dict, expected: dict, atol: float = ATOL) -> None:
    assert got.keys() == expected.keys()
    for key in got:
        assert got[key].shape == expected[key].shape, key
        np.testing.assert_allclose(got[key], expected[key], atol=atol, rtol=0, err_msg=key)


@pytest.mark.parametrize("name", ["vqa", "itm", "nlvr2", "pretraining", "vit"])
def test_onnxruntime_equals_torch_on_batches_of_several_shapes(exported, name):
    model, processor, out = exported(name)
    runner = OnnxModel(out)
    shapes = set()
    for n, offset in ((1, 0), (3, 1), (6, 0)):  # batch 1, 3, 6; texts and images differ
        inputs = batch_for(name, processor, n, offset)
        shapes.add(tuple(tuple(v.shape) for v in inputs.values()))
        assert_close(runner(**inputs), torch_outputs(model, inputs, runner.outputs))
    assert len(shapes) == 3


def test_vilt_graph_takes_any_text_length_and_image_size(exported):
    model, _, out = exported("vqa")
    runner = OnnxModel(out)
    gen = torch.Generator().manual_seed(0)
    # (batch, text, height, width): one token, the full text table, a single patch row
    for b, t, h, w in ((1, 1, 8, 8), (2, 16, 8, 48), (4, 3, 64, 24)):
        inputs = {
            "input_ids": torch.randint(1, 100, (b, t), generator=gen),
            "attention_mask": torch.ones(b, t, dtype=torch.long),
            "token_type_ids": torch.zeros(b, t, dtype=torch.long),
            "pixel_values": torch.randn(b, 3, h, w, generator=gen),
            "pixel_mask": torch.ones(b, h, w, dtype=torch.long),
        }
        inputs["attention_mask"][-1, (t + 1) // 2 :] = 0
        inputs["pixel_mask"][0, :, w // 2 + 4 :] = 0
        assert_close(runner(**inputs), torch_outputs(model, inputs, runner.outputs))


def test_vit_graph_interpolates_positions_for_other_image_sizes(exported):
    model, _, out = exported("vit")
    runner = OnnxModel(out)
    for shape in ((1, 3, 32, 32), (2, 3, 40, 48), (3, 3, 64, 16)):
        inputs = {"pixel_values": torch.randn(shape, generator=torch.Generator().manual_seed(1))}
        assert_close(runner(**inputs), torch_outputs(model, inputs, runner.outputs))


@pytest.mark.parametrize("name", ["vqa", "itm", "nlvr2"])
def test_a_pair_gets_the_same_outputs_in_a_batch_as_alone(exported, name):
    _, processor, out = exported(name)
    runner = OnnxModel(out)
    batch = runner(**batch_for(name, processor, 5))
    for i in range(5):
        alone = runner(**batch_for(name, processor, 1, offset=i))
        for key, value in alone.items():
            np.testing.assert_allclose(batch[key][i], value[0], atol=1e-5, rtol=0, err_msg=key)
        assert batch["logits"][i].argmax() == alone["logits"][0].argmax()


def test_int8_file_is_quantised_and_stays_close_to_fp32(exported):
    import onnx

    _, processor, out = exported("vqa")
    ops = {node.op_type for node in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops or "DynamicQuantizeMatMul" in ops
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size
    inputs = batch_for("vqa", processor, 6)
    fp32, int8 = OnnxModel(out)(**inputs), OnnxModel(out, int8=True)(**inputs)
    diff = np.abs(fp32["logits"] - int8["logits"]).max()
    assert 0 < diff < 0.1  # quantised (not the same graph), and still the same model


def test_export_directory_carries_processor_labels_and_signature(exported, capsys):
    model, _, out = exported("vqa")
    assert "wrote model.int8.onnx" in capsys.readouterr().out or (out / "model.int8.onnx").exists()
    meta = json.loads((out / "onnx_export.json").read_text())
    assert meta["architecture"] == "ViltForQuestionAnswering"
    assert meta["inputs"] == ["input_ids", "attention_mask", "token_type_ids", "pixel_values",
                              "pixel_mask"]  # fmt: skip
    assert meta["outputs"] == ["logits", "pooler_output"] and meta["int8"] == "model.int8.onnx"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["ViltForQuestionAnswering"]
    assert config["num_labels"] == model.config.num_labels
    processor = vilt.ViltProcessor.from_pretrained(out)  # tokenizer and image settings
    assert processor(text=["a red circle"])["input_ids"].shape[0] == 1
    runner = OnnxModel(out)
    with pytest.raises(ValueError, match="missing pixel_mask"):
        runner(**{k: v for k, v in batch_for("vqa", processor, 1).items() if k != "pixel_mask"})


def test_export_refuses_what_it_cannot_export(tmp_path, capsys):
    with pytest.raises(TypeError, match="vilt model"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path)
    save_vilt(tmp_path / "m", vilt.ViltForQuestionAnswering, **ONE_LAYER)
    with pytest.raises(SystemExit) as done:
        main(["export", str(tmp_path / "m"), str(tmp_path / "o"), "--format", "tflite"])
    assert done.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_missing_extra_is_one_line_naming_the_install(tmp_path, monkeypatch, capsys):
    save_vilt(tmp_path / "m", vilt.ViltForQuestionAnswering, **ONE_LAYER)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert main(["export", str(tmp_path / "m"), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'vilt[onnx]'" in err
    assert not (tmp_path / "o").exists()


def test_import_vilt_loads_no_optional_dependency():
    code = (
        "import sys, vilt, vilt.cli, vilt.interop.onnx, vilt.serving, vilt.serving.cli; "
        "print([m for m in ('onnx', 'onnxruntime', 'onnxscript', 'fastapi', 'uvicorn', "
        "'starlette', 'playwright') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
