"""EdgeViT against PyTorch (and plain numpy) on this machine, same model, same weights, one run.

    python tools/bench.py [--weights W] [--json OUT] [--quick]

Rows: EdgeViT's tinygrad runtime and its exported C runtime for fp32 and every quantized scheme,
PyTorch eager and numpy for fp32. Each row is measured in its own fresh process, so its compile
time and peak memory are its own. Ratios are EdgeViT / PyTorch from this run: machines here are
shared and noisy, so only same-run ratios mean anything. PyTorch is the optional [bench] extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tinygrad import Tensor

from edgevit.cli import run
from edgevit.data import load_dataset, normalize, training_batch
from edgevit.errors import EdgeViTError
from edgevit.export import LIBRARY_BEAM
from edgevit.graph import padded_batches
from edgevit.measure import in_fresh_process, latencies, peak_rss, throughput
from edgevit.preprocess import preprocess
from edgevit.quant.files import quantize_file
from edgevit.quant.schemes import C_EXPORTABLE, QUANTIZED
from edgevit.reference import float_weights, numpy_forward, torch_vit
from edgevit.runtime import Classifier
from edgevit.trainer import Trainer, TrainSettings
from edgevit.weights import atomic_write, load_model, open_model_file

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = ROOT / "weights" / "edgevit-mnist.safetensors"
SAMPLE = ROOT / "samples" / "mnist-3.png"
KEYS = ("runtime", "scheme", "device", "train_ips", "batch1_ms_median", "batch1_ms_p90", "batch64_ips", "batch256_ips")
KEYS += ("compile_s", "peak_rss_mb", "classify_cold_s", "classify_warm_s", "beam")
SEARCHED = 2  # the extra row: the tinygrad runtime with BEAM-searched kernels (`edgevit-classify --beam 2`)
TRAIN_BATCH = 128
WARMUP_STEPS = 3
AGREE_ATOL = 1e-4


class Effort:
    """How many calls each figure averages over; --quick is a smoke run, not a measurement."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.batch1_calls = 20 if quick else 300
        self.warmup = 3 if quick else 20
        self.batch_repeats = 1 if quick else 8
        self.train_steps = 0 if quick else 20


# --- one row, in a fresh process ----------------------------------------------------------------
def _test_images(n: int) -> np.ndarray:
    return load_dataset().test.images[:n].astype(np.float32)


def measure_edgevit(path: str, effort: Effort, beam: int | None = None) -> dict:
    clf = Classifier(path, cache_dir=None, beam=beam)
    images = _test_images(256)
    start = time.perf_counter()
    clf.predict(images[:1])
    row = {"device": clf.device, "compile_s": time.perf_counter() - start}
    row["batch1_ms_median"], row["batch1_ms_p90"] = latencies(
        lambda: clf.predict(images[:1]), effort.batch1_calls, effort.warmup
    )
    for batch in (64, 256):
        # one graph of exactly this batch size, fed already-normalised input: the runtime's own cost
        x, _ = next(padded_batches(images[:batch], batch, clf.mean, clf.std))
        row[f"batch{batch}_ips"] = throughput(lambda x=x: clf.forward(x), batch, effort.batch_repeats)
    if effort.train_steps and clf.scheme == "fp32" and not beam:  # a searched training step compiles for 11 min
        row["train_ips"] = _edgevit_train_ips(clf.config, effort)
    return row


def _training_batches(effort: Effort) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first batches of the shipped recipe's first epoch: the same for every framework."""
    data, s = load_dataset(), TrainSettings(batch_size=TRAIN_BATCH)
    mean, std = data.pixel_stats()
    settings = dict(batch_size=s.batch_size, seed=s.seed, do_augment=s.augment, mean=mean, std=std)
    return [training_batch(data.train, 0, i, **settings) for i in range(effort.train_steps + WARMUP_STEPS)]


def _train_ips(step, batches: list) -> float:
    for x, y in batches[:WARMUP_STEPS]:  # eager, capture, first replay: compile time, not training speed
        step(x, y)
    start = time.perf_counter()
    for x, y in batches[WARMUP_STEPS:]:
        step(x, y)
    return (len(batches) - WARMUP_STEPS) * TRAIN_BATCH / (time.perf_counter() - start)


def _edgevit_train_ips(config, effort: Effort) -> float:
    trainer = Trainer(config, TrainSettings(batch_size=TRAIN_BATCH), load_dataset())
    return _train_ips(trainer.train_step, _training_batches(effort))


def measure_c(path: str, effort: Effort) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        clf = Classifier(path, cache_dir=cache, runtime="c")
        images = _test_images(256)
        start = time.perf_counter()
        model = clf.c_model()  # export + C compile
        row = {"device": "CPU (C)", "compile_s": time.perf_counter() - start}
        calls = effort.batch1_calls * 10  # each call is short: more of them for a stable median
        row["batch1_ms_median"], row["batch1_ms_p90"] = latencies(lambda: model(images[:1]), calls, effort.warmup)
        for batch in (64, 256):
            row[f"batch{batch}_ips"] = throughput(lambda batch=batch: model(images[:batch]), batch, effort.batch_repeats)
    return row


def measure_pytorch(path: str, effort: Effort) -> dict:
    import torch  # the optional [bench] extra: only rows that use it import it

    w, config, (mean, std) = float_weights(path)
    # the same device EdgeViT's default backend would use: a GPU where there is one
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    model = torch_vit(w, config).to(device)
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    row = {"device": f"{name} (torch {torch.__version__})", "compile_s": None}
    x = torch.from_numpy(normalize(_test_images(256), mean, std)).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        model(x[:1])
        sync()
        row["compile_s"] = time.perf_counter() - start  # building the module and its first call

        def forward(batch: int) -> None:
            model(x[:batch])
            sync()  # a GPU call returns before the work is done

        row["batch1_ms_median"], row["batch1_ms_p90"] = latencies(lambda: forward(1), effort.batch1_calls * 5, effort.warmup)
        for batch in (64, 256):
            row[f"batch{batch}_ips"] = throughput(lambda batch=batch: forward(batch), batch, effort.batch_repeats)
    if effort.train_steps:
        row["train_ips"] = _pytorch_train_ips(model, device, effort)
    return row


def _pytorch_train_ips(model, device: str, effort: Effort) -> float:
    """The same step as edgevit.trainer (AdamW, weight decay, label smoothing) on the same batches."""
    import torch

    s = TrainSettings()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)

    def step(x, y):
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device).long()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=s.label_smoothing)
        loss.backward()
        opt.step()
        return loss.item()  # waits for the step, as EdgeViT's train_step does

    return _train_ips(step, _training_batches(effort))


def measure_numpy(path: str, effort: Effort) -> dict:
    w, config, (mean, std) = float_weights(path)
    x = normalize(_test_images(256), mean, std)
    row = {"device": f"CPU (numpy {np.__version__})", "compile_s": None}
    calls = max(10, effort.batch1_calls // 3)
    row["batch1_ms_median"], row["batch1_ms_p90"] = latencies(lambda: numpy_forward(w, config, x[:1]), calls, effort.warmup)
    for batch in (64, 256):
        row[f"batch{batch}_ips"] = throughput(
            lambda batch=batch: numpy_forward(w, config, x[:batch]), batch, effort.batch_repeats
        )
    return row


MEASURES = {"edgevit": measure_edgevit, "c": measure_c, "pytorch": measure_pytorch, "numpy": measure_numpy}


def measure_row(runtime: str, scheme: str, path: str, quick: bool, beam: int | None) -> dict:
    row = dict.fromkeys(KEYS)
    row.update(runtime=runtime, scheme=scheme, beam={"edgevit": beam or 0, "c": LIBRARY_BEAM}.get(runtime))
    row.update(MEASURES[runtime](path, Effort(quick), *([beam] if beam else [])))
    row["peak_rss_mb"] = peak_rss() / 2**20
    return row


# --- checks and whole-program timings -----------------------------------------------------------
def check_references(path: Path, with_torch: bool) -> float:
    """Largest |logit| difference between tinygrad, PyTorch and numpy on 64 test images; must be < 1e-4."""
    w, config, (mean, std) = float_weights(path)
    x = normalize(_test_images(64), mean, std)
    model, _ = load_model(path)
    ours = model(Tensor(x)).numpy()
    worst = float(np.abs(numpy_forward(w, config, x) - ours).max())
    if with_torch:
        import torch

        with torch.inference_mode():
            worst = max(worst, float(np.abs(torch_vit(w, config)(torch.from_numpy(x)).numpy() - ours).max()))
    if worst > AGREE_ATOL:
        raise EdgeViTError(f"the reference models disagree with EdgeViT by {worst:.2e} (> {AGREE_ATOL}): not timing them")
    return worst


def classify_walls(path: Path, runtime: str, beam: int | None) -> tuple[float, float]:
    """Wall time of `edgevit-classify SAMPLE` with an empty cache, then again with it warm."""
    cmd = [str(Path(sys.executable).parent / "edgevit-classify"), str(SAMPLE), "--weights", str(path)]
    cmd += ["--beam", str(beam)] if beam else []
    if runtime == "pytorch":
        cmd = [sys.executable, __file__, "--classify-with-pytorch", str(path), str(SAMPLE)]
    elif runtime == "c":
        cmd += ["--runtime", "c"]
    walls = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "EDGEVIT_CACHE": cache}
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            walls.append(time.perf_counter() - start)
    return walls[0], walls[1]


def classify_with_pytorch(weights: str, image: str) -> int:
    """What `edgevit-classify image` does, with PyTorch doing the forward pass: the cold/warm reference."""
    import torch

    w, config, (mean, std) = float_weights(weights)
    x = normalize(preprocess(Path(image).read_bytes(), image)[None], mean, std)
    with torch.inference_mode():
        probs = torch_vit(w, config)(torch.from_numpy(x)).softmax(-1)[0]
    print(f"{image}\t{int(probs.argmax())} {100 * float(probs.max()):.1f}%")
    return 0


# --- report ---------------------------------------------------------------------------------------
def label(row: dict) -> str:
    return f"{row['runtime']} (BEAM={row['beam']})" if row["runtime"] == "edgevit" and row["beam"] else row["runtime"]


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _ratio(value, reference) -> str:
    return "–" if value is None or not reference else f"{value / reference:.2f}x"


def markdown(rows: list[dict]) -> str:
    torch_row = next((r for r in rows if r["runtime"] == "pytorch"), {})
    ref = {k: torch_row.get(k) for k in ("batch1_ms_median", "batch256_ips", "train_ips")}
    header = ["runtime", "scheme", "train img/s", "batch-1 ms (median / p90)", "batch-64 img/s", "batch-256 img/s"]
    header += [
        "compile s",
        "classify cold / warm s",
        "peak RSS MiB",
        "batch-1 vs PyTorch",
        "batch-256 vs PyTorch",
        "train vs PyTorch",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            label(r),
            r["scheme"],
            _fmt(r["train_ips"], ",.0f"),
            f"{_fmt(r['batch1_ms_median'], '.3f')} / {_fmt(r['batch1_ms_p90'], '.3f')}",
            _fmt(r["batch64_ips"], ",.0f"),
            _fmt(r["batch256_ips"], ",.0f"),
            _fmt(r["compile_s"], ".2f"),
            f"{_fmt(r['classify_cold_s'], '.2f')} / {_fmt(r['classify_warm_s'], '.2f')}",
            _fmt(r["peak_rss_mb"], ".0f"),
            _ratio(r["batch1_ms_median"], ref["batch1_ms_median"]),
            _ratio(r["batch256_ips"], ref["batch256_ips"]),
            _ratio(r["train_ips"], ref["train_ips"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """The performance targets of issues 5 and 6, each met or missed, from this run's ratios."""
    torch_row = next((r for r in rows if r["runtime"] == "pytorch"), None)
    if torch_row is None:
        return ["targets: not judged (PyTorch is not installed: pip install -e '.[bench]')"]
    out = []

    def judge(name: str, runtime: str, key: str, bound: float, lower_is_better: bool) -> None:
        for r in rows:
            if r["runtime"] != runtime or r[key] is None or torch_row[key] is None:
                continue
            ratio = r[key] / torch_row[key]
            met = ratio <= bound if lower_is_better else ratio >= bound
            sign, verdict = ("<=" if lower_is_better else ">="), ("met" if met else "MISSED")
            out.append(f"{name} ({label(r)} {r['scheme']}): {ratio:.2f}x PyTorch, target {sign} {bound:.2f}x: {verdict}")

    judge("batch-1 latency", "edgevit", "batch1_ms_median", 1.0, True)
    judge("batch-1 latency", "c", "batch1_ms_median", 1 / 3, True)
    judge("batch-256 images/s", "edgevit", "batch256_ips", 1.0, False)
    judge("batch-256 images/s", "c", "batch256_ips", 1.0, False)
    judge("training images/s", "edgevit", "train_ips", 0.5, False)
    for r in rows:
        if r["classify_warm_s"] is not None and r["runtime"] in ("edgevit", "c"):
            ok = "met" if r["classify_warm_s"] < 1.0 else "MISSED"
            out.append(
                f"cached start ({label(r)} {r['scheme']}): warm classify {r['classify_warm_s']:.2f} s, target < 1 s: {ok}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.py", description="EdgeViT vs PyTorch and numpy, same model and weights.")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="an fp32 weights file (default: the shipped one)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    p.add_argument("--quick", action="store_true", help="smoke run: fp32 only, few calls, no training or cold starts")
    p.add_argument("--classify-with-pytorch", nargs=2, metavar=("WEIGHTS", "IMAGE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.classify_with_pytorch:
        return classify_with_pytorch(*args.classify_with_pytorch)

    open_model_file(args.weights, float_only=True)
    with_torch = importlib.util.find_spec("torch") is not None
    if not with_torch:
        print("PyTorch is not installed (pip install -e '.[bench]'): no PyTorch rows or ratios", file=sys.stderr)
    worst = check_references(args.weights, with_torch)
    print(f"references agree with EdgeViT: max |logit difference| {worst:.1e}", file=sys.stderr)
    references = ("pytorch", "numpy") if with_torch else ("numpy",)

    schemes = ("fp32",) if args.quick else ("fp32", *QUANTIZED)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": args.weights}
        for scheme in schemes[1:]:
            files[scheme] = Path(tmp) / f"{scheme}.safetensors"
            quantize_file(args.weights, files[scheme], scheme)
        plan = [(r, "fp32", None) for r in references] + [("edgevit", s, None) for s in schemes]
        plan += [] if args.quick else [("edgevit", "fp32", SEARCHED)]
        plan += [("c", s, None) for s in schemes if s in C_EXPORTABLE]
        for runtime, scheme, beam in plan:
            print(f"measuring {runtime} {scheme}{f' BEAM={beam}' if beam else ''}", file=sys.stderr, flush=True)
            row = in_fresh_process(measure_row, runtime, scheme, str(files[scheme]), args.quick, beam)
            if not args.quick and runtime != "numpy":
                row["classify_cold_s"], row["classify_warm_s"] = classify_walls(files[scheme], runtime, beam)
            rows.append(row)
    print(markdown(rows))
    print()
    for line in targets(rows):
        print(f"- {line}")
    if args.json:
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(rows, indent=1) + "\n"))
    return 0


if __name__ == "__main__":
    run("bench.py", main)
