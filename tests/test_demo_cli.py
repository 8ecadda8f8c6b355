"""`edgevit-demo`: the site written as static files, and served on 127.0.0.1."""

import json
import subprocess
import sys
import urllib.request

from conftest import ROOT, run_module

from edgevit.demo.site import CONFIG_NAME, MARKER, STATIC_FILES, WASM_NAME, WEBGPU_GRAPH, WEBGPU_WEIGHTS


def test_export_writes_a_static_site(tiny_weights, tmp_path):
    done = run_module("edgevit.cli.demo", "--weights", str(tiny_weights), "--export", str(tmp_path / "site"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == sorted(
        [*STATIC_FILES, WASM_NAME, WEBGPU_GRAPH, WEBGPU_WEIGHTS, CONFIG_NAME, MARKER]
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = run_module("edgevit.cli.demo", "--weights", str(tiny_weights), "--export", str(tmp_path / "mine"))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "not replacing it" in refused.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_serves_the_site_and_reuses_it_for_the_same_weights(tiny_weights, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "EDGEVIT_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    for state in ("built", "cached"):
        cmd = [sys.executable, "-c", "from edgevit.cli.demo import main; main()", "--weights", str(tiny_weights), "--port", "0"]
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        try:
            line = server.stdout.readline()
            assert f"({state} site " in line, line + server.stderr.read()
            url = line.rsplit(" ", 1)[1].strip()
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(url + CONFIG_NAME) as response:
                assert json.loads(response.read())["depth"] == 2
            with urllib.request.urlopen(url + WASM_NAME) as response:
                assert response.headers["Content-Type"] == "application/wasm"
        finally:
            server.terminate()
            server.wait(timeout=30)
