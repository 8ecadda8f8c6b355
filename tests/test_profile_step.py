"""tools/profile_step.py: the per-kernel table of a training step, and bad flags in one line."""

import subprocess
import sys

import pytest
from conftest import ROOT

TOOL = [sys.executable, str(ROOT / "tools" / "profile_step.py")]


def test_bad_flags_fail_in_one_line_before_compiling():
    done = subprocess.run([*TOOL, "--steps", "0"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "--steps" in done.stderr


@pytest.mark.slow
def test_profile_lists_the_heaviest_kernels_of_a_real_step():
    cmd = [*TOOL, "--beam", "0", "--batch-size", "8", "--steps", "2", "--top", "5"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("step ") and "images/s" in lines[0]
    rows = [line for line in lines if line.startswith("| ") and "`" in line]
    assert len(rows) == 5
    shares = [float(row.split("|")[2].strip().rstrip("%")) for row in rows]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.0001
