"""`edgevit VERB ...`: every command of the toolkit behind one name.

    edgevit classify digit.png        which digit, how sure, where the model looked
    edgevit train                     train the shipped recipe (--recipe quick: minutes)
    edgevit evaluate [WEIGHTS]        accuracy, calibration, "not a digit"; --robustness
    edgevit quantize WEIGHTS -o OUT   int8, w8a8, fp16, int4; --compare
    edgevit export WEIGHTS -o DIR     dependency-free C99 (also WebAssembly, Cortex-M boards)
    edgevit demo                      the attention explorer in the browser

Each verb is a thin command line in edgevit.cli over a library function; `edgevit-classify`,
`edgevit-demo`, `python -m edgevit.train`, `python -m edgevit.evaluate`, `python tools/quantize.py`
and `python tools/export.py` are the same commands under their older names.
"""

from __future__ import annotations

import importlib
import sys

from edgevit.cli import EXIT_USAGE, run

VERBS = {
    "classify": "which digit is in each image",
    "train": "train the ViT (the shipped recipe; --recipe quick for minutes)",
    "evaluate": "score a weights file: accuracy, calibration, not a digit, --robustness",
    "quantize": "int8, w8a8, fp16 or int4 weights; --compare them all",
    "export": "the graph as dependency-free C99 (--wasm, --board)",
    "demo": "the attention explorer in the browser",
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: edgevit VERB [options]   (edgevit VERB --help for its options)", "", "verbs:"]
    return "\n".join(lines + [f"  {verb:<{width}}  {what}" for verb, what in VERBS.items()])


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else EXIT_USAGE)
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"edgevit: error: unknown verb {verb!r}; choose from {', '.join(VERBS)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    command = importlib.import_module(f"edgevit.cli.{verb}")
    run(f"edgevit {verb}", lambda a: command.cli(a, prog=f"edgevit {verb}"), rest)
