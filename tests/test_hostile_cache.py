"""The cache runs no code anyone else could have written, survives damage, and stays within its cap."""

import json
import os
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from edgevit import weights
from edgevit.cache import Cache
from edgevit.errors import EdgeViTError
from edgevit.runtime import c
from edgevit.runtime.c import CLibrary, read_own_library

AS_ROOT = pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")


class Marker:
    """A pickle that, when loaded, creates a file: proof that a planted pickle ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def plant(directory: Path, name: str, marker: Path) -> Path:
    """A well-formed graph entry whose payload runs code when unpickled."""
    payload = pickle.dumps(Marker(marker))
    meta = {"format": 2, "payload_sha256": __import__("hashlib").sha256(payload).hexdigest(), "weights_sha256": "w"}
    entry = directory / name
    entry.write_bytes(json.dumps(meta).encode() + b"\n" + payload)
    return entry


def test_a_graph_anyone_else_could_have_written_is_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    plant(shared, "k.jit", marker)
    assert not Cache(shared).enabled and Cache(shared).load_graph("k", "w", lambda j: []) is None
    assert Cache(shared).problem == f"cache directory {shared} not used: others may use it (mode 755, not 700)"

    private = tmp_path / "private"
    cache = Cache(private)
    plant(private, "k.jit", marker).chmod(0o666)  # writable by others: could have been rewritten
    assert cache.load_graph("k", "w", lambda j: []) is None

    # the directory swapped for another after the cache checked it: still the checked one is read
    private.rename(tmp_path / "aside")
    private.mkdir(mode=0o700)
    plant(private, "k.jit", marker)
    assert cache.load_graph("k", "w", lambda j: []) is None
    assert not marker.exists()


@AS_ROOT
def test_entries_and_libraries_owned_by_another_user_are_refused(tmp_path):
    marker = tmp_path / "ran"
    cache = Cache(tmp_path / "c")
    os.chown(plant(tmp_path / "c", "k.jit", marker), 65534, 65534)
    assert cache.load_graph("k", "w", lambda j: []) is None and not marker.exists()
    library = tmp_path / "lib.so"
    library.write_bytes(b"\x7fELF")
    os.chown(library, 65534, 65534)
    with pytest.raises(EdgeViTError, match="not loading a library that another user owns or can write"):
        read_own_library(library)


def test_a_library_others_can_write_is_not_loaded(tmp_path):
    library = tmp_path / "lib.so"
    library.write_bytes(b"\x7fELF")
    library.chmod(0o666)
    with pytest.raises(EdgeViTError, match=r"lib\.so: not loading a library that another user owns or can write \(mode 666\)"):
        read_own_library(library)


def test_a_truncated_cached_library_is_rebuilt_not_loaded(tiny_weights, tmp_path, monkeypatch):
    builds = []

    def build(weights, library, beam):
        builds.append(library)
        Path(library).write_bytes(b"a shared library" * 100)
        return Path(library)

    monkeypatch.setattr(c, "build_library", build)
    cache, model = Cache(tmp_path), weights.ModelFile.open(tiny_weights)
    first = CLibrary(model, cache)
    assert first.image() == b"a shared library" * 100 and not first.cache_hit
    [entry] = tmp_path.glob("*.lib")
    assert oct(entry.stat().st_mode & 0o777) == "0o600"
    second = CLibrary(model, cache)
    assert second.image() == first.image() and second.cache_hit and len(builds) == 1
    entry.write_bytes(entry.read_bytes()[:-7])  # a full disk or a killed copy cut it short
    third = CLibrary(model, cache)
    assert third.image() == first.image() and not third.cache_hit and len(builds) == 2


def test_least_recently_used_entries_are_evicted_beyond_the_cap(tmp_path):
    cache = Cache(tmp_path, max_bytes=3200)
    for i, name in enumerate(("a.jit", "b.jit", "c.jit")):
        cache.store(name, {}, bytes(900))
        os.utime(tmp_path / name, (1000 + i, 1000 + i))  # stored in this order, a second apart
    cache.remember("backends.json", "{}")
    assert cache.load("a.jit") is not None  # used: now the most recent
    cache.store("d.jit", {}, bytes(900))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jit", "backends.json", "c.jit", "d.jit"]
    (tmp_path / f".x.jit.{os.getpid()}.tmp").write_bytes(b"live")
    (tmp_path / ".y.jit.999999999.tmp").write_bytes(b"killed")  # no such process: never finished
    assert cache.evict() == [".y.jit.999999999.tmp"]


def test_damaged_entries_and_memos_are_ignored(tmp_path):
    cache = Cache(tmp_path)
    cache.store("e.jit", {"probe": [1.0]}, b"payload")
    assert cache.load("e.jit")[1] == b"payload"
    raw = (tmp_path / "e.jit").read_bytes()
    for damaged in (raw[:-1], b"not json\n" + raw, raw.replace(b'"format": 2', b'"format": 1'), b""):
        (tmp_path / "e.jit").write_bytes(damaged)
        assert cache.load("e.jit") is None
    (tmp_path / "backends.json").write_bytes(b"\xff\xfe")
    assert cache.recall("backends.json") is None


COMPILE = """
import os, sqlite3
import tinygrad.helpers as h
from tinygrad import Tensor
from edgevit import internals
internals.ensure_private_compile_cache()
assert (Tensor([1.0, 2.0]).contiguous() * 3).tolist() == [3.0, 6.0]
print(h.CACHEDB if h.CACHELEVEL.value else "off")
"""


def compile_in_fresh_process(tmp_path: Path, edgevit_cache: str) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "EDGEVIT_CACHE": edgevit_cache}
    env.pop("CACHEDB", None)
    env.pop("CACHELEVEL", None)
    done = subprocess.run([sys.executable, "-c", COMPILE], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def tables(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def test_tinygrad_compiles_into_the_private_cache_or_nowhere(tmp_path):
    """tinygrad's own cache.db (pickles of compiled kernels) is never read where others could plant it."""
    foreign = tmp_path / "xdg" / "tinygrad"
    foreign.mkdir(parents=True)
    sqlite3.connect(foreign / "cache.db").close()  # somebody's cache.db where tinygrad would look

    used = compile_in_fresh_process(tmp_path, str(tmp_path / "mine"))
    assert used.startswith("/proc/self/fd/") and used.endswith("/tinygrad-cache.db")
    assert tables(tmp_path / "mine" / "tinygrad-cache.db") and tables(foreign / "cache.db") == []
    assert oct((tmp_path / "mine" / "tinygrad-cache.db").stat().st_mode & 0o777) == "0o600"

    assert compile_in_fresh_process(tmp_path, "0") == "off"  # EDGEVIT_CACHE=0: no compile cache at all
    assert tables(foreign / "cache.db") == []

    (tmp_path / "mine" / "tinygrad-cache.db").write_bytes(b"not a database" * 100)  # damaged: started afresh
    assert compile_in_fresh_process(tmp_path, str(tmp_path / "mine")) == used
    assert tables(tmp_path / "mine" / "tinygrad-cache.db")
