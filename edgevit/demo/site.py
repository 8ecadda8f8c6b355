"""The attention explorer as a static site: the page's files, the model as WebAssembly, model.json.

Plain files (HTML, JavaScript, CSS, edgevit.wasm, model.json) that any static file server can serve,
as long as it sends .wasm as application/wasm (the page falls back to a slower load if not). The
WebAssembly is the same exported C as `tools/export.py` writes (edgevit.export), built by
edgevit.export.wasm.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from edgevit.errors import EdgeViTError
from edgevit.export import export
from edgevit.export.wasm import build_wasm
from edgevit.weights import file_sha256, open_model_file, temperature_of

SOURCES = resources.files("edgevit.demo") / "site"
STATIC_FILES = ("index.html", "explorer.js", "preprocess.js", "style.css")
WASM_NAME = "edgevit.wasm"
CONFIG_NAME = "model.json"  # also the mark of a directory write_site may replace
DIGITS = 10
NOT_A_DIGIT = "not a digit"  # the label of an eleventh class, when a model has one


def sources_fingerprint() -> str:
    """Of the page's own files: a built site is stale when they change."""
    return hashlib.sha256(b"".join((SOURCES / name).read_bytes() for name in STATIC_FILES)).hexdigest()[:16]


def class_labels(num_classes: int, metadata: dict) -> list[str]:
    """The weights file's own labels when it has them; else digits, and 'not a digit' for an 11th class."""
    labels = metadata.get("labels")
    if isinstance(labels, list) and len(labels) == num_classes:
        return [str(label) for label in labels]
    return [str(i) if i < DIGITS else NOT_A_DIGIT if i == DIGITS else f"class {i}" for i in range(num_classes)]


def model_config(weights_path: Path, wasm_path: Path) -> dict:
    """What the page needs to know about the model (model.json)."""
    header, config, scheme, _ = open_model_file(weights_path)
    out = {
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "grid": config.grid,
        "depth": config.depth,
        "heads": config.heads,
        "dim": config.dim,
        "tokens": config.tokens,
        "num_classes": config.num_classes,
        "labels": class_labels(config.num_classes, header.metadata),
        "scheme": scheme,
        "model_id": file_sha256(weights_path),
        "wasm": WASM_NAME,
        "wasm_bytes": wasm_path.stat().st_size,
    }
    # softmax(logits / T) is computed inside the C graph; the page only says so
    if (temperature := temperature_of(header)) != 1.0:
        out["temperature"] = temperature
    return out


def replace_directory(new: Path, target: Path) -> None:
    """Put the finished directory `new` at `target`. A fresh target is one atomic rename; an existing
    one is moved aside first (two renames: readers see the old site or the new, never a partial one)."""
    if not target.exists():
        os.rename(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.rename(target, old / target.name)
    os.rename(new, target)
    shutil.rmtree(old)


def write_site(weights_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Export `weights_path` as C, compile it to WebAssembly and write the whole site to `out_dir`.

    Everything is built in a temporary directory beside `out_dir` and moved into place at the end, so
    a failed build leaves a previous site untouched. An existing `out_dir` must be a site built here
    (it holds model.json): it is replaced, never merged.
    """
    weights_path, out_dir = Path(weights_path), Path(out_dir).resolve()
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / CONFIG_NAME).is_file())):
        raise EdgeViTError(f"{out_dir} exists and is not a site built by edgevit-demo (no {CONFIG_NAME}): not replacing it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new.", dir=out_dir.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="edgevit-c-") as c_dir:
            exported = export(weights_path, c_dir)
            wasm = build_wasm(exported.files["edgevit_model.c"], staging / WASM_NAME)
        for name in STATIC_FILES:
            (staging / name).write_bytes((SOURCES / name).read_bytes())
        (staging / CONFIG_NAME).write_text(json.dumps(model_config(weights_path, wasm), indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private; a web root is meant to be read
        replace_directory(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir
