"""The shape of the package: dependencies run one way, and tinygrad's internals stay behind one door."""

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "edgevit"
# tinygrad's public API: everything else of tinygrad is an internal, used only by edgevit/internals.py
PUBLIC_TINYGRAD = {"tinygrad", "tinygrad.nn", "tinygrad.nn.state", "tinygrad.nn.optim"}
INTERNAL_NAMES = re.compile(
    r"_device_rng_counters|unique_num|\.captured\b|\.renderers\b|\bDEV\.value|\._devices\b|_as_buffer|\.allocator\b|\.lvp\b"
)
# the layers, lowest first: a module may import only from its own layer or lower ones
LAYERS = [
    {"errors", "checks", "files", "resources", "internals", "quant"},
    {"model", "data", "quant.codec", "measure"},
    {"quant.schemes", "preprocess", "attention", "explain", "device", "calibration", "answer", "cli"},
    {"degrade", "degrade.ops", "degrade.kinds", "writers", "cache"},
    {"weights", "robustness"},
    {"graph", "reference", "qkv"},
    {
        "export.plan",
        "export.int8",
        "export.render",
        "export.build",
        "export.capture",
        "export.wasm",
        "export.webgpu",
        "export.stack",
        "export.boards",
        "export",
    },
    {"replay", "replay.native", "replay.int8", "replay.launcher", "replay.schedule", "replay.replay"},
    {"runtime.backend", "runtime.jit", "runtime.tinygrad", "runtime.c", "runtime.classifier", "runtime"},
    {
        "training",
        "training.settings",
        "training.batches",
        "training.optimizer",
        "training.calibrate",
        "training.step",
        "training.trainer",
        "training.banks",
        "training.checkpoint",
        "classify",
        "evaluation",
        "quantize",
        "demo",
        "demo.site",
        "demo.server",
    },
    {
        "cli.classify",
        "cli.train",
        "cli.evaluate",
        "cli.quantize",
        "cli.export",
        "cli.demo",
        "cli.main",
        "train",
        "evaluate",
        "__main__",
    },
]
# no class longer than this, no function longer than that (lines, docstrings included)
MAX_CLASS_LINES, MAX_FUNCTION_LINES = 150, 80


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every edgevit module `path` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgevit"):
            base = node.module.removeprefix("edgevit").lstrip(".")
            for alias in node.names:
                child = f"{base}.{alias.name}".lstrip(".")
                found.add(child if (PACKAGE / (child.replace(".", "/") + ".py")).exists() else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("edgevit.") for a in node.names if a.name.startswith("edgevit.")}
    return {f for f in found if f}


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_every_module_has_a_layer():
    layered = set().union(*LAYERS)
    assert set(modules()) - {""} <= layered, f"unlayered: {set(modules()) - layered - {''}}"


def test_dependencies_run_one_way_with_no_cycle():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    upward = []
    for name, path in modules().items():
        for target in imports(path):
            if name and target in rank and rank[target] > rank[name]:
                upward.append(f"{name} -> {target}")
    assert not upward, upward
    graph = {name: imports(path) for name, path in modules().items()}

    def visit(node, trail):
        assert node not in trail, f"import cycle: {' -> '.join([*trail, node])}"
        for nxt in graph.get(node, ()):
            visit(nxt, [*trail, node])

    for name in graph:
        visit(name, [])


def test_tinygrad_internals_are_used_from_one_module_only():
    offenders = []
    for name, path in modules().items():
        if name == "internals":
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            module = getattr(node, "module", None) or ""
            if isinstance(node, ast.ImportFrom) and module.startswith("tinygrad") and module not in PUBLIC_TINYGRAD:
                offenders.append(f"{name}: from {node.module} import ...")
        offenders += [f"{name}: {m.group(0)}" for m in INTERNAL_NAMES.finditer(source)]
    assert not offenders, offenders


def test_no_unit_is_too_long_to_read():
    """Small units with one job each: every class and function of the package within the limits."""
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.end_lineno - node.lineno + 1 > limit:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


def test_the_replay_does_not_import_a_runtime():
    for name, path in modules().items():
        if name.startswith("replay"):
            assert not {m for m in imports(path) if m.startswith("runtime")}, name
