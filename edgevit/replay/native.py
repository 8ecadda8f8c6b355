"""Small C libraries the tinygrad runtime compiles for this CPU (the int8 products, the launcher):
built once, kept in the private cache, loaded once per process."""

from __future__ import annotations

import ctypes
import hashlib
import tempfile
from pathlib import Path

from edgevit.cache import Cache, cache_key, cpu_signature
from edgevit.errors import EdgeViTError
from edgevit.export.build import compile_library

_loaded: dict[str, ctypes.CDLL] = {}  # cache entry -> the library this process loaded from it


def library(kind: str, source: str, cache: Cache) -> ctypes.CDLL:
    """`source` compiled for this CPU: from the cache (its sha256 checked before loading) or built now
    and stored. `kind` names the library in the cache and in errors."""
    name = cache_key(kind, hashlib.sha256(source.encode()).hexdigest(), cpu_signature()) + ".lib"
    if name not in _loaded:
        _loaded[name] = _load_or_build(kind, name, source, cache)
    return _loaded[name]


def _load_or_build(kind: str, name: str, source: str, cache: Cache) -> ctypes.CDLL:
    entry = cache.load(name)
    with tempfile.TemporaryDirectory(prefix=f"edgevit-{kind}-") as tmp:  # mode 0700, ours
        lib = Path(tmp) / f"{kind}.so"
        try:
            if entry is None:
                (Path(tmp) / f"{kind}.c").write_text(source)
                compile_library(Path(tmp) / f"{kind}.c", lib)
                cache.store(name, {}, lib.read_bytes())
            else:
                lib.write_bytes(entry[1])
            return ctypes.CDLL(str(lib))  # mapped: the file may go
        except OSError as e:  # a full or read-only $TMPDIR
            raise EdgeViTError(f"cannot build the {kind} library in {tempfile.gettempdir()} ({e.strerror or e})") from None
