import subprocess
import sys
import time

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
