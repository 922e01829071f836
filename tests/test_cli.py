"""The ``vilt`` command: convert, predict, embed and attention on tiny checkpoints; --help with
examples for each; errors as one line on stderr with a non-zero exit, tracebacks only with
--debug."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tiny_checkpoints import TEXTS, image_files, save_vilt, save_vit

import vilt
from vilt.cli import main

LABELS = {0: "red", 1: "blue", 2: "circle"}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {
        "vqa": save_vilt(root / "vqa", vilt.ViltForQuestionAnswering, id2label=LABELS),
        "itm": save_vilt(root / "itm"),
        "vit": save_vit(root / "vit", num_labels=3),
        "images": image_files(root / "images"),
    }


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("command", ["convert", "predict", "embed", "attention"])
def test_every_command_has_help_with_examples(capsys, command):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"vilt {command} " in out


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        main(["predict", "model/"])
    assert done.value.code == 2
    assert_one_line_error(2, capsys.readouterr().err, "required: --image, --question", "--help")


def test_an_error_from_a_dataloader_worker_is_its_own_one_line(capsys):
    from torch._utils import ExceptionWrapper

    from vilt.cli import _guard
    from vilt.data import ImageError

    def worker_fails():
        try:  # what a DataLoader worker does with an error, and the main process with that
            raise ImageError(
                "bad.png (pairs.jsonl line 8): not an image file", reason="corrupt_image"
            )
        except ImageError:
            ExceptionWrapper(where="in DataLoader worker process 0").reraise()

    assert _guard(worker_fails, debug=False) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "vilt: error: bad.png (pairs.jsonl line 8): not an image file (--debug shows the traceback)"
    ]


def test_predict_prints_the_top_answers(capsys, ckpts):
    image = ckpts["images"][0]
    code, out, _ = run(capsys, "predict", ckpts["vqa"], "--image", image, "--question", "what?")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and {line.split()[-1] for line in lines} == set(LABELS.values())
    answers = vilt.answer_question(ckpts["vqa"], image, "what?")
    assert [line.split()[-1] for line in lines] == [a for a, _ in answers]
    assert lines[0].split()[0] == f"{answers[0][1]:.1%}"
    code, out, _ = run(
        capsys, "predict", ckpts["vqa"], "--image", image, "--question", "what?", "--top-k", 1
    )
    assert code == 0 and len(out.strip().splitlines()) == 1


def test_predict_with_test_time_views_averages_the_logits_of_each_view(capsys, ckpts):
    """--tta-flip / --tta-shift answer from the logits averaged over the image, its mirror
    image and the image moved each way, as the VQA recipe scores easy-VQA."""
    from vilt.data.images import load_image
    from vilt.processing.views import mirror, shift_image

    image, path = ckpts["images"][0], ckpts["vqa"]
    model = vilt.ViltForQuestionAnswering.from_pretrained(path).eval()
    inputs = vilt.ViltProcessor.from_pretrained(path)(
        images=[load_image(image)], text=["what?"], return_tensors="pt"
    )
    views = [lambda x: x, mirror] + [
        lambda x, d=d: shift_image(x, *d) for d in ((-2, 0), (2, 0), (0, -2), (0, 2))
    ]
    with torch.no_grad():
        logits = torch.stack(
            [
                model(**{**inputs, "pixel_values": v(inputs["pixel_values"]),
                         "pixel_mask": v(inputs["pixel_mask"])}).logits[0]
                for v in views
            ]
        ).mean(0)  # fmt: skip
    probs = torch.sigmoid(logits)
    answers = vilt.answer_question(path, image, "what?", top_k=3, tta_flip=True, tta_shift=2)
    assert [p for _, p in answers] == pytest.approx(probs.sort(descending=True).values.tolist())
    assert [a for a, _ in answers] == [LABELS[int(i)] for i in probs.argsort(descending=True)]
    plain = vilt.answer_question(path, image, "what?", top_k=3)
    assert [p for _, p in plain] != pytest.approx([p for _, p in answers])  # the views count
    code, out, _ = run(
        capsys, "predict", path, "--image", image, "--question", "what?",
        "--tta-flip", "--tta-shift", 2,
    )  # fmt: skip
    assert code == 0
    assert [line.split()[-1] for line in out.strip().splitlines()] == [a for a, _ in answers]
    code, _, err = run(capsys, "predict", path, "--image", image, "--question", "what?",
                       "--tta-shift", -1)  # fmt: skip
    assert_one_line_error(code, err, "shift must be >= 0")


def test_predict_errors(capsys, ckpts, tmp_path):
    image = ckpts["images"][0]
    code, _, err = run(capsys, "predict", ckpts["vit"], "--image", image, "--question", "q")
    assert_one_line_error(code, err, "needs a VQA checkpoint", "ViTForImageClassification")
    code, _, err = run(capsys, "predict", ckpts["itm"], "--image", image, "--question", "q")
    assert_one_line_error(code, err, "needs a VQA checkpoint", "ViltForImageTextMatching")
    missing = tmp_path / "missing.png"
    code, _, err = run(capsys, "predict", ckpts["vqa"], "--image", missing, "--question", "q")
    assert_one_line_error(code, err, "missing.png", "not found")
    code, _, err = run(capsys, "predict", tmp_path / "nomodel", "--image", image, "--question", "q")
    assert_one_line_error(code, err, "nomodel")


def vit_question(ckpts):
    """A VQA question put to a ViT classifier: the wrong model type."""
    return ["predict", str(ckpts["vit"]), "--image", str(ckpts["images"][0]), "--question", "q"]


def test_debug_shows_the_traceback(ckpts):
    with pytest.raises(TypeError, match="needs a VQA checkpoint"):
        main(["--debug", *vit_question(ckpts)])


def test_embed_pairs_files_to_safetensors_and_npy(capsys, ckpts, tmp_path, monkeypatch):
    images = ckpts["images"]
    expected = vilt.embed(images, TEXTS, ckpts["itm"])
    # JSONL with image paths relative to the file's own directory, run from elsewhere
    pairs = images[0].parent / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"image": p.name, "text": t}) + "\n"
            for p, t in zip(images, TEXTS, strict=True)
        )
    )
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(
        capsys, "embed", ckpts["itm"], "--pairs", pairs, "--out", "e.safetensors", "--batch-size", 4
    )
    assert code == 0 and "(6, 32)" in out
    torch.testing.assert_close(
        load_file("e.safetensors")["embeddings"], expected, rtol=0, atol=1e-5
    )
    # CSV as spreadsheets save it (a byte-order mark; a text with a comma, quoted) -> .npy
    with open(images[0].parent / "pairs.csv", "w", newline="", encoding="utf-8-sig") as fh:
        fh.write(
            "image,text\n"
            + "".join(f'{p.name},"{t}, yes"\n' for p, t in zip(images, TEXTS, strict=True))
        )
    code, _, _ = run(
        capsys,
        "embed",
        ckpts["itm"],
        "--pairs",
        images[0].parent / "pairs.csv",
        "--out",
        "sub/e.npy",
    )
    assert code == 0
    with_comma = vilt.embed(images, [f"{t}, yes" for t in TEXTS], ckpts["itm"])
    np.testing.assert_allclose(np.load("sub/e.npy"), with_comma.numpy(), atol=1e-5, rtol=0)
    # two line files: absolute image paths, one text per line (an empty text is a text)
    (tmp_path / "images.txt").write_text("".join(f"{p}\n" for p in images[:3]))
    (tmp_path / "texts.txt").write_text("a red circle\n\ngreen\n")
    code, _, _ = run(
        capsys,
        "embed",
        ckpts["itm"],
        "--images",
        "images.txt",
        "--texts",
        "texts.txt",
        "--out",
        "l.npy",
    )
    assert code == 0
    expected = vilt.embed(images[:3], ["a red circle", "", "green"], ckpts["itm"])
    np.testing.assert_allclose(np.load("l.npy"), expected.numpy(), atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "e.safetensors",
        "images.txt",
        "l.npy",
        "sub",
        "texts.txt",
    ]


def test_embed_errors(capsys, ckpts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "pairs.jsonl"
    good.write_text(json.dumps({"image": str(ckpts["images"][0]), "text": "red"}) + "\n")
    code, _, err = run(capsys, "embed", ckpts["itm"], "--pairs", good, "--out", "e.txt")
    assert_one_line_error(code, err, "--out must end in .safetensors or .npy", "e.txt")
    assert not (tmp_path / "e.txt").exists()
    cases = {
        "missing.jsonl": (None, "missing.jsonl"),
        "bad.jsonl": (
            '{"image": "a.png", "text": "x"}\n{not json\n',
            "bad.jsonl, line 2: not valid JSON",
        ),
        "field.jsonl": (
            '{"image": "a.png"}\n',
            "field.jsonl, line 1: needs an 'image' path and a 'text'",
        ),
        "gone.jsonl": ('{"image": "gone.png", "text": "x"}\n', "gone.png: image file not found"),
        "empty.jsonl": ("\n", "no image-text pairs"),
        "pairs.tsv": ("image\ttext\n", "must be a .jsonl or .csv file"),
    }
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_text(content)
        code, _, err = run(capsys, "embed", ckpts["itm"], "--pairs", name, "--out", "e.npy")
        assert_one_line_error(code, err, message)
    (tmp_path / "i.txt").write_text(f"{ckpts['images'][0]}\n{ckpts['images'][1]}\n")
    (tmp_path / "t.txt").write_text("one\n")
    code, _, err = run(
        capsys, "embed", ckpts["itm"], "--images", "i.txt", "--texts", "t.txt", "--out", "e.npy"
    )
    assert_one_line_error(code, err, "i.txt has 2 lines but t.txt has 1")
    code, _, err = run(capsys, "embed", ckpts["itm"], "--images", "i.txt", "--out", "e.npy")
    assert_one_line_error(code, err, "embeds image-text pairs: give --pairs FILE, or --texts")
    code, _, err = run(capsys, "embed", ckpts["itm"], "--out", "e.npy")
    assert_one_line_error(code, err, "give --pairs FILE, or --images FILE and --texts FILE")
    code, _, err = run(capsys, "embed", ckpts["vit"], "--pairs", good, "--out", "e.npy")
    assert_one_line_error(code, err, "embeds images alone: give --images FILE and no texts")
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob(".*tmp*"))
    code, out, _ = run(capsys, "embed", ckpts["vit"], "--images", "i.txt", "--out", "vit.npy")
    assert "wrote (2, 32) embeddings" in out
    assert code == 0 and np.load(tmp_path / "vit.npy").shape == (2, 32)


def test_convert_round_trip_through_transformers(capsys, ckpts, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf, back = tmp_path / "hf", tmp_path / "back"
    code, out, _ = run(capsys, "convert", ckpts["vqa"], hf)  # a vilt source: to transformers
    assert code == 0 and "wrote transformers checkpoint" in out
    theirs = transformers.ViltForQuestionAnswering.from_pretrained(hf).eval()
    ours = vilt.ViltForQuestionAnswering.from_pretrained(ckpts["vqa"]).eval()
    processor = vilt.ViltProcessor.from_pretrained(hf)  # the processor travelled along
    batch = processor(images=[Image.open(p) for p in ckpts["images"][:2]], text=TEXTS[:2])
    with torch.no_grad():
        torch.testing.assert_close(theirs(**batch).logits, ours(**batch).logits, rtol=0, atol=1e-5)
    code, out, _ = run(capsys, "convert", hf, back)  # a transformers source: to vilt
    assert code == 0 and "wrote vilt checkpoint" in out
    reloaded = vilt.load_model(back)
    assert all(
        torch.equal(a, b)
        for a, b in zip(reloaded.state_dict().values(), ours.state_dict().values(), strict=True)
    )
    code, out, _ = run(capsys, "predict", hf, "--image", ckpts["images"][0], "--question", "what?")
    assert code == 0 and len(out.splitlines()) == 3
    code, _, err = run(capsys, "convert", tmp_path / "nothing", tmp_path / "x")
    assert_one_line_error(code, err, "nothing")


def test_attention_writes_pngs_for_vilt_and_vit(capsys, ckpts, tmp_path):
    image = ckpts["images"][1]
    vilt_png, tokens_png, vit_png = tmp_path / "a.png", tmp_path / "t.png", tmp_path / "v.png"
    args = ["attention", ckpts["vqa"], "--image", image, "--text", "what color is it"]
    assert run(capsys, *args, "--out", vilt_png)[0] == 0
    assert run(capsys, *args, "--token", 2, "--out", tmp_path / "a2.png")[0] == 0
    assert run(capsys, *args, "--per-token", "--out", tokens_png)[0] == 0
    assert run(capsys, "attention", ckpts["vit"], "--image", image, "--out", vit_png)[0] == 0
    for path in (vilt_png, tokens_png, vit_png):
        assert Image.open(path).format == "PNG"
    # one panel per token but [SEP]: [CLS] what color is it -> 5 or more panels, two rows
    assert Image.open(tokens_png).size[1] > 1.8 * Image.open(vilt_png).size[1]
    assert not np.array_equal(
        np.asarray(Image.open(vilt_png)), np.asarray(Image.open(tmp_path / "a2.png"))
    )


def test_attention_errors(capsys, ckpts, tmp_path):
    image = ckpts["images"][1]
    out = tmp_path / "a.png"
    code, _, err = run(capsys, "attention", ckpts["vqa"], "--image", image, "--out", out)
    assert_one_line_error(code, err, "pass the text")
    code, _, err = run(
        capsys,
        "attention",
        ckpts["vqa"],
        "--image",
        image,
        "--text",
        "red",
        "--token",
        9,
        "--out",
        out,
    )
    assert_one_line_error(code, err, "token 9 is outside the text's", "tokens: [CLS] ")
    code, _, err = run(
        capsys, "attention", ckpts["vit"], "--image", image, "--text", "red", "--out", out
    )
    assert_one_line_error(code, err, "image-only")
    code, _, err = run(
        capsys, "attention", ckpts["vit"], "--image", image, "--out", tmp_path / "a.jpg"
    )
    assert_one_line_error(code, err, "does not end in .png")
    code, _, err = run(
        capsys, "attention", ckpts["vit"], "--image", tmp_path / "no.png", "--out", out
    )
    assert_one_line_error(code, err, "no.png", "not found")
    assert not out.exists()


def test_the_installed_command_exits_non_zero_without_a_traceback(ckpts):
    done = subprocess.run(
        [sys.executable, "-m", "vilt.cli", *vit_question(ckpts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("vilt: error: ") and len(done.stderr.strip().splitlines()) == 1
