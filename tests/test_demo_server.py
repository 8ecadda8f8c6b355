"""The explorer's server against hostile local clients: only its files, bounded connections, no busy
loop, one quiet line per problem (edgevit.demo.server)."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevit.demo import server

FILES = ("index.html", "explorer.js", "edgevit.wasm", "model.json", "style.css")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("served")
    site = tmp_path / "site"
    site.mkdir()
    for name in FILES:
        (site / name).write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("not the site's")
    (site / "link.html").symlink_to(tmp_path / "secret.txt")
    httpd = server.SiteServer(("127.0.0.1", 0), site, max_connections=8)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def get(httpd, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*httpd.server_address, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def raw(httpd, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(httpd.server_address, timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_only_the_sites_own_files_are_served(served):
    assert get(served, "/")[0] == 200 and get(served, "/model.json") == (200, b"x")
    for path in ("/link.html", "/../secret.txt", "/%2e%2e/secret.txt", "/a%00b", "/index.html%00.png", "/etc/passwd", "/site"):
        assert get(served, path)[0] == 404, path
    assert get(served, "/model.json")[0] == 200  # still serving


def test_bad_request_lines_get_400_and_one_quiet_line(served, capfd):
    assert b" 400 " in raw(served, b"GARBAGE\r\n\r\n")
    assert b" 400 " in raw(served, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40) + b"\r\n\r\n")  # a TLS hello
    assert b" 501 " in raw(served, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
    err = capfd.readouterr().err
    assert "Traceback" not in err and all(line.startswith("edgevit-demo: 127.0.0.1") for line in err.splitlines())


def test_idle_connections_cannot_lock_anyone_out(served, capfd):
    """Far more stalled sockets than slots: each new client still gets its file, quickly."""
    idle = [socket.create_connection(served.server_address) for _ in range(40)]
    try:
        latencies = []
        for _ in range(5):
            start = time.perf_counter()
            assert get(served, "/model.json") == (200, b"x")
            latencies.append(time.perf_counter() - start)
        assert max(latencies) < 2.0, latencies
    finally:
        for s in idle:
            s.close()
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_that_hangs_up_early_is_not_a_problem(served, capfd):
    for _ in range(10):
        with socket.create_connection(served.server_address) as s:
            s.sendall(b"GET /edgevit.wasm HTTP/1.1\r\nHost: x\r\n")
    assert get(served, "/model.json")[0] == 200
    time.sleep(0.2)
    assert capfd.readouterr().err == ""


def test_a_silent_connection_is_closed_after_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(server.SiteHandler, "timeout", 0.5)
    (tmp_path / "index.html").write_bytes(b"x")
    httpd = server.make_server(tmp_path, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(httpd.server_address, timeout=5) as s:
            s.sendall(b"\x16\x03\x01")  # a TLS hello's first bytes, then nothing
            start = time.perf_counter()
            assert s.recv(100) in (b"", b"HTTP/1.1 400")  # closed (or told off), not held forever
            assert time.perf_counter() - start < 3
    finally:
        httpd.shutdown()
        httpd.server_close()


@settings(max_examples=60, deadline=None)
@given(request=st.binary(max_size=300))
def test_any_bytes_get_an_http_answer_or_a_close_and_the_server_goes_on(served, request):
    reply = raw(served, request)
    assert reply == b"" or reply.startswith((b"HTTP/1.1 ", b"HTTP/1.0 "))
    assert get(served, "/model.json")[0] == 200


@settings(max_examples=60, deadline=None)
@given(path=st.text(max_size=60))
def test_any_path_is_a_file_of_the_site_or_404(served, path):
    target = "/" + path.encode("utf-8", "surrogatepass").decode("latin-1", "replace").replace(" ", "%20").replace(
        "\r", ""
    ).replace("\n", "")
    reply = raw(served, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1", "replace"))
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] in (b"200", b"404", b"400")
