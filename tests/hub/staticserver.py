"""A loopback static file server: GET/HEAD from a folder, ETag + If-None-Match, Range + If-Range,
and switches to cut a download halfway or answer 5xx once."""
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
        if drop:
            self._log(path, -1)
            self.drop_after(200, data, {"ETag": etag, "Accept-Ranges": "bytes"})
            return -1
        self._log(path, 206 if "Range" in self.headers and self.headers.get("If-Range") in (None, etag) else 200)
        self.send_range(data, etag)


def start_static(root: Path) -> tuple[Server, StaticState]:
    state = StaticState(root)
    return Server(StaticHandler, state=state), state
