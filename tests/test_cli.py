import signal
import subprocess
import sys
import time

from edgevit import cli

# a loop that never reaches its safe point, as when SIGTERM to the process group killed the compile workers
STUCK = """
import os, signal, time
from edgevit.cli import StopFlag
stop = StopFlag(grace_s=0.5)
os.kill(os.getpid(), signal.SIGTERM)
while True:
    time.sleep(0.05)
"""


def test_sigterm_without_a_safe_point_exits_143_after_the_grace_period():
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143 and time.monotonic() - start < 30
    assert "no safe point within" in done.stderr and done.stderr.count("\n") == 1


def test_an_interrupt_that_lands_in_a_destructor_is_sent_again(monkeypatch):
    class Destructor:
        def __init__(self, exc: type[BaseException]):
            self.exc = exc

        def __del__(self):  # Python reports what this raises to sys.unraisablehook and goes on
            raise self.exc

    got = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: got.append(signum)) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    monkeypatch.setattr(sys, "unraisablehook", cli.resend_lost_interrupts)
    try:
        Destructor(KeyboardInterrupt)
        Destructor(cli.Terminated)
        sum(range(1000))  # Python runs signal handlers between bytecodes
        assert got == [signal.SIGINT, signal.SIGTERM]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
