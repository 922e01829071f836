"""``vilt serve``: a model behind an HTTP JSON API, with micro-batching and a demo page.

FastAPI and uvicorn (the ``serve`` extra, ``pip install 'vilt[serve]'``) are imported when a
server is made, not with this package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """The FastAPI application for a model; see :func:`vilt.serving.app.create_app`."""
    from .app import create_app as make

    return make(*args, **kwargs)


def serve(*args: Any, **kwargs: Any) -> None:
    """Run the server (uvicorn) until SIGTERM or Ctrl-C; see :func:`vilt.serving.app.serve`."""
    from .app import serve as run

    run(*args, **kwargs)
