"""Serving a built site on 127.0.0.1 with the standard library, to any number of hostile local clients.

- Only the site's own files are served, by name (no path from a URL ever reaches the filesystem:
  `%00`, `..` or a symbolic link in the folder lead nowhere), with the right MIME types and headers
  that give the page precise timers.
- At most MAX_CONNECTIONS are handled at once, each on its own thread. When they are all taken, the
  one waiting longest on its client (a stalled socket, a slow reader) is closed to make room, so idle
  connections cannot lock anyone out; a connection that sends nothing for TIMEOUT_S seconds (a TLS
  hello) is closed anyway. When the process runs out of file descriptors the server waits a moment
  instead of spinning.
- A bad request line gets 400 (BaseHTTPRequestHandler's own checks); each problem is one quiet line on
  stderr, never a traceback, and a client that hangs up early is not a problem.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import socketserver
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
MAX_CONNECTIONS = 64
TIMEOUT_S = 10.0
EVICT_WAIT_S = 1.0  # the longest a new connection waits for a slot to free up
DESCRIPTOR_PAUSE_S = 0.1  # out of file descriptors: wait this long before accepting again
MAX_FILE_BYTES = 64 * 2**20  # the site's largest file (the fp32 WebAssembly) is under 1 MiB
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # module scripts are refused under any other type
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",  # needed by WebAssembly.instantiateStreaming
    ".png": "image/png",
    ".bin": "application/octet-stream",  # the WebGPU engine's weights
}
HEADERS = {
    # cross-origin isolation: the page loads nothing from elsewhere anyway, and in return the browser
    # gives performance.now() 5 us resolution instead of 100 us, so sub-ms timings mean something
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # a rebuilt site is picked up on reload
}
QUIET = (ConnectionError, TimeoutError, socket.timeout)  # a client that left or stalled: not worth a line


def site_files(site_dir: Path) -> dict[str, Path]:
    """URL path -> file: the regular files directly in the site folder whose type the site serves."""
    files = {f"/{p.name}": p for p in site_dir.iterdir() if p.suffix in MIME_TYPES and p.is_file() and not p.is_symlink()}
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


class SiteHandler(BaseHTTPRequestHandler):
    """GET and HEAD of the site's files; everything else is 404 or 501."""

    server: SiteServer
    timeout = TIMEOUT_S
    protocol_version = "HTTP/1.1"
    default_request_version = (
        "HTTP/1.0"  # a line that names no version is answered with a status line, not HTTP/0.9's bare body
    )

    def do_GET(self, body: bool = True) -> None:
        path = unquote(urlsplit(self.path).path)
        target = self.server.files.get(path)
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            data = target.read_bytes()[:MAX_FILE_BYTES]
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", MIME_TYPES[target.suffix])
        self.send_header("Content-Length", str(len(data)))
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self.do_GET(body=False)

    def handle_one_request(self) -> None:
        self.server.waiting(self.connection, True)  # from here until the reply is out, the client sets the pace
        try:
            super().handle_one_request()
        finally:
            self.server.waiting(self.connection, False)

    def log_request(self, code="-", size="-") -> None:
        pass  # a served file is not news

    def log_message(self, format, *args) -> None:
        self.server.log(f"{self.address_string()}: {format % args}")


class SiteServer(socketserver.TCPServer):
    """The site in `site_dir` on `address`, with the limits in the module docstring."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], site_dir: str | os.PathLike, max_connections: int = MAX_CONNECTIONS):
        self.files = site_files(Path(site_dir))
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._waiting: dict[socket.socket, float] = {}  # connections waiting on their client, since when
        super().__init__(address, SiteHandler)

    def waiting(self, connection: socket.socket, on: bool) -> None:
        with self._lock:
            if on:
                self._waiting[connection] = time.monotonic()
            else:
                self._waiting.pop(connection, None)

    def _evict(self) -> None:
        """Close the connection that has waited longest on its client: its thread ends and frees a slot."""
        with self._lock:
            if not self._waiting:
                return
            oldest = min(self._waiting, key=self._waiting.get)
            del self._waiting[oldest]
        with contextlib.suppress(OSError):
            oldest.shutdown(socket.SHUT_RDWR)

    def log(self, line: str) -> None:
        print(f"edgevit-demo: {line}", file=sys.stderr, flush=True)

    def get_request(self):
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                time.sleep(DESCRIPTOR_PAUSE_S)  # the connection waits in the backlog; no busy loop meanwhile
            raise

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self._evict()
            if not self._slots.acquire(timeout=EVICT_WAIT_S):  # every connection busy being served
                with contextlib.suppress(OSError):
                    request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.shutdown_request(request)
                return
        threading.Thread(target=self._serve, args=(request, client_address), daemon=True).start()

    def _serve(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception as e:  # one line per problem; the server goes on
            if not isinstance(e, QUIET):
                self.log(f"{client_address[0]}: {type(e).__name__}: {e}")
        finally:
            self.shutdown_request(request)
            self._slots.release()


def make_server(site_dir: str | os.PathLike, port: int = 8000) -> SiteServer:
    """A server for `site_dir` on 127.0.0.1:`port` (0: any free port; see .server_address)."""
    return SiteServer((HOST, port), site_dir)
