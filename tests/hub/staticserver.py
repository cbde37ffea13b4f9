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
        status = self._answer(path, file)
        with state.lock:
            state.log.append((self.command, path, dict(self.headers), status))

    def _answer(self, path: str, file: Path) -> int:
        state = self.state
        with state.lock:
            failure = state.fail_once.pop(path, None)
            drop = self.command == "GET" and path in state.drop_once
            state.drop_once.discard(path)
        if failure:
            self.reply(failure, b"try again")
            return failure
        if not file.is_file() or state.root.resolve() not in file.parents:
            self.reply(404, b"not found")
            return 404
        data = file.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.reply(304, b"", {"ETag": etag})
            return 304
        if drop:
            self.drop_after(200, data, {"ETag": etag, "Accept-Ranges": "bytes"})
            return -1
        self.send_range(data, etag)
        return 206 if "Range" in self.headers and self.headers.get("If-Range") in (None, etag) else 200


def start_static(root: Path) -> tuple[Server, StaticState]:
    state = StaticState(root)
    return Server(StaticHandler, state=state), state
