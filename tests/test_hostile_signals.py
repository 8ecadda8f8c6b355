"""Stopping: SIGTERM to a command's whole process group (what timeout, systemd and docker stop send)
at any moment ends it within seconds, with 143, no traceback and no process left behind, even while
tinygrad's compile and kernel-search workers run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from conftest import ROOT, SHIPPED

STOP_WITHIN_S = 15


def group(pgid: int) -> list[str]:
    """The live (not zombie) processes of a process group."""
    ps = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [line.split()[0] for line in ps.splitlines() if line.split() and not line.split()[1].startswith("Z")]


class Started:
    """A command in a session (process group) of its own, its output collected as it comes."""

    def __init__(self, args: list[str], env: dict):
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.proc.poll() is None and text not in self.out:
            time.sleep(0.1)
        return text in self.out

    def stop_group(self) -> int:
        """SIGTERM to the whole group; the exit code, once nothing of the group is left."""
        os.killpg(self.proc.pid, signal.SIGTERM)
        start = time.monotonic()
        code = self.proc.wait(timeout=STOP_WITHIN_S)
        assert time.monotonic() - start < STOP_WITHIN_S
        self.reader.join(5)
        deadline = time.monotonic() + 5  # multiprocessing's resource tracker leaves once its pipe closes
        while (alive := group(self.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive, f"left behind: {alive}"
        return code


def test_sigterm_during_a_kernel_search_stops_the_command_and_its_workers(tmp_path):
    env = os.environ | {"EDGEVIT_CACHE": str(tmp_path / "cache")}
    args = ["-m", "edgevit.cli.classify", str(ROOT / "samples" / "mnist-3.png"), "--weights", str(SHIPPED), "--beam", "2"]
    run = Started(args, env)
    time.sleep(10)
    assert run.proc.poll() is None, run.out  # still searching: the workers exist
    assert run.stop_group() == 143 and "Traceback" not in run.out, run.out


def test_the_demo_stops_on_sigterm_with_143(tiny_weights, tmp_path):
    env = os.environ | {"EDGEVIT_CACHE": str(tmp_path / "cache")}
    run = Started(["-m", "edgevit.cli.demo", "--weights", str(tiny_weights), "--port", "0"], env)
    assert run.wait_for("http://127.0.0.1:", 120), run.out
    assert run.stop_group() == 143 and "Traceback" not in run.out, run.out
