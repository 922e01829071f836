"""argparse with a one-line error, for the ``vilt`` command and every job's flags.

argparse prints the whole usage (a screenful for the training jobs) before its message; a
wrong flag then scrolls the one line that matters off the screen. Here the error is that one
line, naming the command and pointing at ``--help``, with exit status 2 as argparse's.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["OneLineParser"]


class OneLineParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are one line on stderr (the usage is one
    ``--help`` away); sub-parsers made from it are of this class too.

    Args:
        *args: as for ``argparse.ArgumentParser``.
        **kwargs: as for ``argparse.ArgumentParser``.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
