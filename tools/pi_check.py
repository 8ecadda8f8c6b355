"""The Pi check's own checks (tools/pi_check.sh runs them inside the arm64 userland).
  pi_check.py          the w8a8 replay runs its int8 products on the int8 library, and that library, built
                       with the flag the replay builds it with, takes the sdot path where the CPU has
                       dotprod (plain C where it has not)
  pi_check.py samples  `edgevit-classify --json samples/` on stdin named each sample's digit (the number
                       in its file name: samples/scan-7.jpg is a 7)
One line of what was found; exit status 1 otherwise."""

import ctypes
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgevit.errors import EdgeViTError
from edgevit.export import int8
from edgevit.export.build import ARM64_MACHINES, arm64_features, compile_library, native_flag
from edgevit.runtime import Classifier

ROOT = Path(__file__).resolve().parent.parent
W8A8 = ROOT / "weights" / "edgevit-mnist-w8a8.safetensors"


def int8_path() -> tuple[str, int]:
    """Which path of templates/int8_gemm.c this machine's build of the int8 library takes, and how many
    sdot instructions it holds."""
    with tempfile.TemporaryDirectory(prefix="edgevit-pi-") as tmp:
        source, lib = Path(tmp) / "int8.c", Path(tmp) / "int8.so"
        source.write_text(int8.library_source([(64, 64)]))
        compile_library(source, lib)
        listing = subprocess.run(["objdump", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
        return int8.int8_path(ctypes.CDLL(str(lib))), listing.count("\tsdot\t")


def replay_products() -> tuple[int, int]:
    """The batch-1 w8a8 replay's launches and how many of them are the int8 library's."""
    model = Classifier(W8A8, device="CPU")
    x = np.zeros((1, 1, 28, 28), np.float32)
    for _ in range(3):  # eager, capture, then the direct replay
        model.forward(x)
    replay = model.backend.replay(1)
    if replay is None or replay.int8 is None:
        raise EdgeViTError("the w8a8 replay does not run the int8 library (tinygrad's own products run)")
    return len(replay.launches), sum(launch.name.startswith("edgevit_gemm_s8_") for launch in replay.launches)


def samples_named_right(lines: list[str]) -> int:
    answers = [json.loads(line) for line in lines if line.strip()]
    wrong = [a["path"] for a in answers if a["digit"] != int(re.findall(r"\d", Path(a["path"]).stem)[-1])]
    print(f"pi-check: {len(answers) - len(wrong)} of {len(answers)} samples named right")
    if wrong or not answers:
        print(f"pi-check: error: wrong digit for {', '.join(wrong) or 'no samples'}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    if sys.argv[1:] == ["samples"]:
        return samples_named_right(sys.stdin.readlines())
    if platform.machine().lower() not in ARM64_MACHINES:
        print("pi-check: error: tools/pi_check.py runs inside the arm64 userland (make test-pi)", file=sys.stderr)
        return 1
    features = arm64_features()
    expected = "sdot (ARMv8.2 dotprod)" if "asimddp" in features else "plain C"
    try:
        path, sdots = int8_path()
        launches, products = replay_products()
    except (EdgeViTError, OSError, subprocess.CalledProcessError) as e:
        print(f"pi-check: error: {e}", file=sys.stderr)
        return 1
    print(
        f"CPU features {sorted(features) or 'without asimddp'}, flag {native_flag()}: int8 library on {path} "
        f"({sdots} sdot); w8a8 replay: {products} of {launches} launches on it"
    )
    on_sdot = expected != "plain C"
    if path != expected or (sdots > 0) != on_sdot:
        print(f"pi-check: error: the int8 library took {path}, expected {expected}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
