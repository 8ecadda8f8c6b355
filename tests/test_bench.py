"""tools/bench.py: the quick run end to end, a run with peers left out, the peer row the quick run
skips, the arithmetic of the figures, ratios and targets, and the worker processes the rows live in."""

import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SHIPPED

sys.path.insert(0, str(ROOT / "tools"))
import bench

from edgevit.data import normalize
from edgevit.errors import EdgeViTError
from edgevit.measure import Worker, WorkerError
from edgevit.weights import ModelFile

ONNX_PEERS = ("onnxruntime", "openvino")
MISSING_LINE = "peers missing"


def installed(peer: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in bench.PEERS[peer])


def missing_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(MISSING_LINE)]


def check_measured(r: dict, effort: bench.Effort) -> None:
    """A row as `measure` returns it: every key, figures from every round, references checked."""
    assert set(r) == set(bench.KEYS)
    assert r["scheme"] == "fp32" and r["device"]
    assert r["rounds"] == effort.rounds == len(r["batch1_ms_rounds"]) == len(r["batch256_ips_rounds"])
    assert r["batch1_calls"] >= effort.rounds * effort.batch1_min_calls
    assert r["batch1_ms_median"] > 0 and r["batch1_ms_p90"] >= r["batch1_ms_median"]
    assert r["batch64_ips"] > 0 and r["batch256_ips"] > 0 and r["peak_rss_mb"] > 10 and r["compile_s"] > 0
    assert r["train_ips"] is None and r["train_ips_rounds"] is None  # a smoke run trains nothing
    assert r["accuracy"] > 0.98  # the likeliest digit of bench.ACCURACY_IMAGES test images
    if r["runtime"] in bench.REFERENCES:  # checked against EdgeViT before timing
        assert r["max_logit_diff"] <= bench.FLOAT_ATOL and r["prediction_agreement"] > bench.INT8_AGREEMENT
    else:
        assert r["max_logit_diff"] is None and r["prediction_agreement"] is None


# --- whole runs ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_quick_bench_writes_a_table_and_json_rows(tmp_path):
    """The smoke run of `make`'s README and CI, with whichever peers this venv has."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, ROOT / "tools" / "bench.py", "--quick", "--json", out], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["cpu"] in done.stdout and "cores" in result["cpu"]  # which CPU ran it, in the table and the file
    rows = result["rows"]
    peers = [peer for peer in bench.PEERS if installed(peer)]
    assert [r["runtime"] for r in rows] == ["numpy", *peers, "edgevit", "c"]  # plan's order: references first
    for r in rows:
        check_measured(r, bench.QUICK)
    assert [r["beam"] for r in rows if r["runtime"] in ("edgevit", "c")] == [0, bench.LIBRARY_BEAM]
    for runtime in ("numpy", *peers):
        assert f"{runtime} fp32 checked against EdgeViT fp32 on {bench.IMAGES} test images" in done.stderr
    absent = [peer for peer in bench.PEERS if peer not in peers]
    assert len(missing_lines(done.stderr)) == (1 if absent else 0)
    assert all(f"{peer} (not installed" in done.stderr for peer in absent)
    assert "| runtime | scheme |" in done.stdout and "batch 256 vs PyTorch / best peer" in done.stdout
    assert "C runtime batch-1 latency <= 0.60x the best peer" in done.stdout
    assert ("Best peer per column: batch 1 –" in done.stdout) == (not peers)


def test_peers_left_out_are_named_and_the_rest_measured(tmp_path, capsys, monkeypatch):
    """--without: one stderr line names the peers left out and the other rows run. The EdgeViT and C
    rows are dropped from the plan here (the quick run above measures them) to keep this test short."""
    plan = bench.plan
    monkeypatch.setattr(bench, "plan", lambda *a, **k: [s for s in plan(*a, **k) if s.runtime in bench.REFERENCES])
    out = tmp_path / "bench.json"
    argv = ["--quick", "--json", str(out)] + [arg for peer in ONNX_PEERS for arg in ("--without", peer)]
    assert bench.main(argv) == 0
    stdout, stderr = capsys.readouterr()
    (line,) = missing_lines(stderr)
    assert all(f"{peer} (left out by --without)" in line for peer in ONNX_PEERS)
    assert ("pytorch (not installed: torch)" in line) != installed("pytorch")
    rows = json.loads(out.read_text())["rows"]
    assert [r["runtime"] for r in rows] == ["numpy"] + (["pytorch"] if installed("pytorch") else [])
    for r in rows:
        check_measured(r, bench.QUICK)
    assert "C runtime batch-1 latency <= 0.60x the best peer: not judged" in stdout


@pytest.fixture(scope="module")
def inputs(mnist) -> bench.Inputs:
    model = ModelFile.open(SHIPPED)
    pixels = mnist.test.images[: bench.IMAGES].astype(np.float32)
    return bench.Inputs(pixels, normalize(pixels, model.mean, model.std), mnist.test.labels[: bench.IMAGES])


@pytest.mark.parametrize(("runtime", "scheme"), [*sorted(bench.QUANTIZED_PEERS), ("openvino", "bf16-default")])
def test_the_8_bit_and_bf16_peers_agree_with_edgevit_name_their_kernels_and_time(inputs, tmp_path, runtime, scheme):
    """The peer rows a quick run leaves out: ONNX Runtime's dynamic and static int8 and OpenVINO's NNCF
    int8 of the export, each built as the bench builds it, and OpenVINO at its default precision."""
    for module in bench.PEERS[runtime] + bench.ROW_MODULES.get((runtime, scheme), ()):
        pytest.importorskip(module, reason="the peers are the optional [bench] extra")
    if scheme == "bf16-default" and not bench.cpu_flags() & bench.BF16_FLAGS:
        pytest.skip("this CPU has no bf16: OpenVINO's default is its fp32 row")
    files = bench.prepare_files(SHIPPED, ("fp32",), [runtime], quick=False, tmp=tmp_path)
    spec = bench.Spec(runtime, scheme, str(files[runtime, scheme]))
    with Worker(bench.start_engine, spec, inputs, str(tmp_path)) as worker:
        checked = bench.check(spec, worker.call("outputs"), bench.edgevit_logits(SHIPPED, inputs.x))
        accuracy, path = worker.call("accuracy", inputs.labels), worker.call("describe")["path"]
        blocks = [worker.call("block", bench.QUICK) for _ in range(2)]
    assert checked["prediction_agreement"] >= bench.INT8_AGREEMENT
    assert checked["max_logit_diff"] > bench.FLOAT_ATOL  # activations rounded too: not a float row
    assert accuracy > 0.98
    kind = "bf16" if scheme == "bf16-default" else "int8"
    assert path == f"{kind} ({bench.PEER_NAMES[runtime]}'s kernels)"
    row = bench.summarise(blocks)
    assert row["rounds"] == 2 and row["batch1_ms_median"] > 0 and row["batch256_ips"] > 0


# --- the parts without processes ---------------------------------------------------------------------
def test_plan_puts_references_first_and_trains_only_outside_quick_runs(monkeypatch):
    monkeypatch.setattr(bench, "cpu_flags", lambda: {"avx512_vnni"})  # no AMX: no extra C w8a8 row
    runtimes = ("numpy", "edgevit", "c", *bench.PEERS)
    files = {(runtime, scheme): f"{runtime}-{scheme}" for runtime in runtimes for scheme in ("fp32", "int8", "w8a8")}
    files |= {row: "peer-file" for row in bench.PEER_ROWS}  # prepare_files leaves the quantized ones out of quick runs
    quick = bench.plan(files, ("fp32",), list(bench.PEERS), True, None)
    assert [s.name for s in quick] == [
        "numpy fp32",
        "pytorch fp32",
        "onnxruntime fp32",
        "onnxruntime int8-dynamic",
        "onnxruntime int8-static",
        "openvino fp32",
        "openvino int8-nncf",  # no bf16-default: this CPU (no bf16) computes f32 by default
        "edgevit fp32",
        "c fp32",
    ]
    assert not any(s.trains for s in quick)
    full = bench.plan(files, ("fp32", "int8", "w8a8"), ["pytorch"], False, "batches.npz")
    assert [s.name for s in full if s.trains] == ["pytorch fp32", "edgevit fp32", f"edgevit fp32 BEAM={bench.SEARCHED}"]
    assert next(s for s in full if s.runtime == "pytorch").batches == "batches.npz"
    assert [s.name for s in full if s.beam] == [f"edgevit {s} BEAM={bench.SEARCHED}" for s in ("fp32", "w8a8")]
    assert [s.name for s in full if s.runtime == "c"] == ["c fp32", "c int8", "c w8a8"]
    unsearched = bench.plan(files, ("fp32", "int8", "w8a8"), ["pytorch"], False, "batches.npz", search=False)
    assert [s.name for s in unsearched] == [s.name for s in full if not s.beam]


def test_plan_keeps_c_w8a8_on_vpdpbusd_as_a_row_where_the_cpu_has_amx(monkeypatch):
    files = {(runtime, scheme): f"{runtime}-{scheme}" for runtime in ("numpy", "edgevit", "c") for scheme in ("fp32", "w8a8")}
    files |= {("openvino", scheme): "m.onnx" for scheme in ("fp32", "bf16-default")}
    monkeypatch.setattr(bench, "cpu_flags", lambda: {"avx512_vnni", "amx_int8", "amx_tile", "amx_bf16"})
    specs = bench.plan(files, ("fp32", "w8a8"), ["openvino"], False, None, search=False)
    assert [s.name for s in specs if s.runtime == "c"] == ["c fp32", "c w8a8", "c w8a8 EDGEVIT_INT8=vnni"]
    assert [s.name for s in specs if s.runtime == "openvino"] == ["openvino fp32", "openvino bf16-default"]
    monkeypatch.setattr(bench, "cpu_flags", lambda: {"avx512_vnni"})
    assert [s.name for s in bench.plan(files, ("fp32", "w8a8"), [], False, None, search=False) if s.runtime == "c"] == [
        "c fp32",
        "c w8a8",
    ]


def test_missing_peers_names_each_with_its_reason(monkeypatch):
    peers = {"pytorch": ("json",), "onnxruntime": ("json", "no_such_module"), "openvino": ("no_such_module", "nor_this")}
    monkeypatch.setattr(bench, "PEERS", peers)
    assert bench.missing_peers(["pytorch", "openvino"]) == {
        "pytorch": "left out by --without",
        "openvino": "left out by --without",
        "onnxruntime": "not installed: no_such_module",
    }
    assert bench.missing_peers([]) == {
        "onnxruntime": "not installed: no_such_module",
        "openvino": "not installed: no_such_module, nor_this",
    }


def test_check_bounds_float_logits_and_int8_predictions(capsys):
    expected = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.2]], np.float32)
    fp32, int8 = bench.Spec("openvino", "fp32", "m.onnx"), bench.Spec("onnxruntime", "int8-dynamic", "m.onnx")
    checked = bench.check(fp32, expected + 5e-5, expected)
    assert checked == {"max_logit_diff": pytest.approx(5e-5, rel=0.01), "prediction_agreement": 1.0}
    with pytest.raises(EdgeViTError, match=r"openvino fp32 disagrees with EdgeViT: max .* 2\.0e-04"):
        bench.check(fp32, expected + 2e-4, expected)
    assert bench.check(int8, expected + 0.1, expected)["prediction_agreement"] == 1.0  # logits moved, answers kept
    one_wrong = expected.copy()
    one_wrong[0] = [0.0, 1.0]
    with pytest.raises(EdgeViTError, match=r"onnxruntime int8-dynamic disagrees .* agree on 66\.7%"):
        bench.check(int8, one_wrong, expected)
    assert "checked against EdgeViT fp32 on 3 test images" in capsys.readouterr().err


def test_summarise_takes_medians_over_rounds():
    blocks = [
        {"batch1_s": [0.001, 0.002, 0.003], "batch64_ips": 100.0, "batch256_ips": 200.0},
        {"batch1_s": [0.004, 0.005], "batch64_ips": 300.0, "batch256_ips": 100.0},
        {"batch1_s": [0.006], "batch64_ips": 200.0, "batch256_ips": 400.0},
    ]
    row = bench.summarise(blocks)
    assert row["rounds"] == 3 and row["batch1_calls"] == 6
    assert row["batch1_ms_median"] == pytest.approx(3.5)  # over every call of every round
    assert row["batch1_ms_p90"] == pytest.approx(5.5)
    assert row["batch1_ms_rounds"] == pytest.approx([2.0, 4.5, 6.0])
    assert row["batch64_ips"] == 200.0 and row["batch256_ips"] == 200.0
    assert row["batch256_ips_rounds"] == [200.0, 100.0, 400.0]
    assert row["train_ips"] is None and row["train_ips_rounds"] is None  # no block trained
    trained = bench.summarise([b | {"train_ips": ips} for b, ips in zip(blocks, (50.0, 70.0, 60.0))])
    assert trained["train_ips"] == 60.0 and trained["train_ips_rounds"] == [50.0, 70.0, 60.0]


def row(runtime, scheme, b1, b256, train=None, beam=0, **more):
    figures = dict(batch1_ms_median=b1, batch64_ips=b256 / 2, batch256_ips=b256, train_ips=train)
    return dict.fromkeys(bench.KEYS) | dict(runtime=runtime, scheme=scheme, beam=beam) | figures | more


ROWS = [
    row("numpy", "fp32", 0.01, 90_000),  # not a peer: never the best one
    row("pytorch", "fp32", 0.5, 20_000, train=6_000),
    row("onnxruntime", "fp32", 0.25, 18_000),
    row("onnxruntime", "int8-dynamic", 0.2, 17_000),
    row("openvino", "fp32", 0.3, 30_000),
    row("edgevit", "fp32", 0.45, 21_000, train=2_000),
    row("edgevit", "fp32", 0.25, 9_000, beam=2),
    row("c", "fp32", 0.11, 12_000),
    row("c", "int8", 0.08, 9_000),
    row("c", "w8a8", 0.3, 16_000),
]


def lines_with(lines, *parts):
    return [line for line in lines if all(p in line for p in parts)]


def test_best_peer_is_the_fastest_peer_per_column():
    assert bench.best_peer(ROWS, "batch1_ms_median")["runtime"] == "onnxruntime"  # lowest latency: its int8
    assert bench.best_peer(ROWS, "batch1_ms_median")["scheme"] == "int8-dynamic"
    assert bench.best_peer(ROWS, "batch256_ips")["runtime"] == "openvino"  # most images/s; numpy is no peer
    assert bench.best_peer(ROWS, "train_ips")["runtime"] == "pytorch"  # the only peer with the figure
    assert bench.best_peer([r for r in ROWS if r["runtime"] not in bench.PEERS], "batch256_ips") is None


def test_targets_are_judged_against_pytorch_and_the_best_peer():
    lines = bench.targets(ROWS)
    (c_fp32,) = lines_with(lines, "C runtime batch-1 latency", "c fp32")
    assert "vs onnxruntime int8-dynamic 0.200 ms = 0.55x: met" in c_fp32
    (w8a8,) = lines_with(lines, "C runtime batch-1 latency", "c w8a8")
    assert w8a8.endswith("1.50x: MISSED")
    (eight_1,) = lines_with(lines, "8-bit", "batch 1")
    assert "c int8 0.080 ms vs c fp32 0.110 ms = 1.38x speed-up: met" in eight_1  # int8 is the faster at batch 1
    (eight_256,) = lines_with(lines, "8-bit", "batch 256")
    assert "c w8a8 16,000 img/s" in eight_256 and "1.33x speed-up: met" in eight_256  # w8a8 at batch 256
    (c_256,) = lines_with(lines, "C runtime batch-256", "c fp32")
    assert "vs openvino fp32 30,000 img/s = 0.40x: MISSED" in c_256
    assert lines_with(lines, "tinygrad runtime batch-256", "edgevit fp32 21,000", "1.05x: met")
    assert lines_with(lines, "tinygrad runtime batch-256", "edgevit (BEAM=2)", "0.45x: MISSED")
    (training,) = lines_with(lines, "training images/s")
    assert "edgevit fp32 2,000 img/s vs pytorch fp32 6,000 img/s = 0.33x: MISSED" in training


def test_a_ratio_on_its_bound_is_met():
    rows = [row("pytorch", "fp32", 0.5, 20_000), row("c", "fp32", 0.3, 20_000)]  # 0.60x latency, 1.00x images/s
    (latency,) = bench._judge(*bench.TARGETS[0], rows)
    (throughput,) = bench._judge(*bench.TARGETS[1], rows)
    assert latency.endswith("= 0.60x: met") and throughput.endswith("= 1.00x: met")


def test_targets_without_peers_or_8_bit_rows_are_not_judged():
    lines = bench.targets([r for r in ROWS if r["runtime"] not in bench.PEERS and r["scheme"] == "fp32"])
    assert all("not judged" in line for line in lines if "C runtime" in line or "training" in line)
    assert len(lines_with(lines, "not judged")) == len(lines)


AMX_ROWS = [
    row("c", "w8a8", 0.09, 30_000, path="tdpbssd (AMX-INT8)"),
    row("c", "w8a8", 0.09, 25_000, path="vpdpbusd (AVX512-VNNI)", int8="vnni"),
    row("edgevit", "w8a8", 0.13, 17_000, path="tdpbssd (AMX-INT8)"),
]


def test_w8a8_targets_are_judged_against_c_on_vpdpbusd():
    lines = bench._close_to_the_silicon(AMX_ROWS)
    (c,) = lines_with(lines, "c w8a8 batch-256 images/s >= 3.00x C w8a8 on vpdpbusd")
    assert c.endswith("c w8a8 30,000 img/s vs c EDGEVIT_INT8=vnni w8a8 25,000 img/s = 1.20x: MISSED")
    (tinygrad,) = lines_with(lines, "edgevit w8a8 batch-256 images/s >= 1.00x")
    assert tinygrad.endswith("= 0.68x: MISSED")
    (latency,) = lines_with(lines, "batch-1 latency")  # the VNNI row is the reference, not judged
    assert latency == "C w8a8 batch-1 latency <= 0.030 ms: c w8a8 0.090 ms: MISSED"
    assert lines_with(bench.targets(ROWS + AMX_ROWS), "8-bit", "batch 256", "c w8a8 30,000")  # not the VNNI row
    without_amx = bench._close_to_the_silicon([r for r in AMX_ROWS if r["int8"] is None])  # C w8a8 is the reference
    assert lines_with(without_amx, "edgevit w8a8", "vs c w8a8 30,000 img/s = 0.57x: MISSED")
    assert bench._close_to_the_silicon(ROWS[:2]) == ["w8a8 targets: not judged (no C w8a8 row in this run)"]


def test_rooflines_take_each_rows_path_peak_and_amx_rows_at_batch_1_on_vpdpbusd():
    rows = [dict(r) for r in AMX_ROWS] + [row("c", "fp32", 0.1, 10_000, path="fp32 FMA (AVX-512)"), row("x", "y", 1, 1)]
    bench.add_rooflines(rows, macs=2_000_000, mhz=2_000.0)
    cores = bench.usable_cores()
    amx, vnni, _, fp32, unknown = rows
    assert amx["roofline_batch256"] == pytest.approx(30_000 * 2e6 / (1024 * 2e9 * cores))
    assert amx["roofline_batch1"] == pytest.approx(1e3 / 0.09 * 2e6 / (128 * 2e9))  # one image: vpdpbusd's peak
    assert vnni["roofline_batch256"] == pytest.approx(25_000 * 2e6 / (128 * 2e9 * cores))
    assert fp32["roofline_batch1"] == pytest.approx(1e4 * 2e6 / (32 * 2e9))
    assert unknown["roofline_batch1"] is None and unknown["roofline_batch256"] is None  # no path, no peak
    (line,) = lines_with(bench.markdown(rows).splitlines(), "| c EDGEVIT_INT8=vnni | w8a8 |")
    assert f"| vpdpbusd (AVX512-VNNI) | {vnni['roofline_batch1']:.1%} / {vnni['roofline_batch256']:.1%} |" in line


def test_table_gives_ratios_to_pytorch_and_to_the_best_peer():
    table = bench.markdown(ROWS).splitlines()
    assert len(table) == 2 + len(ROWS)
    (c_fp32,) = lines_with(table, "| c | fp32 |")
    assert "| 0.22x / 0.55x | 0.60x / 0.40x | 0.60x / 0.40x | – |" in c_fp32
    (trained,) = lines_with(table, "| edgevit | fp32 |")
    assert trained.endswith("| 0.33x |")
    (searched,) = lines_with(table, "| edgevit (BEAM=2) | fp32 |")
    assert "| 0.50x / 1.25x |" in searched
    no_pytorch = bench.markdown([r for r in ROWS if r["runtime"] != "pytorch"])
    (c_fp32,) = lines_with(no_pytorch.splitlines(), "| c | fp32 |")
    assert "| – / 0.55x | – / 0.40x | – / 0.40x | – |" in c_fp32
    assert "batch 1 onnxruntime int8-dynamic 0.200 ms" in bench.best_peers_line(ROWS)
    assert "batch 256 openvino fp32 30,000 img/s" in bench.best_peers_line(ROWS)


# --- the worker processes -----------------------------------------------------------------------------
def test_a_worker_serves_calls_and_reports_failures():
    with Worker(list, [3, 1, 2]) as worker:
        assert worker.call("sort") is None and worker.call("copy") == [1, 2, 3]
        with pytest.raises(WorkerError, match="IndexError"):
            worker.call("pop", 7)
    with pytest.raises(WorkerError, match="ValueError"):
        Worker(int, "not a number")


BUSY_SCRIPT = """
import queue
from edgevit.cli import run
from edgevit.measure import Worker

def main(argv):
    with Worker(queue.Queue) as worker:
        print(worker.pid, flush=True)
        worker.call("get")  # waits forever, as a row's kernel search waits minutes
    return 0

if __name__ == "__main__":  # a spawned worker imports this file too
    run("busy", main)
"""


def test_sigterm_to_the_bench_alone_stops_its_busy_workers_with_one_line(tmp_path):
    """`kill PID` reaches the parent only (not its process group, as timeout's does): its workers,
    one of them busy, must end with it, and stderr says so in one line, no traceback."""
    script = tmp_path / "busy.py"
    script.write_text(BUSY_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker_pid = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and err.strip() == "busy: terminated"
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)  # reaped, not left running


def test_a_worker_left_by_an_error_ends_at_once():
    with pytest.raises(KeyboardInterrupt), Worker(queue.Queue) as worker:
        raise KeyboardInterrupt
    with pytest.raises(ProcessLookupError):
        os.kill(worker.pid, 0)
