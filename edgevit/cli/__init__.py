"""Plumbing shared by the command-line front ends: one-line errors, exit codes, signals, a progress bar.

`run` is every command's entry point. A user-facing problem is one line on stderr and exit 1 (a bad
command-line value: exit 2, as argparse's own errors), never a traceback; Ctrl-C exits 130 and
SIGTERM 143, both after `finally` blocks have run (so no temp file is left behind); output that
cannot be written (stdout closed, a full disk) is an error, not a silent success; and tinygrad's
compile cache is moved into EdgeViT's private cache directory before anything compiles
(edgevit.internals).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn, TextIO

from edgevit import internals
from edgevit.errors import EdgeViTError

EXIT_ERROR, EXIT_USAGE = 1, 2  # 2: what argparse exits with for a bad command line
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + the signal's number, as shells report it
STOP_GRACE_S = 5.0  # the longest a command stopped by SIGTERM spends unwinding before it exits anyway
BAR_WIDTH = 24
LOG_EVERY = 10  # percent of an epoch between progress lines when stderr is not a terminal
# After SIGTERM, the longest wait for the loop's next safe point. timeout(1) and systemd signal the
# whole process group, which also kills tinygrad's compile workers: a loop waiting on them would never
# get there. Under systemd's default 90 s stop timeout.
TERMINATE_GRACE_S = 60.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that cleanup runs: whatever stops on Ctrl-C stops on it too."""


class UsageError(EdgeViTError):
    """A command-line value argparse let through but the command cannot use (`--lr nan`): exit 2."""


class OutputError(EdgeViTError):
    """Standard output cannot be written: the results would be lost."""


class CheckedOutput:
    """A command's stdout: a failed write or flush raises OutputError naming the cause (a reader that
    left, BrokenPipeError, stays what it is: that is how `| head` ends a command)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def _checked(self, call: Callable, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(f"cannot write to standard output ({e.strerror or e})") from None

    def write(self, text: str) -> int:
        return self._checked(self.stream.write, text)

    def flush(self) -> None:
        self._checked(self.stream.flush)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def terminate(signum, frame) -> NoReturn:
    """SIGTERM: unwind (every `with` and `finally` runs) and exit 143; if unwinding hangs (a pool of
    tinygrad's workers, some of them killed by the same signal, can wait forever), exit anyway."""
    give_up_after(STOP_GRACE_S, EXIT_TERMINATED)
    raise Terminated


def give_up_after(seconds: float, code: int) -> None:
    """Exit with `code` in `seconds` whatever the main thread is doing, tinygrad's workers ended first."""

    def give_up() -> None:
        internals.kill_compile_workers()
        os._exit(code)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()


def resend_lost_interrupts(unraisable) -> None:
    """sys.unraisablehook: Python ignores an exception raised inside `__del__`, and tinygrad's
    `UOp.__del__` runs all the time, so a Ctrl-C (or SIGTERM, raised as Terminated) that lands in one
    would be lost and the command would run on. The signal is sent again instead."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM if issubclass(unraisable.exc_type, Terminated) else signal.SIGINT)
    else:
        sys.__unraisablehook__(unraisable)


def discard_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for a stdout that failed must not fail again
    (with a traceback) when the interpreter flushes it at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())


def run(prog: str, main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> NoReturn:
    """Call main(argv) and exit with its code; a user-facing error is one line on stderr, never a traceback."""
    if sys.stderr is None:  # started with stderr closed: errors must not land in the results on stdout
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (open for the life of the process)
    if problem := internals.version_problem():
        print(f"{prog}: warning: {problem}", file=sys.stderr)
    if sys.stdout is None:  # started with stdout closed (>&-): print() would drop every result silently
        print(f"{prog}: error: standard output is closed: the results would be lost", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    sys.stdout = CheckedOutput(sys.stdout)
    signal.signal(signal.SIGTERM, terminate)
    sys.unraisablehook = resend_lost_interrupts
    try:
        internals.ensure_private_compile_cache()
        code = main(argv)
        sys.stdout.flush()
    except OutputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        discard_stdout()
        code = EXIT_ERROR
    except EdgeViTError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        code = EXIT_USAGE if isinstance(e, UsageError) else EXIT_ERROR
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        stop_now(EXIT_TERMINATED)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        stop_now(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # the reader (e.g. `| head`) left; stop quietly rather than dump a traceback into its pipe
        discard_stdout()
        code = EXIT_ERROR
    sys.exit(code)


def stop_now(code: int) -> NoReturn:
    """Exit on a signal at once: tinygrad's compile workers are killed (never waited for: the signal
    may have killed some while they held the pool's locks), output is flushed, and nothing else
    waits. Every `with` and `finally` has already run while the exception unwound."""
    internals.kill_compile_workers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class StopFlag:
    """The first Ctrl-C or SIGTERM asks the loop to stop at the next safe point; a second one
    interrupts at once (a save in progress finishes first: edgevit.weights.save holds signals)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, grace_s: float = TERMINATE_GRACE_S):
        self.requested = False
        self.exit_code = EXIT_INTERRUPTED  # what a command stopped this way exits with
        self._grace_s = grace_s
        self._watchdog: threading.Timer | None = None
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def _handle(self, signum, frame):
        if self.requested:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.requested = True
        self.exit_code = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
        if signum == signal.SIGTERM:
            self._watchdog = threading.Timer(self._grace_s, self._give_up)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _give_up(self) -> None:
        """No safe point within the grace period: exit now (an unfinished save leaves the old file)."""
        sys.stderr.write(f"terminated: no safe point within {self._grace_s:g} s; the last saved checkpoint stands\n")
        sys.stderr.flush()
        internals.kill_compile_workers()
        os._exit(EXIT_TERMINATED)  # not sys.exit: interpreter shutdown would wait on the dead workers

    def __call__(self) -> bool:
        return self.requested

    def restore(self) -> None:
        if self._watchdog is not None:  # the loop reached its safe point
            self._watchdog.cancel()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """One redrawn line on a terminal; a line every LOG_EVERY percent when logging to a file."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr  # looked up now: run() may have replaced it
        self.tty = self.stream.isatty()
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
