"""The explorer site and its server without a browser: model.json, replacing a site safely, what is sent."""

from __future__ import annotations

import dataclasses
import json
import threading
import urllib.request

import pytest

from edgevit.demo import server, site
from edgevit.errors import EdgeViTError


def test_labels_are_digits_and_an_eleventh_class_is_not_a_digit():
    assert site.class_labels(10, {}) == [str(d) for d in range(10)]
    assert site.class_labels(11, {})[-1] == "not a digit"
    assert site.class_labels(11, {})[:10] == [str(d) for d in range(10)]


def test_labels_from_the_weights_file_win_when_they_fit():
    named = [f"digit {d}" for d in range(10)]
    assert site.class_labels(10, {"labels": named}) == named
    assert site.class_labels(10, {"labels": named[:9]}) == [str(d) for d in range(10)]  # wrong length: ignored


def test_model_json_describes_the_model_and_passes_temperature_on(tmp_path):
    from tinygrad.nn.state import get_state_dict

    from edgevit import weights
    from edgevit.model import ViT, ViTConfig

    cfg = ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32, num_classes=11)
    path = tmp_path / "w.safetensors"
    meta = {"config": dataclasses.asdict(cfg), "preprocess": {"mean": 0.1, "std": 0.3}, "temperature": {"value": 1.7}}
    weights.save(path, get_state_dict(ViT(cfg)), meta)
    wasm = tmp_path / "edgevit.wasm"
    wasm.write_bytes(b"\0asm")
    config = site.model_config(weights.ModelFile.open(path), wasm)
    assert (config["grid"], config["tokens"], config["depth"], config["heads"]) == (4, 17, 1, 2)
    assert config["num_classes"] == len(config["labels"]) == 11 and config["labels"][-1] == "not a digit"
    assert config["temperature"] == 1.7
    assert config["wasm"] == site.WASM_NAME and config["wasm_bytes"] == 4


def test_a_site_is_built_with_everything_the_page_loads(tiny_weights, tmp_path):
    built = site.write_site(tiny_weights, tmp_path / "site")
    assert sorted(p.name for p in built.iterdir()) == sorted(
        [*site.STATIC_FILES, site.WASM_NAME, site.WEBGPU_GRAPH, site.WEBGPU_WEIGHTS, site.CONFIG_NAME, site.MARKER]
    )
    config = json.loads((built / site.CONFIG_NAME).read_text())
    assert config["webgpu"] == {"graph": site.WEBGPU_GRAPH, "weights": site.WEBGPU_WEIGHTS}
    assert json.loads((built / site.WEBGPU_GRAPH).read_text())["model_id"] == config["model_id"]
    assert (built / site.WASM_NAME).read_bytes()[:4] == b"\0asm"
    assert json.loads((built / site.CONFIG_NAME).read_text())["depth"] == 2


def test_write_site_never_replaces_a_directory_it_did_not_build(tiny_weights, tmp_path):
    precious = tmp_path / "site"
    (precious / "src").mkdir(parents=True)
    (precious / "src" / "a.py").write_text("mine")
    (precious / site.CONFIG_NAME).write_text("{}")  # a model.json of its own is not the mark of a built site
    with pytest.raises(EdgeViTError, match="not a site built by edgevit-demo"):
        site.write_site(tiny_weights, precious)
    assert (precious / "src" / "a.py").read_text() == "mine"
    for target in (tmp_path / "a-file", "/"):
        (tmp_path / "a-file").write_text("mine")
        with pytest.raises(EdgeViTError, match=r"not a folder|mount point or the root"):
            site.write_site(tiny_weights, target)
    assert (tmp_path / "a-file").read_text() == "mine"
    built = site.write_site(tiny_weights, tmp_path / "built")
    assert site.write_site(tiny_weights, built) == built  # its own site it replaces


def test_replacing_a_site_leaves_only_the_new_one(tmp_path):
    old, new = tmp_path / "site", tmp_path / "staging"
    for d, text in ((old, "old"), (new, "new")):
        d.mkdir()
        (d / site.CONFIG_NAME).write_text(text)
    site.replace_directory(new, old)
    assert (old / site.CONFIG_NAME).read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


@pytest.fixture
def served(tmp_path):
    for name in ("index.html", "explorer.js", "edgevit.wasm", "webgpu.bin", "model.json", "style.css"):
        (tmp_path / name).write_bytes(b"x")
    httpd = server.make_server(tmp_path, 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.mark.parametrize(
    ("name", "mime"),
    [
        ("edgevit.wasm", "application/wasm"),
        ("webgpu.bin", "application/octet-stream"),
        ("explorer.js", "text/javascript; charset=utf-8"),
        ("model.json", "application/json"),
        ("style.css", "text/css; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
    ],
)
def test_files_are_served_with_their_mime_type_and_isolation_headers(served, name, mime):
    host, port = served.server_address
    assert host == "127.0.0.1"
    with urllib.request.urlopen(f"http://{host}:{port}/{name}") as response:
        assert response.headers["Content-Type"] == mime
        assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
