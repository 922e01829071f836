"""Stop requests from SIGTERM and Ctrl-C, honoured at the next step boundary.

A cluster scheduler sends SIGTERM before it kills a job; the trainer then finishes the step
in flight, saves a checkpoint and exits with status 143 (128 + SIGTERM), so the job shows
as terminated and ``resume=True`` continues it. The first Ctrl-C (SIGINT) does the same and
ends in ``KeyboardInterrupt``; a second one interrupts at once, as Python normally does.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

__all__ = ["StopRequests"]


class StopRequests:
    """Context manager that turns SIGTERM and SIGINT into a flag (``requested``: the signal
    number, or None) and restores the previous handlers on exit. Outside the main thread
    signals cannot be caught; it then does nothing."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.requested == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.requested = signum

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop as a signal would (for callers and tests)."""
        self.requested = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
