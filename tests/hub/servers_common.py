"""Bits shared by the loopback test servers (stdlib only)."""
from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, each response waits for the
    # client's delayed ACK (about 40 ms on loopback).
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except ValueError:  # flushing a connection `reset_after` closed on purpose
            if not self.wfile.closed:
                raise

    def read_body(self) -> bytes:
        """The request body, plain or chunked (httpx streams file uploads chunked)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.write_body(body)

    def write_body(self, body: bytes) -> None:
        """The body at once, or in 16 KB steps `state.pace_s` seconds apart (a slow link)."""
        pace = getattr(getattr(self, "state", None), "pace_s", 0.0)
        if not pace:
            self.wfile.write(body)
            return
        for start in range(0, len(body), 1 << 14):
            self.wfile.write(body[start:start + (1 << 14)])
            self.wfile.flush()
            time.sleep(pace)

    def _send_part(self, status: int, body: bytes, headers: dict, fraction: float) -> None:
        """Announce the whole body and send only its first `fraction`."""
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body[: int(len(body) * fraction)])
        self.wfile.flush()
        self.close_connection = True

    def drop_after(self, status: int, body: bytes, headers: dict, fraction: float = 0.5) -> None:
        """Announce the whole body, send part of it, then cut the connection."""
        self._send_part(status, body, headers, fraction)
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def reset_after(self, status: int, body: bytes, headers: dict, fraction: float = 0.5) -> None:
        """Announce the whole body, send part of it, then reset the connection (RST, not a clean close)."""
        self._send_part(status, body, headers, fraction)
        self.rfile.close()
        self.wfile.close()  # the socket's last file objects: closing it now really closes it
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def stall_after(self, status: int, body: bytes, headers: dict, seconds: float, fraction: float = 0.5) -> None:
        """Announce the whole body, send part of it, then go silent for `seconds` and close."""
        self._send_part(status, body, headers, fraction)
        time.sleep(seconds)

    def send_range(self, data: bytes, etag: str, extra: dict | None = None) -> None:
        """200 or 206 for a `Range: bytes=a-[b]` request, honouring If-Range."""
        headers = {"ETag": etag, "Accept-Ranges": "bytes", **(extra or {})}
        spec = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if spec and spec.startswith("bytes=") and (if_range is None or if_range == etag):
            first, _, last = spec[len("bytes="):].partition("-")
            start, stop = int(first), (int(last) + 1 if last else len(data))
            if start >= len(data):
                return self.reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            return self.reply(206, data[start:stop], headers)
        return self.reply(200, data, headers)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A client that went away mid-body (killed, or timed out on purpose) is not a server error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 with a free port, served from a daemon thread."""

    def __init__(self, handler: type[Handler], **attrs) -> None:
        handler = type(handler.__name__, (handler,), attrs)
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
