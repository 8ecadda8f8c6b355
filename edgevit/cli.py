"""Plumbing shared by the command-line front ends: one-line errors, exit codes, a progress bar."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn, TextIO

from edgevit import internals
from edgevit.errors import EdgeViTError

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130
BAR_WIDTH = 24
LOG_EVERY = 10  # percent of an epoch between progress lines when stderr is not a terminal


def run(prog: str, main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> NoReturn:
    """Call main(argv) and exit with its code; a user-facing error is one line on stderr, never a traceback."""
    if problem := internals.version_problem():
        print(f"{prog}: warning: {problem}", file=sys.stderr)
    try:
        code = main(argv)
    except EdgeViTError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader (e.g. `| head`) left; stop quietly rather than dump a traceback into its pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_ERROR
    sys.exit(code)


class StopFlag:
    """First Ctrl-C asks the loop to stop at the next safe point; a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self) -> bool:
        return self.requested

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous)


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """One redrawn line on a terminal; a line every LOG_EVERY percent when logging to a file."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream, self.tty = stream, stream.isatty()
        self._last_logged = -1

    def update(self, prefix: str, done: int, total: int, fields: str) -> None:
        filled = BAR_WIDTH * done // total
        line = f"{prefix} [{'=' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {fields}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            bucket = 100 * done // total // LOG_EVERY
            if bucket == self._last_logged and done != total:
                return
            self._last_logged = bucket
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
        self._last_logged = -1
