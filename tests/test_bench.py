import json
import subprocess
import sys

from conftest import ROOT

KEYS = {"runtime", "scheme", "device", "train_ips", "batch1_ms_median", "batch1_ms_p90", "batch64_ips", "batch256_ips"}
KEYS |= {"compile_s", "peak_rss_mb"}


def test_quick_bench_writes_a_table_and_json_rows(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, ROOT / "tools" / "bench.py", "--quick", "--json", out], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    runtimes = {r["runtime"] for r in rows}
    assert {"edgevit", "c", "numpy"} <= runtimes
    for r in rows:
        assert set(r) >= KEYS
        assert r["batch1_ms_median"] > 0 and r["batch1_ms_p90"] >= r["batch1_ms_median"]
        assert r["batch64_ips"] > 0 and r["batch256_ips"] > 0 and r["peak_rss_mb"] > 10
    assert "| runtime | scheme |" in done.stdout and "references agree with EdgeViT" in done.stderr
    if "pytorch" in runtimes:
        assert "vs PyTorch" in done.stdout and ("met" in done.stdout or "MISSED" in done.stdout)
    else:
        assert "PyTorch is not installed" in done.stderr
