"""The HTTP interface of `vilt serve` (vilt.serving.app) through FastAPI's TestClient and
httpx: what each endpoint returns (the library's own answers, scores and embeddings), that
concurrent requests are batched and answer as they would alone, and that every bad request
gets a 4xx JSON error saying what was wrong while the server goes on serving."""

import asyncio
import io
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("httpx", reason="httpx (dev) is not installed")

import httpx
from fastapi.testclient import TestClient
from tiny_checkpoints import TEXTS, images, save_vilt, save_vit

import vilt
from vilt.cli import main
from vilt.serving import create_app
from vilt.serving.engine import Limits

ANSWERS = {0: "red", 1: "blue", 2: "circle", 3: "yes", 4: "no"}
QUESTIONS = ["what color is it", "is there a circle", "what shape", "how many", "red?", "which"]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {
        "vqa": save_vilt(root / "vqa", vilt.ViltForQuestionAnswering, id2label=ANSWERS),
        "itm": save_vilt(root / "itm", vilt.ViltForImageTextMatching),
        "vit": save_vit(root / "vit", id2label={0: "cat", 1: "dog", 2: "car", 3: "tree"}),
    }


@contextmanager
def client(model_dir, **options):
    with TestClient(create_app(model_dir, **options)) as c:
        yield c


def ask(c, i: int, question: str | None = None, **fields):
    data = {"question": question or QUESTIONS[i % len(QUESTIONS)], **fields}
    return c.post("/v1/vqa", files={"image": ("x.png", png(images(6)[i]))}, data=data)


def test_health_openapi_and_pages(models):
    with client(models["vqa"]) as c:
        health = c.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok" and body["model"] == "ViltForQuestionAnswering"
        assert body["endpoints"] == ["/v1/vqa", "/v1/embed"]
        assert body["limits"]["max_upload_bytes"] == 10 * 2**20 and body["in_flight"] == 0
        schema = c.get("/openapi.json").json()
        assert {"/v1/vqa", "/v1/match", "/v1/embed", "/v1/classify"} <= set(schema["paths"])
        form = schema["paths"]["/v1/vqa"]["post"]["requestBody"]["content"]
        assert "multipart/form-data" in form
        assert c.get("/docs").status_code == 200
        page = c.get("/")
        assert page.status_code == 200 and 'id="answers"' in page.text
        assert c.get("/static/app.js").status_code == 200
        assert c.get("/static/style.css").status_code == 200


def test_vqa_answers_are_what_answer_question_gives(models):
    with client(models["vqa"]) as c:
        for i in range(3):
            got = ask(c, i, top_k=3)
            assert got.status_code == 200, got.text
            expected = vilt.answer_question(models["vqa"], images(6)[i], QUESTIONS[i], top_k=3)
            answers = got.json()["answers"]
            assert [a["answer"] for a in answers] == [name for name, _ in expected]
            np.testing.assert_allclose([a["score"] for a in answers], [p for _, p in expected],
                                       atol=1e-5)  # fmt: skip


async def concurrently(app, requests: list[dict]) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(c.post(**r) for r in requests))


def test_concurrent_requests_are_batched_and_each_answers_as_alone(models):
    app = create_app(models["vqa"], max_batch=8, max_wait_ms=300)
    requests = [
        {"url": "/v1/vqa", "files": {"image": ("x.png", png(im))},
         "data": {"question": q, "top_k": "5"}}
        for im, q in zip(images(6), QUESTIONS, strict=True)
    ]  # fmt: skip
    responses = asyncio.run(concurrently(app, requests))
    sizes = app.state.batchers[("vqa", False)].batch_sizes
    assert sum(sizes.values()) < 6 and max(sizes) > 1  # batched: fewer forwards than requests
    for i, response in enumerate(responses):
        alone = vilt.answer_question(models["vqa"], images(6)[i], QUESTIONS[i], top_k=5)
        answers = response.json()["answers"]
        assert [a["answer"] for a in answers] == [name for name, _ in alone]
        np.testing.assert_allclose([a["score"] for a in answers], [p for _, p in alone],
                                   atol=1e-5)  # fmt: skip


def test_match_and_embed_equal_the_library_batched_or_not(models):
    embedder = vilt.Embedder.from_pretrained(models["itm"], device="cpu")
    pics, texts = images(4), [TEXTS[i] for i in (0, 2, 3, 4)]  # within 16 tokens
    expected_match = embedder.match(pics, texts)
    expected_embed = embedder(pics, texts)
    app = create_app(models["itm"], max_batch=4, max_wait_ms=300)
    requests = [
        {"url": f"/v1/{kind}", "files": {"image": ("x.png", png(im))}, "data": {"text": t}}
        for kind in ("match", "embed")
        for im, t in zip(pics, texts, strict=True)
    ]
    responses = asyncio.run(concurrently(app, requests))
    assert all(r.status_code == 200 for r in responses)
    scores = [r.json()["score"] for r in responses[:4]]
    vectors = [r.json()["embedding"] for r in responses[4:]]
    np.testing.assert_allclose(scores, expected_match.numpy(), atol=1e-5)
    np.testing.assert_allclose(vectors, expected_embed.numpy(), atol=1e-5)
    with client(models["itm"]) as c:
        missing = ask(c, 0)
        assert missing.status_code == 404
        assert missing.json()["error"].endswith("it serves /v1/match, /v1/embed")


def test_classify_gives_the_vit_classifier_probabilities_and_a_heatmap(models):
    model = vilt.load_model(models["vit"]).eval()
    processor = vilt.ViTImageProcessor.from_pretrained(models["vit"])
    with client(models["vit"]) as c:
        got = c.post("/v1/classify", files={"image": ("x.png", png(images(2)[1]))},
                     data={"top_k": "2", "heatmap": "true"})  # fmt: skip
        assert got.status_code == 200, got.text
        with torch.no_grad():
            probs = model(**processor([images(2)[1]])).logits.softmax(-1)[0]
        values, ids = probs.topk(2)
        labels = got.json()["labels"]
        assert [x["label"] for x in labels] == [model.config.id2label[int(i)] for i in ids]
        np.testing.assert_allclose([x["score"] for x in labels], values.numpy(), atol=1e-5)
        assert np.array(got.json()["heatmap"]["grid"]).shape == (4, 4)  # 32 px / 8 px patches
        assert ask(c, 0).status_code == 404


def test_vqa_heatmap_is_the_rollout_over_the_image_and_leaves_answers_unchanged(models):
    processor = vilt.ViltProcessor.from_pretrained(models["vqa"])
    model = vilt.load_model(models["vqa"]).eval()
    picture = images(6)[1]  # 40 x 64: a wide image, no padding alone
    with client(models["vqa"]) as c:
        plain = ask(c, 1).json()
        with_map = ask(c, 1, heatmap="true").json()
    for a, b in zip(plain["answers"], with_map["answers"], strict=True):
        assert a["answer"] == b["answer"] and abs(a["score"] - b["score"]) < 1e-5
    inputs = processor(images=[picture], text=[QUESTIONS[1]])
    with torch.no_grad():
        out = model.vilt(**inputs, output_attentions=True)
    expected = vilt.viz.patch_heatmaps(out, query=0)[0]
    np.testing.assert_allclose(with_map["heatmap"]["grid"], expected.numpy(), atol=1e-3)
    header = with_map["heatmap"]["png"]
    assert header.startswith("data:image/png;base64,")


def noise_png(side: int) -> bytes:
    return png(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))


BAD_REQUESTS = {
    "no image": ({"question": "what"}, {}, 422, "image"),
    "no question": ({}, {"image": ("x.png", noise_png(32))}, 422, "question"),
    "not an image": ({"question": "what"}, {"image": ("x.png", b"hello")}, 422, "not an image"),
    "empty file": ({"question": "what"}, {"image": ("x.png", b"")}, 422, "empty"),
    "blank question": ({"question": "  "}, {"image": ("x.png", noise_png(32))}, 422, "question"),
    "top_k 0": ({"question": "what", "top_k": "0"}, {"image": ("x.png", noise_png(32))}, 422,
                "top_k: must be between 1 and 100"),
    "top_k text": ({"question": "what", "top_k": "many"}, {"image": ("x.png", noise_png(32))},
                   422, "top_k"),
    "long question": ({"question": "what " * 20}, {"image": ("x.png", noise_png(32))}, 422,
                      "tokens (with [CLS] and [SEP]) is more than the model's 16"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_json_error_saying_what_was_wrong(models, case):
    data, files, status, words = BAD_REQUESTS[case]
    with client(models["vqa"]) as c:
        got = c.post("/v1/vqa", data=data, files=files)
        assert got.status_code == status, got.text
        assert set(got.json()) == {"error"} and words in got.json()["error"]
        assert ask(c, 0).status_code == 200  # and the next request is served


def test_wrong_paths_and_methods_get_json_errors(models):
    with client(models["vqa"]) as c:
        assert c.get("/v2/nothing").status_code == 404
        assert c.get("/v2/nothing").json() == {"error": "Not Found"}
        assert c.get("/v1/vqa").status_code == 405 and "error" in c.get("/v1/vqa").json()


def test_upload_size_and_image_pixel_limits(models):
    limits = Limits(max_upload_bytes=8192, max_image_pixels=5000, max_question_chars=10)
    with client(models["vqa"], limits=limits) as c:
        flat = png(np.zeros((100, 100, 3), dtype=np.uint8))  # a small file, 10000 pixels
        got = c.post("/v1/vqa", data={"question": "what"}, files={"image": ("x.png", flat)})
        assert got.status_code == 413
        assert "100x100 = 10000 pixels is more than the server's limit of 5000" in got.text
        big = noise_png(64)  # 12 KB of noise
        got = c.post("/v1/vqa", data={"question": "what"}, files={"image": ("x.png", big)})
        assert got.status_code == 413 and "larger than the server's 0.0078125 MB" in got.text
        chunks = iter([b"--x\r\n" + b"0" * 5000, b"0" * 5000])  # no Content-Length: streamed
        got = c.post("/v1/vqa", content=chunks,
                     headers={"content-type": "multipart/form-data; boundary=x"})  # fmt: skip
        assert got.status_code == 413 and got.json()["error"].startswith("the request body")
        got = c.post("/v1/vqa", data={"question": "what is it?"},
                     files={"image": ("x.png", noise_png(16))})  # fmt: skip
        assert got.status_code == 422 and "11 characters" in got.json()["error"]
        assert c.get("/health").status_code == 200


def bomb_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in its header and holds none."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


BOMBS = {  # (side, --max-image-pixels, the message): ours decides, or past PIL's, PIL's
    "over ours": (6000, 25_000_000, "6000x6000 = 36000000 pixels is more than the server's limit"),
    "over PIL's": (20000, 10**10, "400000000 pixels) exceeds limit of 178956970 pixels"),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_a_decompression_bomb_is_refused_from_its_header(models, case):
    side, limit, words = BOMBS[case]
    with client(models["vqa"], limits=Limits(max_image_pixels=limit)) as c:
        got = c.post("/v1/vqa", data={"question": "what"},
                     files={"image": ("bomb.png", bomb_header(side, side))})  # fmt: skip
        assert got.status_code == 413, got.text
        assert words in got.json()["error"]
        assert ask(c, 0).status_code == 200


def test_a_failing_request_fails_alone_and_the_server_goes_on(models, monkeypatch):
    app = create_app(models["vqa"], max_batch=8, max_wait_ms=300)
    engine = app.state.engine
    run = engine.run

    def fragile(task, batch):
        if any(r.text == "boom" for r in batch):
            raise RuntimeError("the model fell over")
        return run(task, batch)

    monkeypatch.setattr(engine, "run", fragile)
    requests = [
        {"url": "/v1/vqa", "files": {"image": ("x.png", png(im))}, "data": {"question": q}}
        for im, q in zip(images(3), ["what color", "boom", "what shape"], strict=True)
    ]
    ok1, boom, ok2 = asyncio.run(concurrently(app, requests))
    assert ok1.status_code == ok2.status_code == 200
    assert boom.status_code == 500
    assert boom.json() == {"error": "internal error: RuntimeError: the model fell over"}
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200 and ask(c, 0).status_code == 200


def test_a_request_over_the_timeout_gets_503(models, monkeypatch):
    import time

    app = create_app(models["vqa"], limits=Limits(request_timeout=0.2))
    run = app.state.engine.run
    monkeypatch.setattr(app.state.engine, "run", lambda t, b: time.sleep(0.6) or run(t, b))
    with TestClient(app) as c:
        got = ask(c, 0)
    assert got.status_code == 503 and "request timeout of 0.2 s" in got.json()["error"]


def test_the_demo_page_ships_as_package_data():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11 reads pyproject.toml")
    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["vilt.serving"]
    static = root / "vilt" / "serving"
    shipped = {p for pattern in patterns for p in static.glob(pattern)}
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in shipped}


def test_serve_command_errors_are_one_line(models, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as done:
        main(["serve", str(models["vqa"]), "--max-batch", "0"])
    assert done.value.code == 2 and "--max-batch: must be > 0" in capsys.readouterr().err
    vit_backbone = tmp_path / "vit-backbone"
    vilt.ViTModel(vilt.ViTConfig.from_preset("vit-test")).save_pretrained(vit_backbone)
    assert main(["serve", str(vit_backbone)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ViTModel has nothing to serve" in err
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the serve extra were missing
    monkeypatch.delitem(sys.modules, "vilt.serving.app", raising=False)
    assert main(["serve", str(models["vqa"])]) == 1
    assert "vilt serve needs fastapi: pip install 'vilt[serve]'" in capsys.readouterr().err
