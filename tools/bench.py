"""EdgeViT against its peers on this machine: same model, same weights, same inputs, one run.

    python tools/bench.py [--weights W] [--json OUT] [--quick] [--no-search] [--without PEER]

Rows: EdgeViT's tinygrad runtime and its exported C runtime for fp32 and every quantized scheme (on
a CPU with AMX, C w8a8 also with EDGEVIT_INT8=vnni: the int8 products on vpdpbusd, the path before
AMX); the peers, all running the PyTorch twin of the model (edgevit.reference, exported to ONNX for
ONNX Runtime and OpenVINO): PyTorch eager; ONNX Runtime fp32, its dynamic int8 and its static int8
(QDQ, per channel, calibrated on CALIBRATION_IMAGES training images); OpenVINO fp32, at its default
precision (bf16 on a CPU that has it) and int8 through NNCF's post-training quantization; and a
plain numpy forward pass. The peers are the optional [bench] extra: those not installed are named in
one stderr line and the rest is measured. Every peer's outputs are checked against EdgeViT's before
anything is timed, and every row's accuracy (the likeliest digit on ACCURACY_IMAGES test images)
stands beside its speed, so a faster row cannot hide a worse model. Each row names the instructions
its products run on (`path`) and the fraction of that path's peak it reaches: images/s x
multiply-adds per image / (peak multiply-adds per cycle x clock x cores used), at batch 1 on one core
and at batch 256 on all of them.

Each row lives in its own spawned process for the whole run, so its imports, compile time and peak
memory are its own. Timing goes in rounds: in each round every row in turn runs one timing block
(batch-1 calls, then batch-64 and batch-256 calls, then training steps for the rows that train), and
each figure is the median over the rounds. This machine is shared: interleaving spreads its noise over
all rows alike instead of landing on whichever row happened to run during it, so the same-run ratios
(to PyTorch and to the best peer) are what count.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.cli import run
from edgevit.data import load_dataset, normalize
from edgevit.device import usable_cores
from edgevit.errors import EdgeViTError
from edgevit.export import LIBRARY_BEAM
from edgevit.files import atomic_write
from edgevit.measure import Worker, cpu_description, cpu_flags, cpu_mhz, peak_rss, rate, settle, timed_calls
from edgevit.model import macs_per_image
from edgevit.preprocess import preprocess
from edgevit.quant.schemes import C_EXPORTABLE, QUANTIZED
from edgevit.quantize import quantize_file
from edgevit.reference import export_onnx, float_weights, numpy_forward, torch_vit
from edgevit.training.trainer import TrainSettings
from edgevit.weights import ModelFile

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = ROOT / "weights" / "edgevit-mnist.safetensors"
SAMPLE = ROOT / "samples" / "mnist-3.png"
KEYS = ("runtime", "scheme", "device", "train_ips", "batch1_ms_median", "batch1_ms_p90", "batch64_ips", "batch256_ips")
KEYS += ("compile_s", "peak_rss_mb", "classify_cold_s", "classify_warm_s", "beam")
KEYS += ("rounds", "batch1_calls", "batch1_ms_rounds", "batch64_ips_rounds", "batch256_ips_rounds", "train_ips_rounds")
KEYS += ("max_logit_diff", "prediction_agreement", "accuracy", "int8", "path", "roofline_batch1", "roofline_batch256")

# the peers EdgeViT is judged against, and the modules each needs (the ONNX file comes from PyTorch)
PEERS = {"pytorch": ("torch",), "onnxruntime": ("torch", "onnx", "onnxruntime"), "openvino": ("torch", "onnx", "openvino")}
PEER_NAMES = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
PEER_ROWS = (("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8-dynamic"), ("onnxruntime", "int8-static"))
PEER_ROWS += (("openvino", "fp32"), ("openvino", "bf16-default"), ("openvino", "int8-nncf"))
QUANTIZED_PEERS = {("onnxruntime", "int8-dynamic"), ("onnxruntime", "int8-static"), ("openvino", "int8-nncf")}  # not --quick
CALIBRATION_IMAGES = 512  # training images the static int8 peers calibrate on
NNCF_CALIBRATION_IMAGES = 300  # NNCF's default subset size
ACCURACY_IMAGES = 2000  # test images each row's accuracy is taken on
ROW_MODULES = {("openvino", "int8-nncf"): ("nncf",)}  # beyond the peer's own
REFERENCES = ("numpy", *PEERS)  # the rows whose outputs are checked against EdgeViT's
SEARCHED = 2  # the extra rows: the tinygrad runtime with BEAM-searched kernels (`edgevit-classify --beam 2`)
SEARCHED_SCHEMES = ("fp32", "w8a8")
IMAGES = 256  # test images every row runs: batches take the first 1, 64 or 256; the check takes all
BATCHES = (64, 256)
TRAIN_BATCH = 224  # the shipped recipe's batch: the searched row reuses the kernel search its training cached
TRAIN_BATCHES = 16  # the recipe's first batches of epoch 0: every training row cycles through these
WARMUP_STEPS = 3  # eager, capture, first direct replay: compile time, not training speed
WARMUP_CALLS = 20  # batch-1 calls after the first (compiling) one, before any timing
BLOCK_WARMUP_CALLS = 3  # untimed batch-1 calls per block: the previous row left its own data in the caches
FLOAT_ATOL = 1e-4  # largest |logit difference| a float peer may show against EdgeViT fp32
# the 8-bit and bf16 peers round activations, so their logits move by ~0.1: their predictions must agree
# (ONNX Runtime's dynamic int8 agreed with EdgeViT fp32 on 99.96% of the 10,000 test images)
INT8_AGREEMENT = 0.99
ORT_PROVIDERS = ["CPUExecutionProvider"]
# OpenVINO's CPU plugin computes in bfloat16 by default on CPUs that have it: its fp32 row asks for f32,
# its bf16-default row (planned where the CPU has bf16) takes the default
OPENVINO_CONFIG = {"PERFORMANCE_HINT": "LATENCY"}
OPENVINO_F32 = {"INFERENCE_PRECISION_HINT": "f32"}
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
COLUMNS = {"batch1_ms_median": "batch 1", "batch64_ips": "batch 64", "batch256_ips": "batch 256"}  # best-peer columns
C_8BIT = ("int8", "w8a8")
EIGHT_BIT_SPEEDUP = 1.3  # target: C with 8-bit weights at least this much faster than C fp32
EIGHT_BIT_COLUMNS = ("batch1_ms_median", "batch256_ips")  # where that speed-up is judged
# multiply-adds one core can start a cycle on each path (x86): the roofline's ceiling
PEAK_MACS_PER_CYCLE = {
    "tdpbssd (AMX-INT8)": 1024,  # a 16x16-by-64 tile product every 16 cycles
    "vpdpbusd (AVX512-VNNI)": 128,  # 64 an instruction, two 512-bit ports
    "fp32 FMA (AVX-512)": 32,  # 16 an instruction, two ports
    "fp32 FMA (AVX2)": 16,
    "tdpbf16ps (AMX-BF16)": 512,  # a 16x16-by-32 tile product every 16 cycles
    "vdpbf16ps (AVX512-BF16)": 64,
}
# a peer's own int8 or bf16 kernels (which instructions, it does not say): the roofline is taken
# against the best this CPU has for that type, a ceiling it cannot pass
BEST_PATHS = {
    "int8 (": (("amx_int8", "tdpbssd (AMX-INT8)"), ("avx512_vnni", "vpdpbusd (AVX512-VNNI)")),
    "bf16 (": (("amx_bf16", "tdpbf16ps (AMX-BF16)"), ("avx512_bf16", "vdpbf16ps (AVX512-BF16)")),
}
AMX_FLAGS = {"amx_int8", "amx_tile"}
AMX_SPEEDUP = 3.0  # target: C w8a8 batch 256 against the same C on vpdpbusd (EDGEVIT_INT8=vnni)
BATCH1_MS = 0.03  # target: C w8a8 batch-1 latency
# (title, runtime judged, figure, reference: "pytorch" or the best peer, bound on the ratio)
TARGETS = (
    ("C runtime batch-1 latency", "c", "batch1_ms_median", "best peer", 0.6),
    ("C runtime batch-256 images/s", "c", "batch256_ips", "best peer", 1.0),
    ("tinygrad runtime batch-256 images/s", "edgevit", "batch256_ips", "pytorch", 1.0),
    ("training images/s", "edgevit", "train_ips", "pytorch", 0.5),
)


@dataclass(frozen=True)
class Effort:
    """How long each figure is timed; --quick is a smoke run, not a measurement."""

    rounds: int
    window_s: float  # per round and row, for each of batch 1, 64 and 256
    batch1_min_calls: int
    train_s: float  # per round, for the rows that train (a smoke run trains nothing)


FULL = Effort(rounds=10, window_s=0.25, batch1_min_calls=50, train_s=1.0)
QUICK = Effort(rounds=2, window_s=0.02, batch1_min_calls=5, train_s=0.0)


@dataclass(frozen=True)
class Spec:
    """One row: which runtime runs which file."""

    runtime: str
    scheme: str
    source: str  # a weights file; for ONNX Runtime and OpenVINO, an ONNX file
    beam: int | None = None  # EdgeViT's kernel search (None: the runtime's default)
    int8: str | None = None  # EDGEVIT_INT8 in the row's process: "vnni" keeps AMX out of its products
    trains: bool = False
    batches: str | None = None  # PyTorch's training batches (.npz), drawn by EdgeViT's Trainer in the parent

    @property
    def name(self) -> str:
        beam, int8 = f" BEAM={self.beam}" if self.beam else "", f" EDGEVIT_INT8={self.int8}" if self.int8 else ""
        return f"{self.runtime} {self.scheme}{beam}{int8}"


@dataclass(frozen=True)
class Inputs:
    pixels: np.ndarray  # (ACCURACY_IMAGES, 28, 28) test images on [0, 255]: the C runtime normalises them itself
    x: np.ndarray  # the same, normalised (ACCURACY_IMAGES, 1, 28, 28): what every other row runs
    labels: np.ndarray  # their digits


# --- the rows' runtimes, each in its own worker process ---------------------------------------------
class Engine:
    """One row's runtime, built in its worker. Subclasses build it in __init__ and define
    forward(batch), which runs the first `batch` images, and scores(start, count), the outputs of
    `count` images from `start` (logits or probabilities: the likeliest is what counts); the checked
    rows define outputs() (logits of the first IMAGES) and the training rows training() (a step on the
    next of the shared batches)."""

    device = ""
    compile_s = 0.0
    train = None  # the training step, set up by start_engine for the rows that train

    def forward(self, batch: int) -> None:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"device": self.device, "compile_s": self.compile_s, "path": self.path()}

    def scores(self, start: int, count: int) -> np.ndarray:
        raise NotImplementedError

    def accuracy(self, labels: np.ndarray) -> float:
        """The share of the first len(labels) images whose likeliest digit (the ten digits' scores) is
        the label: taken in batches of 256, once, untimed."""
        got = np.concatenate([self.scores(s, min(256, len(labels) - s)) for s in range(0, len(labels), 256)])
        return float((got[:, :10].argmax(1) == labels).mean())

    def path(self) -> str | None:
        """The instructions this row's products run on: float rows, this CPU's widest fp32 FMA."""
        flags = cpu_flags()
        return "fp32 FMA (AVX-512)" if "avx512f" in flags else "fp32 FMA (AVX2)" if "avx2" in flags else None

    def block(self, effort: Effort) -> dict:
        """One round's timings: batch-1 call durations (s), then images/s at each batch size and training."""
        figures = {
            "batch1_s": timed_calls(lambda: self.forward(1), effort.window_s, effort.batch1_min_calls, BLOCK_WARMUP_CALLS)
        }
        for batch in BATCHES:
            figures[f"batch{batch}_ips"] = rate(lambda batch=batch: self.forward(batch), batch, effort.window_s)
        if self.train is not None:
            figures["train_ips"] = rate(self.train, TRAIN_BATCH, effort.train_s)
        settle()  # before the next row's block
        return figures

    def peak_rss_mb(self) -> float:
        return peak_rss() / 2**20


def _cycling(step: Callable, batches: list) -> Callable[[], object]:
    """A training step over `batches` in turn, round after round."""
    batches = itertools.cycle(batches)
    return lambda: step(*next(batches))


class EdgeViTEngine(Engine):
    def __init__(self, spec: Spec, inputs: Inputs, workdir: str):
        from edgevit.runtime import Classifier

        self.classifier, self.beam = Classifier(spec.source, cache_dir=None, beam=spec.beam), spec.beam
        self.device, self.pixels = self.classifier.device, inputs.pixels

    def forward(self, batch: int) -> None:
        self.classifier.predict(self.pixels[:batch])  # as users classify: big batches run a graph on each core

    def scores(self, start: int, count: int) -> np.ndarray:
        return self.classifier.predict(self.pixels[start : start + count]).probs

    def path(self) -> str | None:
        replay = self.classifier.backend.replay(1)
        return replay.int8.path if replay is not None and replay.int8 is not None else super().path()

    def training(self):
        from edgevit.training.trainer import Trainer

        trainer = Trainer(self.classifier.config, TrainSettings(batch_size=TRAIN_BATCH), load_dataset())
        trainer.compiled.beam = self.beam or 0  # the searched row trains as `train --beam 2` does
        return _cycling(trainer.train_step, [trainer.batch(0, i) for i in range(TRAIN_BATCHES)])


class CEngine(Engine):
    def __init__(self, spec: Spec, inputs: Inputs, workdir: str):
        from edgevit.runtime import Classifier

        cache = tempfile.mkdtemp(prefix="c-cache-", dir=workdir)  # empty: the export and C build are timed
        self.model = Classifier(spec.source, cache_dir=cache, runtime="c").backend.compiled()
        self.device, self.pixels = "CPU (C)", inputs.pixels

    def forward(self, batch: int) -> None:
        self.model(self.pixels[:batch])

    def scores(self, start: int, count: int) -> np.ndarray:
        return self.model(self.pixels[start : start + count])[0]

    def path(self) -> str | None:
        return self.model.int8_path or super().path()


class NumpyEngine(Engine):
    def __init__(self, spec: Spec, inputs: Inputs, workdir: str):
        self.w, self.config, _ = float_weights(spec.source)
        self.device, self.x = f"CPU (numpy {np.__version__})", inputs.x

    def forward(self, batch: int) -> None:
        numpy_forward(self.w, self.config, self.x[:batch])

    def scores(self, start: int, count: int) -> np.ndarray:
        return numpy_forward(self.w, self.config, self.x[start : start + count])

    def outputs(self) -> np.ndarray:
        return self.scores(0, IMAGES)


class TorchEngine(Engine):
    def __init__(self, spec: Spec, inputs: Inputs, workdir: str):
        import torch

        self.torch = torch
        self.w, self.config, _ = float_weights(spec.source)
        # the device EdgeViT's default backend would use: a GPU where there is one
        self.on = "cuda" if torch.cuda.is_available() else "cpu"
        name = torch.cuda.get_device_name() if self.on == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        self.device = f"{name} (torch {torch.__version__})"
        self.model = torch_vit(self.w, self.config).to(self.on)
        self.x = torch.from_numpy(inputs.x).to(self.on)
        self.batches = spec.batches

    def _sync(self) -> None:
        if self.on == "cuda":  # a GPU call returns before the work is done
            self.torch.cuda.synchronize()

    def forward(self, batch: int) -> None:
        with self.torch.inference_mode():
            self.model(self.x[:batch])
        self._sync()

    def scores(self, start: int, count: int) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.x[start : start + count]).cpu().numpy()

    def outputs(self) -> np.ndarray:
        return self.scores(0, IMAGES)

    def training(self):
        """The same step as edgevit.trainer (AdamW, weight decay, label smoothing) on the same batches,
        on a model of its own (the inference model keeps its weights)."""
        torch, s = self.torch, TrainSettings(batch_size=TRAIN_BATCH)
        model = torch_vit(self.w, self.config).to(self.on).train()
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)

        def step(x: np.ndarray, y: np.ndarray) -> float:
            x, y = torch.from_numpy(x).to(self.on), torch.from_numpy(y).to(self.on).long()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=s.label_smoothing)
            loss.backward()
            opt.step()
            return loss.item()  # waits for the step, as EdgeViT's train_step does

        with np.load(self.batches) as saved:
            return _cycling(step, list(zip(saved["x"], saved["y"])))


class OnnxRuntimeEngine(Engine):
    def __init__(self, spec: Spec, inputs: Inputs, workdir: str):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(spec.source, providers=ORT_PROVIDERS)
        self.scheme = spec.scheme
        self.device, self.x = f"CPU (onnxruntime {onnxruntime.__version__})", inputs.x

    def forward(self, batch: int) -> None:
        self.session.run(None, {"images": self.x[:batch]})

    def path(self) -> str | None:
        return f"int8 ({PEER_NAMES['onnxruntime']}'s kernels)" if "int8" in self.scheme else super().path()

    def scores(self, start: int, count: int) -> np.ndarray:
        return self.session.run(None, {"images": self.x[start : start + count]})[0]

    def outputs(self) -> np.ndarray:
        return self.scores(0, IMAGES)


class OpenVinoEngine(Engine):
    def __init__(self, spec: Spec, inputs: Inputs, workdir: str):
        import openvino

        config = OPENVINO_CONFIG | (OPENVINO_F32 if spec.scheme == "fp32" else {})
        compiled = openvino.Core().compile_model(spec.source, "CPU", config)
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # what it computes in: f32, bf16
        self.request, self.scheme = compiled.create_infer_request(), spec.scheme
        version = openvino.__version__.split("-")[0]
        self.device, self.x = f"CPU (openvino {version}, inference precision {self.precision})", inputs.x

    def forward(self, batch: int) -> None:
        self.request.infer({0: self.x[:batch]})

    def scores(self, start: int, count: int) -> np.ndarray:
        return self.request.infer({0: self.x[start : start + count]})[0]

    def outputs(self) -> np.ndarray:
        return self.scores(0, IMAGES)

    def path(self) -> str | None:
        kernels = f"({PEER_NAMES['openvino']}'s kernels)"
        if self.scheme == "int8-nncf":
            return f"int8 {kernels}"
        return f"{self.precision} {kernels}" if self.precision != "f32" else super().path()


ENGINES = {
    "edgevit": EdgeViTEngine,
    "c": CEngine,
    "numpy": NumpyEngine,
    "pytorch": TorchEngine,
    "onnxruntime": OnnxRuntimeEngine,
    "openvino": OpenVinoEngine,
}


def start_engine(spec: Spec, inputs: Inputs, workdir: str) -> Engine:
    """Build a row's runtime (in its worker), timing the build and first batch-1 call, and warm it up."""
    if spec.int8:
        os.environ["EDGEVIT_INT8"] = spec.int8  # read by the int8 kernels at their first product
    start = time.perf_counter()
    engine = ENGINES[spec.runtime](spec, inputs, workdir)
    engine.forward(1)
    engine.compile_s = time.perf_counter() - start
    for _ in range(WARMUP_CALLS):
        engine.forward(1)
    for batch in BATCHES:
        engine.forward(batch)  # compiles the graph of this size, for the runtimes that have one
    if spec.trains:
        engine.train = engine.training()
        for _ in range(WARMUP_STEPS):
            engine.train()
    settle()  # before the next row starts
    return engine


# --- the run: files, workers, checks, rounds ---------------------------------------------------------
def print_load(when: str) -> None:
    """The machine's load average, on stderr: other processes on a busy machine slow the rows that use
    every core, PyTorch's most of all (its threads spin at each barrier waiting for a descheduled one)."""
    print(f"load average {when}: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", file=sys.stderr, flush=True)


def missing_peers(without: list[str]) -> dict[str, str]:
    """Peer -> why it is not measured here."""
    missing = {peer: "left out by --without" for peer in without}
    for peer, modules in PEERS.items():
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        if peer not in missing and absent:
            missing[peer] = f"not installed: {', '.join(absent)}"
    return missing


def prepare_files(weights: Path, schemes: tuple[str, ...], peers: list[str], quick: bool, tmp: Path) -> dict:
    """(runtime, scheme) -> the file that row runs: quantized weights for EdgeViT, ONNX (or OpenVINO's
    own model, for NNCF's int8) for the ONNX peers. A quick run has the fp32 peers only."""
    files = {(runtime, "fp32"): weights for runtime in ("edgevit", "c", "numpy", "pytorch")}
    for scheme in schemes[1:]:
        files["edgevit", scheme] = files["c", scheme] = tmp / f"{scheme}.safetensors"
        quantize_file(weights, files["edgevit", scheme], scheme)
    if {"onnxruntime", "openvino"} & set(peers):
        onnx = tmp / "edgevit.onnx"
        w, config, _ = float_weights(weights)
        export_onnx(w, config, onnx)
        files["onnxruntime", "fp32"] = files["openvino", "fp32"] = onnx
        if not quick:  # a quick run is fp32 only
            files["openvino", "bf16-default"] = onnx
        quantizers = {
            ("onnxruntime", "int8-dynamic"): quantize_onnx_int8,
            ("onnxruntime", "int8-static"): lambda src, out: quantize_onnx_static(src, out, weights),
            ("openvino", "int8-nncf"): lambda src, out: quantize_openvino_nncf(src, out, weights),
        }
        for (runtime, scheme), quantize in quantizers.items() if not quick else ():
            if runtime in peers and not missing_modules(runtime, scheme):
                out = tmp / f"edgevit-{runtime}-{scheme}.{'xml' if runtime == 'openvino' else 'onnx'}"
                quantize(onnx, out)
                files[runtime, scheme] = out
    return files


def missing_modules(runtime: str, scheme: str) -> list[str]:
    """The modules a peer row needs beyond its peer's (NNCF for OpenVINO's int8) that are not installed."""
    return [m for m in ROW_MODULES.get((runtime, scheme), ()) if importlib.util.find_spec(m) is None]


def calibration_images(weights: Path, count: int) -> np.ndarray:
    """The first `count` training images, normalised as the model was trained: what the static int8
    peers calibrate on."""
    model = ModelFile.open(weights, float_only=True)
    pixels = load_dataset().train.images[:count].astype(np.float32)
    return normalize(pixels, model.mean, model.std).reshape(count, 1, 28, 28)


def quantize_onnx_int8(source: Path, out: Path) -> None:
    """ONNX Runtime's dynamic quantization: int8 weights, one scale per output channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # it advises "pre-processing" on the root logger: noise on stderr here
    try:
        quantize_dynamic(source, out, per_channel=True, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def quantize_onnx_static(source: Path, out: Path, weights: Path) -> None:
    """ONNX Runtime's static quantization: QDQ, int8 weights per output channel and int8 activations,
    their ranges calibrated on CALIBRATION_IMAGES training images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.split(calibration_images(weights, CALIBRATION_IMAGES), CALIBRATION_IMAGES // 64))

        def get_next(self):
            return next(({"images": b} for b in self.batches), None)

    logging.disable(logging.WARNING)  # as in quantize_onnx_int8
    try:
        quantize_static(
            source,
            out,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        logging.disable(logging.NOTSET)


def quantize_openvino_nncf(source: Path, out: Path, weights: Path) -> None:
    """OpenVINO int8 through NNCF's post-training quantization (its default preset), calibrated on
    NNCF_CALIBRATION_IMAGES training images; saved as OpenVINO's own model (out and its .bin)."""
    import nncf
    import openvino

    images = calibration_images(weights, NNCF_CALIBRATION_IMAGES)
    logging.disable(logging.WARNING)  # NNCF logs advice on the root logger and draws progress bars on stdout
    try:
        dataset = nncf.Dataset([images[i : i + 1] for i in range(len(images))])
        with contextlib.redirect_stdout(sys.stderr):
            quantized = nncf.quantize(openvino.Core().read_model(source), dataset, subset_size=len(images))
    finally:
        logging.disable(logging.NOTSET)
    openvino.save_model(quantized, out)


def write_training_batches(weights: Path, out: Path) -> str:
    """The recipe's first TRAIN_BATCHES batches of epoch 0, from a Trainer's own batch(): EdgeViT's
    training row draws the same from its Trainer, PyTorch's reads them from `out` (building a Trainer
    would add about 600 MiB to its peak memory)."""
    from edgevit.training.trainer import Trainer

    trainer = Trainer(ModelFile.open(weights).config, TrainSettings(batch_size=TRAIN_BATCH), load_dataset())
    xs, ys = zip(*(trainer.batch(0, i) for i in range(TRAIN_BATCHES)))
    np.savez(out, x=np.stack(xs), y=np.stack(ys))
    return str(out)


def plan(
    files: dict, schemes: tuple[str, ...], peers: list[str], quick: bool, batches: str | None, search: bool = True
) -> list[Spec]:
    """The rows, references first. PyTorch (given `batches`) and fp32 EdgeViT train, EdgeViT both
    without a search and with it (as the shipped weights were trained: the first search of a training
    step takes about 11 minutes on this machine, then comes from EdgeViT's compile cache, which
    outlives the run); w8a8 EdgeViT also runs searched. --quick trains nothing and, like `search`
    False (--no-search), leaves the searched rows out."""
    specs = [Spec("numpy", "fp32", str(files["numpy", "fp32"]))]
    for runtime, scheme in PEER_ROWS:
        if scheme == "bf16-default" and not cpu_flags() & BF16_FLAGS:
            continue  # OpenVINO's default is f32 here: the fp32 row
        if runtime in peers and (runtime, scheme) in files:
            trains = runtime == "pytorch" and batches is not None
            specs.append(Spec(runtime, scheme, str(files[runtime, scheme]), trains=trains, batches=batches if trains else None))
    specs += [Spec("edgevit", s, str(files["edgevit", s]), trains=s == "fp32" and not quick) for s in schemes]
    searched = [s for s in SEARCHED_SCHEMES if s in schemes] if search and not quick else []
    specs += [Spec("edgevit", s, str(files["edgevit", s]), beam=SEARCHED, trains=s == "fp32") for s in searched]
    specs += [Spec("c", s, str(files["c", s])) for s in schemes if s in C_EXPORTABLE]
    if "w8a8" in schemes and cpu_flags() >= AMX_FLAGS:
        specs.append(Spec("c", "w8a8", str(files["c", "w8a8"]), int8="vnni"))
    return specs


def edgevit_logits(weights: Path, x: np.ndarray) -> np.ndarray:
    """EdgeViT's own fp32 logits, the yardstick of every check."""
    from tinygrad import Tensor

    return ModelFile.open(weights).build()(Tensor(x)).numpy()


def check(spec: Spec, got: np.ndarray, expected: np.ndarray) -> dict:
    """A reference row's outputs against EdgeViT's, before anything is timed: logits within FLOAT_ATOL,
    or for the 8-bit and bf16 peers, predictions agreeing on INT8_AGREEMENT of the images."""
    diff = float(np.abs(got - expected).max())
    agreement = float((got.argmax(-1) == expected.argmax(-1)).mean())
    if spec.scheme != "fp32":
        ok, result = agreement >= INT8_AGREEMENT, f"predictions agree on {agreement:.1%} (bound >= {INT8_AGREEMENT:.0%})"
    else:
        ok, result = diff <= FLOAT_ATOL, f"max |logit difference| {diff:.1e} (bound {FLOAT_ATOL:.0e})"
    if not ok:
        raise EdgeViTError(f"{spec.name} disagrees with EdgeViT: {result}: not timing it")
    print(f"{spec.name} checked against EdgeViT fp32 on {len(got)} test images: {result}", file=sys.stderr)
    return {"max_logit_diff": diff, "prediction_agreement": agreement}


def start_workers(specs: list[Spec], inputs: Inputs, workdir: Path, expected: np.ndarray, stack) -> dict:
    """Spec -> (worker, its row so far), started one after another so each compile time is its own."""
    started = {}
    for n, spec in enumerate(specs, 1):
        search = " (a kernel search: minutes the first time, then from the cache)" if spec.beam else ""
        print(f"starting {spec.name}, row {n} of {len(specs)}{search}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        worker = stack.enter_context(Worker(start_engine, spec, inputs, str(workdir)))
        print(f"started {spec.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        row = dict.fromkeys(KEYS) | worker.call("describe")
        row.update(
            runtime=spec.runtime,
            scheme=spec.scheme,
            beam={"edgevit": spec.beam or 0, "c": LIBRARY_BEAM}.get(spec.runtime),
            int8=spec.int8,
        )
        if spec.runtime in REFERENCES:
            row |= check(spec, worker.call("outputs"), expected)
        row["accuracy"] = worker.call("accuracy", inputs.labels)
        started[spec] = worker, row
    return started


def run_rounds(workers: dict[Spec, Worker], effort: Effort) -> dict[Spec, list[dict]]:
    """Every row's timing blocks, one per round, rows taking turns within each round."""
    blocks = {spec: [] for spec in workers}
    specs = list(workers)
    for r in range(effort.rounds):
        print(f"round {r + 1}/{effort.rounds}", file=sys.stderr, flush=True)
        # each round starts one row further on, so no row always runs right after the same neighbour
        for spec in specs[r % len(specs) :] + specs[: r % len(specs)]:
            blocks[spec].append(workers[spec].call("block", effort))
    return blocks


def summarise(blocks: list[dict]) -> dict:
    """A row's figures from its blocks: batch-1 median and p90 over every call of every round; images/s
    the median of the per-round figures (the per-round figures are kept too)."""
    times_ms = np.concatenate([b["batch1_s"] for b in blocks]) * 1e3
    row = {"rounds": len(blocks), "batch1_calls": len(times_ms)}
    row["batch1_ms_median"], row["batch1_ms_p90"] = float(np.median(times_ms)), float(np.percentile(times_ms, 90))
    row["batch1_ms_rounds"] = [float(np.median(b["batch1_s"]) * 1e3) for b in blocks]
    for key in ("batch64_ips", "batch256_ips", "train_ips"):
        per_round = [b[key] for b in blocks if key in b]
        row[f"{key}_rounds"] = per_round or None
        row[key] = float(np.median(per_round)) if per_round else None
    return row


def measure(specs: list[Spec], inputs: Inputs, workdir: Path, expected: np.ndarray, effort: Effort) -> list[dict]:
    """Every row's figures, from workers that live for the whole run."""
    with contextlib.ExitStack() as stack:
        started = start_workers(specs, inputs, workdir, expected, stack)
        blocks = run_rounds({spec: worker for spec, (worker, _) in started.items()}, effort)
        rows = []
        for spec, (worker, row) in started.items():
            rows.append(row | summarise(blocks[spec]) | {"peak_rss_mb": worker.call("peak_rss_mb")})
    return rows


def add_rooflines(rows: list[dict], macs: int, mhz: float | None) -> None:
    """Each row's images/s as a fraction of its path's peak: batch 1 on one core, batch 256 on all.
    One image's products are too small for AMX's tiles (the template's EDGEVIT_AMX_MIN_ROWS): at batch
    1 an AMX row is measured against vpdpbusd's peak, the path it takes there."""
    if mhz is None:
        return
    hz = mhz * 1e6
    for row in rows:
        path = row["path"] or ""
        one, every = _peak("vpdpbusd (AVX512-VNNI)" if path.startswith("tdpbssd") else path), _peak(path)
        if one and row["batch1_ms_median"]:
            row["roofline_batch1"] = 1e3 / row["batch1_ms_median"] * macs / (one * hz)
        if every and row["batch256_ips"]:
            row["roofline_batch256"] = row["batch256_ips"] * macs / (every * hz * usable_cores())


def _peak(path: str) -> int | None:
    """A path's peak multiply-adds per cycle and core; a peer's own int8 or bf16 kernels, the best
    path this CPU has for the type."""
    for prefix, choices in BEST_PATHS.items():
        if path.startswith(prefix):
            path = next((best for flag, best in choices if flag in cpu_flags()), path)
    return next((v for name, v in PEAK_MACS_PER_CYCLE.items() if path.startswith(name)), None)


# --- whole-program timings ----------------------------------------------------------------------------
def classify_walls(path: Path, runtime: str, beam: int | None, int8: str | None = None) -> tuple[float, float]:
    """Wall time of `edgevit-classify SAMPLE` with an empty cache, then again with it warm (with
    EDGEVIT_INT8=`int8` where given)."""
    cmd = [str(Path(sys.executable).parent / "edgevit-classify"), str(SAMPLE), "--weights", str(path)]
    cmd += ["--beam", str(beam)] if beam else []
    if runtime == "pytorch":
        cmd = [sys.executable, __file__, "--classify-with-pytorch", str(path), str(SAMPLE)]
    elif runtime == "c":
        cmd += ["--runtime", "c"]
    walls = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "EDGEVIT_CACHE": cache} | ({"EDGEVIT_INT8": int8} if int8 else {})
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


# --- report ---------------------------------------------------------------------------------------------
def label(row: dict) -> str:
    name = f"{row['runtime']} (BEAM={row['beam']})" if row["runtime"] == "edgevit" and row["beam"] else row["runtime"]
    return name + (f" EDGEVIT_INT8={row['int8']}" if row["int8"] else "")


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _ratio(value, reference: dict | None, key: str) -> str:
    ref = reference and reference[key]
    return "–" if value is None or not ref else f"{value / ref:.2f}x"


def best_peer(rows: list[dict], key: str) -> dict | None:
    """The peer row with the lowest batch-1 latency or the most images/s."""
    peers = [r for r in rows if r["runtime"] in PEERS and r[key] is not None]
    pick = min if _lower_is_better(key) else max
    return pick(peers, key=lambda r: r[key], default=None)


def markdown(rows: list[dict]) -> str:
    pytorch = next((r for r in rows if r["runtime"] == "pytorch"), None)
    best = {key: best_peer(rows, key) for key in COLUMNS}
    header = ["runtime", "scheme", "train img/s", "batch-1 ms (median / p90)", "batch-64 img/s", "batch-256 img/s"]
    header += ["accuracy", "compile s", "classify cold / warm s", "peak RSS MiB", "products on", "roofline batch 1 / 256"]
    header += [f"{what} vs PyTorch / best peer" for what in COLUMNS.values()] + ["train vs PyTorch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            label(r),
            r["scheme"],
            _fmt(r["train_ips"], ",.0f"),
            f"{_fmt(r['batch1_ms_median'], '.3f')} / {_fmt(r['batch1_ms_p90'], '.3f')}",
            _fmt(r["batch64_ips"], ",.0f"),
            _fmt(r["batch256_ips"], ",.0f"),
            _fmt(r["accuracy"], ".2%"),
            _fmt(r["compile_s"], ".2f"),
            f"{_fmt(r['classify_cold_s'], '.2f')} / {_fmt(r['classify_warm_s'], '.2f')}",
            _fmt(r["peak_rss_mb"], ".0f"),
            r["path"] or "–",
            f"{_fmt(r['roofline_batch1'], '.1%')} / {_fmt(r['roofline_batch256'], '.1%')}",
        ]
        cells += [f"{_ratio(r[k], pytorch, k)} / {_ratio(r[k], best[k], k)}" for k in best]
        cells.append(_ratio(r["train_ips"], pytorch, "train_ips"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _lower_is_better(key: str) -> bool:
    return key.startswith("batch1_ms")  # latencies; every other figure is images/s


def _figure(row: dict, key: str) -> str:
    value = f"{row[key]:.3f} ms" if _lower_is_better(key) else f"{row[key]:,.0f} img/s"
    return f"{label(row)} {row['scheme']} {value}"


def _judge(title: str, runtime: str, key: str, reference: str, bound: float, rows: list[dict]) -> list[str]:
    ref = best_peer(rows, key) if reference == "best peer" else next((r for r in rows if r["runtime"] == reference), None)
    sign = "<=" if _lower_is_better(key) else ">="
    title = f"{title} {sign} {bound:.2f}x {'the best peer' if reference == 'best peer' else 'PyTorch'}"
    judged = [r for r in rows if r["runtime"] == runtime and r[key] is not None]
    if ref is None or not judged:
        return [f"{title}: not judged (no {reference if ref is None else runtime} figure in this run)"]
    lines = []
    for r in judged:
        ratio = r[key] / ref[key]
        met = ratio <= bound if _lower_is_better(key) else ratio >= bound
        lines.append(f"{title}: {_figure(r, key)} vs {_figure(ref, key)} = {ratio:.2f}x: {'met' if met else 'MISSED'}")
    return lines


def _eight_bit(rows: list[dict], key: str) -> str:
    """C with 8-bit weights (int8 or w8a8, whichever is faster here) against C fp32, as a speed-up."""
    title = f"C runtime 8-bit weights >= {EIGHT_BIT_SPEEDUP:.2f}x C fp32's speed at {COLUMNS[key]}"
    c = {r["scheme"]: r for r in rows if r["runtime"] == "c" and r["int8"] is None and r[key] is not None}
    eight = [c[s] for s in C_8BIT if s in c]
    if "fp32" not in c or not eight:
        return f"{title}: not judged (no C fp32 and 8-bit figures in this run)"
    latency = _lower_is_better(key)
    fast = (min if latency else max)(eight, key=lambda r: r[key])
    speedup = c["fp32"][key] / fast[key] if latency else fast[key] / c["fp32"][key]
    verdict = "met" if speedup >= EIGHT_BIT_SPEEDUP else "MISSED"
    return f"{title}: {_figure(fast, key)} vs {_figure(c['fp32'], key)} = {speedup:.2f}x speed-up: {verdict}"


def _close_to_the_silicon(rows: list[dict]) -> list[str]:
    """The w8a8 targets against C w8a8 on vpdpbusd (the EDGEVIT_INT8=vnni row; on a CPU without AMX,
    the C w8a8 row itself): C 3x its images/s at batch 256 and at most BATCH1_MS at batch 1, the
    tinygrad runtime at least its images/s."""
    w8a8 = [r for r in rows if r["scheme"] == "w8a8"]
    base = next((r for r in w8a8 if r["runtime"] == "c" and r["int8"] == "vnni"), None)
    base = base or next((r for r in w8a8 if r["runtime"] == "c"), None)
    if base is None or base["batch256_ips"] is None:
        return ["w8a8 targets: not judged (no C w8a8 row in this run)"]
    lines = []
    for r in w8a8:
        if r is base or r["batch256_ips"] is None:
            continue
        bound = AMX_SPEEDUP if r["runtime"] == "c" else 1.0
        ratio = r["batch256_ips"] / base["batch256_ips"]
        verdict = "met" if ratio >= bound else "MISSED"
        title = f"{label(r)} w8a8 batch-256 images/s >= {bound:.2f}x C w8a8 on vpdpbusd"
        lines.append(f"{title}: {_figure(r, 'batch256_ips')} vs {_figure(base, 'batch256_ips')} = {ratio:.2f}x: {verdict}")
    for r in w8a8:
        if r["runtime"] == "c" and r["int8"] is None and r["batch1_ms_median"] is not None:
            verdict = "met" if r["batch1_ms_median"] <= BATCH1_MS else "MISSED"
            lines.append(f"C w8a8 batch-1 latency <= {BATCH1_MS:.3f} ms: {_figure(r, 'batch1_ms_median')}: {verdict}")
    return lines


def targets(rows: list[dict]) -> list[str]:
    """The performance issues' targets, each met or MISSED from this run's figures."""
    c_latency, c_throughput, tinygrad_throughput, training = (_judge(*t, rows) for t in TARGETS)
    eight_bit = [_eight_bit(rows, key) for key in EIGHT_BIT_COLUMNS]
    return [*c_latency, *eight_bit, *c_throughput, *tinygrad_throughput, *training, *_close_to_the_silicon(rows)]


def best_peers_line(rows: list[dict]) -> str:
    best = {key: best_peer(rows, key) for key in COLUMNS}
    parts = [f"{what} {_figure(best[key], key) if best[key] else '–'}" for key, what in COLUMNS.items()]
    return "Best peer per column: " + "; ".join(parts)


# --- command line -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.py", description="EdgeViT against its peers, same model and weights.")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="an fp32 weights file (default: the shipped one)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    p.add_argument("--quick", action="store_true", help="smoke run: fp32 only, few calls, no training or cold starts")
    p.add_argument(
        "--without", action="append", default=[], choices=PEERS, metavar="PEER", help="leave a peer out, as if not installed"
    )
    p.add_argument(
        "--no-search",
        action="store_true",
        help=f"leave out the BEAM={SEARCHED} rows (their first kernel search takes minutes, longer on a busy machine)",
    )
    p.add_argument("--classify-with-pytorch", nargs=2, metavar=("WEIGHTS", "IMAGE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.classify_with_pytorch:
        return classify_with_pytorch(*args.classify_with_pytorch)

    float_model = ModelFile.open(args.weights, float_only=True)
    mean, std = float_model.mean, float_model.std
    missing = missing_peers(args.without)
    peers = [peer for peer in PEERS if peer not in missing]
    for runtime, scheme in ROW_MODULES:
        if runtime in peers and (absent := missing_modules(runtime, scheme)):
            missing[f"{runtime} {scheme}"] = f"not installed: {', '.join(absent)}"
    if missing:
        reasons = ", ".join(f"{peer} ({why})" for peer, why in missing.items())
        print(f"peers missing, measuring the rest: {reasons}; pip install -e '.[bench]' adds them", file=sys.stderr)
    effort = QUICK if args.quick else FULL
    schemes = ("fp32",) if args.quick else ("fp32", *QUANTIZED)
    test = load_dataset().test
    pixels = test.images[:ACCURACY_IMAGES].astype(np.float32)
    inputs = Inputs(pixels, normalize(pixels, mean, std), test.labels[:ACCURACY_IMAGES])
    print_load("at start")
    with tempfile.TemporaryDirectory() as tmp:
        files = prepare_files(args.weights, schemes, peers, args.quick, Path(tmp))
        trains = not args.quick and "pytorch" in peers
        batches = write_training_batches(args.weights, Path(tmp) / "batches.npz") if trains else None
        specs = plan(files, schemes, peers, args.quick, batches, search=not args.no_search)
        if args.no_search and not args.quick:
            print(f"left out by --no-search: the BEAM={SEARCHED} rows ({', '.join(SEARCHED_SCHEMES)})", file=sys.stderr)
        rows = measure(specs, inputs, Path(tmp), edgevit_logits(args.weights, inputs.x[:IMAGES]), effort)
        if not args.quick:
            for spec, row in zip(specs, rows):
                if spec.runtime in ("edgevit", "c", "pytorch"):  # the ones with a command line
                    row["classify_cold_s"], row["classify_warm_s"] = classify_walls(
                        Path(spec.source), spec.runtime, spec.beam, spec.int8
                    )
    mhz = cpu_mhz()
    add_rooflines(rows, macs_per_image(float_model.config), mhz)
    print_load("at the end")
    clock = f"{mhz:,.0f} MHz as /proc/cpuinfo shows it" if mhz else "clock unknown: no rooflines"
    print(f"CPU: {cpu_description()}; {clock}; {macs_per_image(float_model.config):,} multiply-adds per image\n")
    print(markdown(rows))
    print()
    print(best_peers_line(rows))
    print()
    for line in targets(rows):
        print(f"- {line}")
    if args.json:
        atomic_write(
            args.json, lambda tmp: tmp.write_text(json.dumps({"cpu": cpu_description(), "rows": rows}, indent=1) + "\n")
        )
    return 0


if __name__ == "__main__":
    run("bench.py", main)
