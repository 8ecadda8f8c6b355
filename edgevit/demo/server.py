"""Serving a built site on 127.0.0.1 with the standard library: the right MIME types, and headers
that give the page precise timers."""

from __future__ import annotations

import functools
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

HOST = "127.0.0.1"
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # module scripts are refused under any other type
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",  # needed by WebAssembly.instantiateStreaming
}
HEADERS = {
    # cross-origin isolation: the page loads nothing from elsewhere anyway, and in return the browser
    # gives performance.now() 5 us resolution instead of 100 us, so sub-ms timings mean something
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # a rebuilt site is picked up on reload
}


class SiteHandler(SimpleHTTPRequestHandler):
    """Static files with the right MIME types and the headers above; no request log on stderr."""

    extensions_map: ClassVar[dict[str, str]] = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def end_headers(self) -> None:
        for name, value in HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format, *args) -> None:
        pass


def make_server(site_dir: str | os.PathLike, port: int = 8000) -> ThreadingHTTPServer:
    """A server for `site_dir` on 127.0.0.1:`port` (0: any free port; see .server_address)."""
    handler = functools.partial(SiteHandler, directory=str(site_dir))
    return ThreadingHTTPServer((HOST, port), handler)
