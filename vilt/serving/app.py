"""The HTTP layer of ``vilt serve``: FastAPI routes over an :class:`Engine` and its batchers.

Interface (every error is ``{"error": "..."}`` with a 4xx status, or 5xx when the server,
not the request, failed):

- ``GET /health``: 200 ``{"status": "ok", "model": ..., "endpoints": [...], ...}`` once the
  model is loaded (it loads before the server listens).
- ``POST /v1/vqa`` (multipart: ``image`` file, ``question``, optional ``top_k``,
  ``heatmap``) -> ``{"answers": [{"answer", "score"}, ...]}`` (and ``heatmap``).
- ``POST /v1/match`` (``image``, ``text``) -> ``{"score"}``: the probability they match.
- ``POST /v1/embed`` (``image``, ``text``) -> ``{"embedding": [...]}``.
- ``POST /v1/classify`` (``image``, optional ``top_k``, ``heatmap``) -> ``{"labels": [...]}``.
- ``GET /`` the demo page; ``GET /docs`` the OpenAPI page (``/openapi.json``).

An endpoint the loaded model cannot serve answers 404, naming what it does serve.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from .. import __version__
from .batching import MicroBatcher
from .engine import ENDPOINTS, Engine, Limits, RequestError

try:
    from fastapi import FastAPI, File, Form, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
except ImportError as err:  # the serve extra is missing
    raise ImportError(f"vilt serve needs {err.name}: pip install 'vilt[serve]'") from None

__all__ = ["create_app", "serve"]

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("vilt.serving")


# the form fields (module level: FastAPI resolves the annotations from here)
ImageFile = Annotated[UploadFile, File(description="an image file (PNG, JPEG, ...)")]
TopK = Annotated[int, Form(description="how many to return (1 to 100)")]
WithHeatmap = Annotated[bool, Form(description="also return the attention heatmap")]


class Answer(BaseModel):
    answer: str
    score: float


class Label(BaseModel):
    label: str
    score: float


class Heatmap(BaseModel):
    grid: list[list[float]]  # rollout weight of each image patch, rows x columns, max 1
    png: str  # data URL: the heatmap over the image


class VqaResponse(BaseModel):
    answers: list[Answer]
    heatmap: Heatmap | None = None


class MatchResponse(BaseModel):
    score: float  # probability that the text matches the image (sigmoid of the ITM log-odds)


class EmbedResponse(BaseModel):
    embedding: list[float]


class ClassifyResponse(BaseModel):
    labels: list[Label]
    heatmap: Heatmap | None = None


class ErrorResponse(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": what}
    for code, what in (
        (404, "the loaded model does not serve this endpoint"),
        (413, "the upload or the image is larger than the server's limits"),
        (422, "a missing or invalid field, an unreadable image, a too long text"),
        (503, "busy: the queue is full or the request timed out"),
    )
}


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413: at once when Content-Length says
    so, else as soon as the streamed body passes the limit."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> HTTPException:
        mb = self.max_bytes / 2**20
        return HTTPException(413, f"the request body is larger than the server's {mb:g} MB")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"error": self._error().detail}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self._error()  # FastAPI passes an HTTPException from the body through
            return message

        await self.app(scope, limited, send)


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


def create_app(
    model: str | os.PathLike | Engine,
    *,
    max_batch: int = 8,
    max_wait_ms: float = 5.0,
    limits: Limits | None = None,
    device: str | None = None,
) -> FastAPI:
    """The application serving ``model``.

    Args:
        model: a checkpoint directory (with its processor) or a ready :class:`Engine`.
        max_batch: the most requests in one forward pass (1: no batching).
        max_wait_ms: how long a request waits for others to share its batch.
        limits: per-request limits (upload, pixels, text, timeout, queue).
        device: where the model runs (default: CUDA when there is one).
    """
    if isinstance(model, Engine):
        engine = model
    else:
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        engine = Engine.from_pretrained(model, limits=limits or Limits(), device=device)
    limits = engine.limits
    keys = [(t, False) for t in engine.tasks]
    keys += [(t, True) for t in engine.tasks if t in ("vqa", "classify")]  # with attentions
    batchers = {
        (task, heat): MicroBatcher(
            lambda batch, task=task: engine.run(task, batch),
            max_batch=max_batch,
            max_wait=max_wait_ms / 1000,
            max_queue=limits.max_queue,
            name=f"{task}{' with heatmaps' if heat else ''}",
        )
        for task, heat in keys
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # one model thread for every batcher, made anew each time the app starts
        executor = ThreadPoolExecutor(1, thread_name_prefix="vilt-model")
        for batcher in batchers.values():
            batcher.start(executor)
        yield
        for batcher in batchers.values():  # requests already queued still get their answer
            await batcher.close()
        executor.shutdown(wait=True)

    app = FastAPI(
        title="vilt serve",
        version=__version__,
        description=f"{type(engine.model).__name__}: " + ", ".join(engine.describe()["endpoints"]),
        lifespan=lifespan,
    )
    app.state.engine, app.state.batchers = engine, batchers
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)

    @app.exception_handler(RequestError)
    async def request_error(request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(err)}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request, err: Exception) -> JSONResponse:
        log.exception("request to %s failed", request.url.path)
        return JSONResponse(
            {"error": f"internal error: {type(err).__name__}: {err}"}, status_code=500
        )

    async def answer(task: str, image: UploadFile, text: str | None, **options: Any) -> Any:
        engine.require(task)
        data = await image.read()
        prepared = await run_in_threadpool(engine.prepare, data, text, **options)
        batcher = batchers[(task, bool(options.get("heatmap")))]
        try:
            return await batcher.submit(prepared, limits.request_timeout)
        except RequestError:
            raise
        except Exception as err:  # the model failed on this request alone: say so, go on
            log.exception("%s failed", ENDPOINTS[task])
            raise RequestError(500, f"internal error: {type(err).__name__}: {err}") from None

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """200 once the model is loaded: the model, its endpoints, batching and limits."""
        return {
            "status": "ok",
            **engine.describe(),
            "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms},
            "limits": dataclasses.asdict(limits),
            "batches": {b.name: b.stats() for b in batchers.values()},  # size -> count
            "in_flight": sum(b.in_flight for b in batchers.values()),
        }

    @app.post("/v1/vqa", response_model=VqaResponse, response_model_exclude_none=True,
              responses=ERRORS)  # fmt: skip
    async def vqa(
        image: ImageFile,
        question: Annotated[str, Form(description="a question about the image")],
        top_k: TopK = 5,
        heatmap: WithHeatmap = False,
    ) -> Any:
        """The top answers to a question about an image, with their scores (sigmoid)."""
        return await answer(
            "vqa", image, question, text_name="question", top_k=top_k, heatmap=heatmap
        )

    @app.post("/v1/match", response_model=MatchResponse, responses=ERRORS)
    async def match(image: ImageFile, text: Annotated[str, Form()]) -> Any:
        """How well a text matches an image: the ITM head's probability of a match."""
        return await answer("match", image, text)

    @app.post("/v1/embed", response_model=EmbedResponse, responses=ERRORS)
    async def embed(image: ImageFile, text: Annotated[str, Form()]) -> Any:
        """The pooled joint representation of an image-text pair (as vilt.embed)."""
        return await answer("embed", image, text)

    @app.post("/v1/classify", response_model=ClassifyResponse, response_model_exclude_none=True,
              responses=ERRORS)  # fmt: skip
    async def classify(image: ImageFile, top_k: TopK = 5, heatmap: WithHeatmap = False) -> Any:
        """The top classes of an image (ViT classifier), with their probabilities."""
        return await answer("classify", image, None, top_k=top_k, heatmap=heatmap)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def serve(
    model: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve ``model`` with uvicorn until SIGTERM or Ctrl-C, which stop new connections and
    let requests in flight finish (up to the request timeout) before the process exits.

    Args:
        model: a checkpoint directory (with its processor).
        host: the interface to listen on (127.0.0.1: this machine only).
        port: the TCP port.
        log_level: uvicorn's log level.
        **options: for :func:`create_app` (max_batch, max_wait_ms, limits, device).
    """
    try:
        import uvicorn
    except ImportError:
        raise ImportError("vilt serve needs uvicorn: pip install 'vilt[serve]'") from None
    app = create_app(model, **options)
    engine: Engine = app.state.engine
    print(
        f"vilt serve: {type(engine.model).__name__} from {model} on {engine.device}; "
        f"{', '.join(engine.describe()['endpoints'])}; demo page at http://{host}:{port}/",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(engine.limits.request_timeout) + 5,
    )
    uvicorn.Server(config).run()
