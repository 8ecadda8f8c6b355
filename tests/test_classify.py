import io
import json

import numpy as np
import pytest
from conftest import run_module
from PIL import Image


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def classify(*args, weights, cache, **kw):
    env = {"EDGEVIT_WEIGHTS": str(weights), "EDGEVIT_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
    return run_module("edgevit.cli.classify", *args, env=env, **kw)


def test_json_lines_and_exit_codes_with_a_mix_of_good_and_bad_inputs(tiny_weights, tmp_path, mnist):
    folder = tmp_path / "mix"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(mnist.test.images[0]))
    (folder / "b.png").write_bytes(png(255 - mnist.test.images[1]))
    (folder / "blank.png").write_bytes(png(np.zeros((28, 28), np.uint8)))
    (folder / "notes.txt").write_text("not an image, and not picked up: wrong suffix")
    (folder / "fake.jpg").write_bytes(b"this is text")
    (folder / "cut.png").write_bytes(png(mnist.test.images[2])[:80])
    result = classify(str(folder), str(tmp_path / "missing.png"), "--json", weights=tiny_weights, cache=tmp_path / "c")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by_name) == {"a.png", "b.png", "blank.png", "cut.png", "fake.jpg", "missing.png"}
    for good in ("a.png", "b.png"):
        r = by_name[good]
        assert set(r) == {"path", "digit", "confidence", "probs"} and len(r["probs"]) == 10
        assert r["digit"] == int(np.argmax(r["probs"])) and abs(sum(r["probs"]) - 1) < 1e-4
        assert r["confidence"] == max(r["probs"])
    assert by_name["blank.png"]["error"].startswith("no digit found")
    assert by_name["fake.jpg"]["error"].startswith("not an image")
    assert by_name["cut.png"]["error"].startswith("damaged image")
    assert by_name["missing.png"] == {"path": str(tmp_path / "missing.png"), "error": "no such file"}


def test_text_output_topk_stdin_and_success_exit(tiny_weights, tmp_path, mnist):
    data = png(mnist.test.images[3])
    result = classify("-", "--topk", "3", weights=tiny_weights, cache=tmp_path / "c", input=data, text=False)
    assert result.returncode == 0, result.stderr
    path, *ranked = result.stdout.decode().strip().split("\t")
    assert path == "-" and len(ranked) == 3
    percents = [float(r.split()[1].rstrip("%")) for r in ranked]
    assert percents == sorted(percents, reverse=True)


def test_errors_in_text_mode_are_one_line_each(tiny_weights, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = classify(str(empty), weights=tiny_weights, cache=tmp_path / "c")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"edgevit-classify: error: {empty}: directory has no images " + result.stderr.split("no images ")[1].strip()
    ]
    bad = classify("x.png", weights=tmp_path / "nope.safetensors", cache=tmp_path / "c")
    assert bad.returncode == 1 and bad.stderr == f"edgevit-classify: error: {tmp_path / 'nope.safetensors'}: no such file\n"


def test_attention_pictures_one_file_or_a_folder(tiny_weights, tmp_path, mnist):
    one = tmp_path / "one.png"
    (tmp_path / "d0.png").write_bytes(png(mnist.test.images[0]))
    (tmp_path / "d1.png").write_bytes(png(mnist.test.images[1]))
    result = classify(str(tmp_path / "d0.png"), "--attention", str(one), weights=tiny_weights, cache=tmp_path / "c")
    assert result.returncode == 0, result.stderr
    assert Image.open(one).size[0] > 4 * 224  # input, two layers, rollout
    many = tmp_path / "maps"
    result = classify(
        str(tmp_path / "d0.png"), str(tmp_path / "d1.png"), "--attention", str(many), weights=tiny_weights, cache=tmp_path / "c"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in many.iterdir()) == ["d0.png", "d1.png"]


def test_second_run_reuses_the_compiled_graph(tiny_weights, tmp_path, mnist):
    (tmp_path / "d.png").write_bytes(png(mnist.test.images[0]))
    cache = tmp_path / "cache"
    first = classify(str(tmp_path / "d.png"), "--json", weights=tiny_weights, cache=cache)
    [entry] = cache.glob("*.jit")
    stored = entry.stat().st_mtime_ns
    second = classify(str(tmp_path / "d.png"), "--json", weights=tiny_weights, cache=cache)
    assert first.stdout == second.stdout
    assert list(cache.glob("*.jit")) == [entry] and entry.stat().st_mtime_ns == stored  # loaded, not rewritten


def test_explain_prints_each_layers_attention_as_text(tiny_weights, tmp_path, mnist):
    (tmp_path / "d.png").write_bytes(png(mnist.test.images[0]))
    result = classify(str(tmp_path / "d.png"), "--explain", weights=tiny_weights, cache=tmp_path / "c")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(str(tmp_path / "d.png") + "\t")
    assert "Layer 1 of 2" in result.stdout and "Layer 2 of 2" in result.stdout
    assert sum(line.strip().startswith(("r0 ", "r1 ", "r2 ", "r3 ")) for line in lines) == 8  # a 4x4 grid per layer
    as_json = classify(str(tmp_path / "d.png"), "--explain", "--json", weights=tiny_weights, cache=tmp_path / "c")
    assert json.loads(as_json.stdout)["explain"].startswith("Attention, averaged over 2 heads")


def test_not_a_digit_is_an_answer_with_its_reason(rejecting_weights, tmp_path, mnist):
    image = tmp_path / "x.png"
    image.write_bytes(png(mnist.test.images[0]))
    for reason, weights in rejecting_weights.items():
        plain = classify(str(image), "--topk", "2", weights=weights, cache=tmp_path / "c")
        assert plain.returncode == 0, plain.stderr  # an answer, not an error
        _, said, runner_up = plain.stdout.strip().split("\t")
        assert said.startswith("not a digit ") and runner_up.split()[0] in list("0123456789")

        row = json.loads(classify(str(image), "--json", weights=weights, cache=tmp_path / "c").stdout)
        assert row["digit"] is None and row["reason"].startswith("class" if reason == "class" else "low confidence")
        assert len(row["probs"]) == 11 and abs(sum(row["probs"]) - 1) < 1e-4
        # the probability behind "not a digit": the class's own, or that no digit is it
        best_digit = max(row["probs"][:10])
        assert row["confidence"] == pytest.approx(row["probs"][10] if reason == "class" else 1 - best_digit, abs=1e-6)

        forced = json.loads(classify(str(image), "--json", "--always-digit", weights=weights, cache=tmp_path / "c").stdout)
        assert forced["digit"] == int(np.argmax(forced["probs"][:10])) and "reason" not in forced
