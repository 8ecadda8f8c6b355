"""edgevit-classify against hostile surroundings: closed or full streams, endless stdin, file names
with control characters or undecodable bytes, and outputs that cannot be written."""

import base64
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from tinygrad import Tensor

from edgevit import weights
from edgevit.classify import classify
from edgevit.cli.classify import escape_name
from edgevit.runtime import Classifier

SAMPLE = ROOT / "samples" / "mnist-3.png"


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """A folder of the same digit under names no line-based output can hold as they are."""
    folder = tmp_path_factory.mktemp("odd")
    for name in (b"tab\there.png", b"new\nline.png", b"bad\xffname.png", b"back\\slash.png"):
        shutil.copy(SAMPLE, os.path.join(os.fsencode(folder), name))
    return folder


@pytest.fixture(scope="module")
def shell(tiny_weights, tmp_path_factory):
    """Run edgevit-classify through bash (for redirections), with one cache for the whole module."""
    cache = tmp_path_factory.mktemp("cache")

    def run(redirect: str, *args: str) -> subprocess.CompletedProcess:
        quoted = " ".join(f"'{a}'" for a in args)
        env = {**os.environ, "EDGEVIT_WEIGHTS": str(tiny_weights), "EDGEVIT_CACHE": str(cache)}
        command = f"{sys.executable} -m edgevit.cli.classify {quoted} {redirect}"
        return subprocess.run(["bash", "-c", command], capture_output=True, cwd=ROOT, env=env, timeout=300)

    return run


def test_names_are_escaped_and_endless_stdin_is_cut_off(shell, odd):
    done = shell("< /dev/zero", str(odd), "-")
    assert done.returncode == 1
    lines = done.stdout.decode().splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        f"{odd}/back\\\\slash.png",
        f"{odd}/bad\\xffname.png",
        f"{odd}/new\\nline.png",
        f"{odd}/tab\\there.png",
    ]
    assert all(len(line.split("\t")) == 2 for line in lines)  # one line and two fields per image
    assert done.stderr.decode() == "edgevit-classify: error: -: over 64 MiB, the most an image may be\n"


def test_json_keeps_undecodable_names_and_a_closed_stdin_costs_one_input(shell, odd):
    done = shell("<&-", "--json", "-", str(odd))
    assert done.returncode == 1
    rows = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert rows[0] == {"path": "-", "error": "standard input is closed"}
    assert len(rows) == 5 and all(r.get("digit") == rows[1]["digit"] for r in rows[1:])  # the others still ran
    [bad] = [r for r in rows if "path_bytes" in r]
    assert bad["path"] == f"{odd}/bad\ufffdname.png"
    assert base64.b64decode(bad["path_bytes"]) == os.fsencode(odd) + b"/bad\xffname.png"
    assert {r["path"] for r in rows[1:]} >= {f"{odd}/tab\there.png", f"{odd}/new\nline.png"}  # JSON escapes these itself


def test_output_that_cannot_be_written_is_an_error(shell):
    closed = shell(">&-", str(SAMPLE))
    assert closed.returncode == 1
    assert closed.stderr.decode() == "edgevit-classify: error: standard output is closed: the results would be lost\n"
    full = shell("> /dev/full", str(SAMPLE))
    assert full.returncode == 1
    assert full.stderr.decode() == "edgevit-classify: error: cannot write to standard output (No space left on device)\n"


def test_attention_onto_a_file_with_several_images_is_one_line(shell, tmp_path):
    (tmp_path / "taken").write_text("")
    done = shell("", str(SAMPLE), str(SAMPLE), "--attention", str(tmp_path / "taken"))
    assert done.returncode == 1 and done.stdout == b""  # refused before any image is classified
    message = f"--attention {tmp_path / 'taken'}: is a file; with several images it must be a folder"
    assert done.stderr.decode() == f"edgevit-classify: error: {message}\n"


def test_a_model_that_overflows_gives_an_error_not_nan(tiny_weights, tmp_path):
    file = weights.read_weights(tiny_weights)
    tensors = file.tensors()
    tensors["head.weight"] = Tensor(np.full(tuple(file.header.tensors["head.weight"].shape), 3e38, np.float32))
    huge = tmp_path / "huge.safetensors"
    weights.save(huge, tensors, file.header.metadata)
    [result] = classify([str(SAMPLE)], Classifier(huge))
    assert result.probs is None and result.error.startswith("the model's output is not a number")


def test_escaping_is_reversible_and_leaves_ordinary_names_alone():
    assert escape_name("digits/seven é.png") == "digits/seven é.png"
    assert escape_name("a\x1b[31m\u202eb") == "a\\x1b[31m\\u202eb"  # terminal colours, right-to-left override
