"""Hostile inputs, round three: outputs that are not EdgeViT's, files that are not images, files
that may only be read, folders that may not be entered, an environment without a home, a disk that is
full, two runs on one output, and runs that diverge. The unprivileged cases run as `nobody`."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY_FLAGS, run_module, write_dataset
from PIL import Image

from edgevit import export, internals
from edgevit.errors import EdgeViTError
from edgevit.files import OutputLock, default_cache_dir
from edgevit.preprocess import preprocess

SAMPLE = ROOT / "samples" / "mnist-3.png"
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
# as nobody: no cache (no home), and tinygrad compiles in-process: this machine's Python lives under
# /root, where processes it spawns as nobody cannot start (nothing of EdgeViT's is tested by that)
NOBODY_ENV = {"HOME": "/nonexistent", "EDGEVIT_CACHE": "0", "PARALLEL": "0"}
as_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to become nobody")


@pytest.fixture
def public_tmp():
    """A folder `nobody` can reach (pytest's own are private to their user)."""
    path = Path(tempfile.mkdtemp(prefix="edgevit-nobody-"))
    path.chmod(0o755)
    yield path
    for p in path.rglob("*"):
        p.chmod(0o700 if p.is_dir() else 0o600)
    shutil.rmtree(path)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_export_never_writes_into_a_folder_that_is_not_an_export(tiny_weights, tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "main.c").write_text("int main(void) { return 0; }  /* mine */")
    with pytest.raises(EdgeViTError, match="not an EdgeViT export"):
        export.export(tiny_weights, mine)
    assert (mine / "main.c").read_text().endswith("/* mine */") and sorted(p.name for p in mine.iterdir()) == ["main.c"]
    with pytest.raises(EdgeViTError, match="the root or a mount point"):
        export.export(tiny_weights, "/")
    done = export.export(tiny_weights, tmp_path / "fresh")
    assert export.export(tiny_weights, tmp_path / "fresh").files == done.files  # its own folder it rewrites


def test_postscript_and_other_formats_are_not_decoded_whatever_the_name(tmp_path):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n{ } loop\n"
    for data in (eps, b"%PDF-1.4\n%...", b"GIF87a" + bytes(10)):
        with pytest.raises(EdgeViTError, match=r"not an image EdgeViT reads|damaged image"):
            preprocess(data, "digit.png")


def test_pipes_are_refused_by_name_and_the_other_images_still_answered(tiny_weights, tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    os.mkfifo(tmp_path / "weights.safetensors")
    done = run_module(
        "edgevit.cli.classify", str(tmp_path / "pipe.png"), str(SAMPLE), "--weights", str(tiny_weights), timeout=120
    )
    assert done.returncode == 1 and "pipe.png: not a regular file" in done.stderr and "mnist-3.png\t" in done.stdout
    done = run_module("edgevit.cli.classify", str(SAMPLE), "--weights", str(tmp_path / "weights.safetensors"), timeout=60)
    assert done.returncode == 1 and "not a regular file" in done.stderr and "Traceback" not in done.stderr


def test_every_pillow_mode_at_any_size_works_or_is_one_line(mnist):
    digit = np.asarray(Image.fromarray(mnist.test.images[0]).resize((2100, 2100)))
    for image in (Image.fromarray(digit.astype(np.uint16) * 257), Image.fromarray(digit.astype(np.int32) * 100)):
        for fmt in ("PNG", "TIFF"):
            buf = io.BytesIO()
            try:
                image.save(buf, fmt)
            except OSError:
                continue  # a mode this format cannot hold
            assert preprocess(buf.getvalue()).max() > 100


@as_root
def test_weights_and_images_the_user_may_only_read_load_from_a_read_only_place(tiny_weights, public_tmp):
    tmp_path = public_tmp
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shutil.copy(tiny_weights, shelf / "w.safetensors")
    shutil.copy(SAMPLE, shelf / "d.png")
    for p in (shelf / "w.safetensors", shelf / "d.png"):
        p.chmod(0o444)
    shelf.chmod(0o555)
    env = os.environ | NOBODY_ENV
    cmd = [
        *NOBODY,
        sys.executable,
        "-m",
        "edgevit.cli.classify",
        str(shelf / "d.png"),
        "--weights",
        str(shelf / "w.safetensors"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith(str(shelf / "d.png")), done.stderr


@as_root
def test_a_folder_that_cannot_be_entered_is_one_error_and_the_rest_is_answered(tiny_weights, public_tmp):
    tmp_path = public_tmp
    (tmp_path / "closed").mkdir(mode=0o700)
    (tmp_path / "closed" / "a.png").write_bytes(SAMPLE.read_bytes())
    (tmp_path / "secret.png").write_bytes(SAMPLE.read_bytes())
    (tmp_path / "secret.png").chmod(0o600)
    weights = tmp_path / "w.safetensors"
    shutil.copy(tiny_weights, weights)
    weights.chmod(0o644)
    env = os.environ | NOBODY_ENV
    args = [str(tmp_path / "closed"), str(tmp_path / "secret.png"), str(SAMPLE), "--weights", str(weights), "--json"]
    done = subprocess.run(
        [*NOBODY, sys.executable, "-m", "edgevit.cli.classify", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [("error" in r, r["path"].rsplit("/", 1)[-1]) for r in rows] == [
        (True, "closed"),
        (True, "secret.png"),
        (False, "mnist-3.png"),
    ]
    assert "Permission denied" in rows[0]["error"] and "Permission denied" in rows[1]["error"]


def test_no_home_puts_no_cache_at_the_root(monkeypatch):
    monkeypatch.delenv("EDGEVIT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "")
    cache = default_cache_dir()
    assert cache is None or (cache.is_absolute() and cache.parts[1] != ".cache")


def test_a_full_disk_under_tinygrads_compile_cache_costs_a_recompile_not_the_command(monkeypatch):
    from tinygrad.codegen.opt import search

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(internals.tinygrad_helpers, "diskcache_put", full)
    monkeypatch.setattr(internals.tinygrad_helpers, "diskcache_get", full)
    forgiving_put = internals._forgiving(internals.tinygrad_helpers.diskcache_put, lambda value: value)
    forgiving_get = internals._forgiving(internals.tinygrad_helpers.diskcache_get, lambda _: None)
    assert forgiving_put("t", "k", 7) == 7 and forgiving_get("t", "k") is None
    assert search.diskcache_put.__name__ == "call"  # tinygrad's own references are the forgiving ones


def test_one_writer_per_output_and_a_dead_writers_lock_is_taken_over(tmp_path):
    target = tmp_path / "w.safetensors"
    lock = OutputLock(target)
    child = subprocess.run(
        [sys.executable, "-c", f"from edgevit.files import OutputLock; OutputLock({str(target)!r})"],
        capture_output=True,
        text=True,
    )
    assert child.returncode != 0 and f"another run (pid {os.getpid()}) is writing it" in child.stderr
    lock.release()
    lock.path.write_text("999999999")  # a run that was killed
    OutputLock(target).release()
    assert not lock.path.exists()


@pytest.mark.slow
def test_a_diverging_run_and_an_empty_test_split_are_refused_and_write_nothing(tmp_path):
    write_dataset(tmp_path / "data", n_train=64, n_test=32)
    out = tmp_path / "w.safetensors"
    args = ["--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "2", "--batch-size", "16", *TINY_FLAGS]
    done = run_module("edgevit.train", *args, "--lr", "1e9", "--warmup-epochs", "0", timeout=300)
    assert done.returncode == 1 and "training diverged at step" in done.stderr and not out.exists(), done.stderr
    write_dataset(tmp_path / "empty", n_train=64, n_test=0)
    done = run_module("edgevit.train", *args[2:], "--data", str(tmp_path / "empty"), timeout=300)
    assert done.returncode == 1 and "the test split is empty" in done.stderr and "nan" not in done.stdout


@pytest.mark.slow
def test_memory_stays_flat_in_the_number_of_images(tiny_weights, tmp_path):
    """Results stream out CHUNK images at a time: ten times the images, about the same peak memory."""
    peaks = {}
    for n in (300, 3000):
        folder = tmp_path / str(n)
        folder.mkdir()
        for i in range(n):
            os.link(SAMPLE, folder / f"{i:05d}.png")
        measure = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
        measure += "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        cmd = [
            sys.executable,
            "-c",
            measure,
            sys.executable,
            "-m",
            "edgevit.cli.classify",
            str(folder),
            "--weights",
            str(tiny_weights),
        ]
        peaks[n] = int(subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout) / 1024  # MiB
    assert peaks[3000] - peaks[300] < 40, peaks
