"""A loopback static file server: GET/HEAD from a folder, ETag + If-None-Match, Range + If-Range,
and switches to cut a download halfway or answer 5xx once, plus a queue of faults per path (truncate,
reset, stall, flip a byte, a status) and a pace for slow bodies."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from servers_common import Handler, Server


class StaticState:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.drop_once: set[str] = set()        # url paths whose next GET is cut halfway
        self.fail_once: dict[str, int] = {}     # url path -> status answered once
        self.log: list[tuple[str, str, dict, int]] = []  # (method, path, headers, status)
        # url path -> faults for its next GETs, one each, in order: "truncate" (half the body, then a
        # clean close), "reset" (half, then RST), "stall" (half, then silence for stall_s), "flip" (one
        # byte changed), or an HTTP status such as "500".
        self.faults: dict[str, list[str]] = {}
        self.stall_s = 3.0
        self.pace_s = 0.0  # seconds between 16 KB steps of a body


class StaticHandler(Handler):
    state: StaticState

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        state = self.state
        file = (state.root / path.lstrip("/")).resolve()
        self._answer(path, file)

    def _log(self, path: str, status: int) -> int:
        # Logged before the body goes out: a client that has read everything may look at once.
        with self.state.lock:
            self.state.log.append((self.command, path, dict(self.headers), status))
        return status

    def _answer(self, path: str, file: Path) -> int:
        state = self.state
        with state.lock:
            failure = state.fail_once.pop(path, None)
            drop = self.command == "GET" and path in state.drop_once
            state.drop_once.discard(path)
            queue = state.faults.get(path) if self.command == "GET" else None
            fault = queue.pop(0) if queue else None
        if fault and fault.isdigit():
            failure = int(fault)
        if failure:
            self._log(path, failure)
            self.reply(failure, b"try again")
            return failure
        if not file.is_file() or state.root.resolve() not in file.parents:
            self._log(path, 404)
            self.reply(404, b"not found")
            return 404
        data = file.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        if self.headers.get("If-None-Match") == etag:
            self._log(path, 304)
            self.reply(304, b"", {"ETag": etag})
            return 304
        if fault == "flip":
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]  # same size, same ETag
        if drop or fault in ("truncate", "reset", "stall"):
            self._log(path, -1)
            headers = {"ETag": etag, "Accept-Ranges": "bytes"}
            if fault == "reset":
                self.reset_after(200, data, headers)
            elif fault == "stall":
                self.stall_after(200, data, headers, state.stall_s)
            else:
                self.drop_after(200, data, headers)
            return -1
        self._log(path, 206 if "Range" in self.headers and self.headers.get("If-Range") in (None, etag) else 200)
        self.send_range(data, etag)


def start_static(root: Path) -> tuple[Server, StaticState]:
    state = StaticState(root)
    return Server(StaticHandler, state=state), state
