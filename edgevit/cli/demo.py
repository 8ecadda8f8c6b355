"""`edgevit demo` (also `edgevit-demo`): serve the attention explorer on 127.0.0.1, or write it out as a static site.

    edgevit-demo [--weights W] [--port 8000]     build (or reuse) the site for W and serve it
    edgevit-demo --export DIR                    write the same site as static files

The served site is built once per weights file and kept in the cache directory (rebuilt when the
weights or the page change); everything runs in the browser, and the page requests nothing from
anywhere but this server.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from edgevit import internals
from edgevit.cache import Cache, cache_key, default_cache_dir
from edgevit.classify import default_weights
from edgevit.cli import run
from edgevit.demo.server import HOST, make_server
from edgevit.demo.site import is_site, sources_fingerprint, write_site
from edgevit.errors import EdgeViTError
from edgevit.weights import ModelFile

DEFAULT_PORT = 8000
MAX_PORT = 65535


def cached_site(model: ModelFile, cache: Cache) -> tuple[Path, bool]:
    """The site for `model`: from the cache when built before, else built now; (path, built now)."""
    key = cache_key(model.sha256, "site", sources_fingerprint())
    site = cache.path(f"site-{key}")
    if site is None:
        site = Path(tempfile.mkdtemp(prefix="edgevit-site-")) / "site"  # no cache: lives as long as the server
    if is_site(site):
        return site, False
    return write_site(model, site), True


def cli(argv: list[str] | None = None, prog: str = "edgevit-demo") -> int:
    p = argparse.ArgumentParser(prog=prog, description="The EdgeViT attention explorer, in your browser.")
    p.add_argument("--weights", type=Path, help="weights file (default: $EDGEVIT_WEIGHTS or the shipped int8 weights)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--export", type=Path, metavar="DIR", help="write the site as static files to DIR instead of serving it")
    args = p.parse_args(argv)
    if not 0 <= args.port <= MAX_PORT:
        p.error(f"--port must be from 0 to {MAX_PORT}, not {args.port}")
    model = ModelFile.open(args.weights or default_weights())  # a bad weights file fails here, before any build
    if args.export is not None:
        site = write_site(model, args.export)
        print(f"wrote the site to {site}: serve that folder with any static file server")
        return 0
    site, built = cached_site(model, Cache(default_cache_dir()))
    internals.end_compile_workers()  # the build is done: the server needs none
    try:
        server = make_server(site, args.port)
    except OSError as e:
        raise EdgeViTError(f"cannot listen on {HOST}:{args.port} ({e.strerror}); try another --port") from None
    with server:  # Ctrl-C (130) or SIGTERM (143) is how it stops
        state = "built" if built else "cached"
        print(f"EdgeViT attention explorer ({state} site {site}): http://{HOST}:{server.server_address[1]}/", flush=True)
        server.serve_forever()
    return 0


def main() -> None:
    run("edgevit-demo", cli)


if __name__ == "__main__":
    main()
