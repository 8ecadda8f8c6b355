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
from edgevit.export.webgpu import webgpu_graph
from edgevit.weights import ModelFile, model_file

SOURCES = resources.files("edgevit.demo") / "site"
STATIC_FILES = (
    "index.html",
    "explorer.js",
    "engines.js",
    "webgpu.js",
    "draw.js",
    "heads.js",
    "headview.js",
    "knockout.js",
    "lesson.js",
    "preprocess.js",
    "style.css",
)
WASM_NAME = "edgevit.wasm"
WEBGPU_GRAPH, WEBGPU_WEIGHTS = "webgpu.json", "webgpu.bin"
CONFIG_NAME = "model.json"
MARKER, MARKER_TEXT = ".edgevit-site", "a site written by edgevit-demo; it replaces this folder when asked to\n"
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


def model_config(model: ModelFile, wasm_path: Path) -> dict:
    """What the page needs to know about the model (model.json)."""
    config = model.config
    out = {
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "grid": config.grid,
        "depth": config.depth,
        "heads": config.heads,
        "dim": config.dim,
        "head_dim": config.dim // config.heads,
        "tokens": config.tokens,
        "num_classes": config.num_classes,
        "labels": class_labels(config.num_classes, model.metadata),
        "scheme": model.scheme,
        "model_id": model.sha256,
        "wasm": WASM_NAME,
        "wasm_bytes": wasm_path.stat().st_size,
        "webgpu": {"graph": WEBGPU_GRAPH, "weights": WEBGPU_WEIGHTS},
    }
    # softmax(logits / T) is computed inside the C graph; the page only says so
    if model.temperature != 1.0:
        out["temperature"] = model.temperature
    return out


def is_site(directory: Path) -> bool:
    """Whether `directory` is a site this module wrote (it holds MARKER with MARKER_TEXT)."""
    try:
        return (directory / MARKER).read_text() == MARKER_TEXT
    except (OSError, UnicodeDecodeError):
        return False


def check_target(out_dir: Path) -> None:
    """Refuse, by name, an output that is not a fresh or empty folder nor a site built here: a
    user's folder is never replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgeViTError(f"{out_dir} exists and is not a folder: not replacing it")
    if out_dir.is_mount() or out_dir.parent == out_dir:
        raise EdgeViTError(f"{out_dir} is a mount point or the root: write the site into a folder inside it")
    try:
        foreign = out_dir.is_dir() and any(out_dir.iterdir()) and not is_site(out_dir)
    except OSError as e:
        raise EdgeViTError(f"{out_dir}: cannot look inside ({e.strerror})") from None
    if foreign:
        raise EdgeViTError(f"{out_dir} holds files that are not a site built by edgevit-demo (no {MARKER}): not replacing it")


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


def write_site(weights: str | os.PathLike | ModelFile, out_dir: str | os.PathLike) -> Path:
    """Export `weights` as C, compile it to WebAssembly and write the whole site to `out_dir`.

    Everything is built in a temporary directory beside `out_dir` and moved into place at the end, so
    a failed build leaves a previous site untouched. An existing `out_dir` must be empty or a site
    built here (it holds MARKER): it is replaced, never merged.
    """
    model, out_dir = model_file(weights), Path(out_dir).absolute()
    check_target(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new.", dir=out_dir.parent))
    except OSError as e:
        raise EdgeViTError(f"{out_dir}: cannot create the site beside it ({e.strerror})") from None
    try:
        with tempfile.TemporaryDirectory(prefix="edgevit-c-") as c_dir:
            exported = export(model, c_dir, inspect=True)  # the page shows the numbers behind every weight
            wasm = build_wasm(exported.files["edgevit_model.c"], staging / WASM_NAME, inspect=True)
        gpu = webgpu_graph(model)
        (staging / WEBGPU_GRAPH).write_text(json.dumps(gpu.manifest, separators=(",", ":")) + "\n")
        (staging / WEBGPU_WEIGHTS).write_bytes(gpu.weights)
        for name in STATIC_FILES:
            (staging / name).write_bytes((SOURCES / name).read_bytes())
        (staging / CONFIG_NAME).write_text(json.dumps(model_config(model, wasm), indent=2) + "\n")
        (staging / MARKER).write_text(MARKER_TEXT)
        staging.chmod(0o755)  # mkdtemp makes it private; a web root is meant to be read
        replace_directory(staging, out_dir)
    except OSError as e:  # a full disk, a folder that cannot be moved
        raise EdgeViTError(f"{out_dir}: cannot write the site ({e.strerror or e})") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir
