"""Bits shared by the loopback test servers (stdlib only)."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

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
            self.wfile.write(body)

    def drop_after(self, status: int, body: bytes, headers: dict, fraction: float = 0.5) -> None:
        """Announce the whole body, send part of it, then cut the connection."""
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body[: int(len(body) * fraction)])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

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


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 with a free port, served from a daemon thread."""

    def __init__(self, handler: type[Handler], **attrs) -> None:
        handler = type(handler.__name__, (handler,), attrs)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
