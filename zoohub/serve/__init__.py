"""`zoohub serve`: an OpenAI-compatible server with continuous batching, streaming and a web page.

    zoohub serve smollm2_135m_instruct --port 8000
    curl localhost:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "Hi"}], "stream": true}'

Parts: `engine` (slots over one static KV cache, chunked prefill, bucketed compiled steps),
`openai_api` (request fields and response shapes), `app` (the starlette app), `static/index.html`
(the page at /). Needs the `serve` extra: pip install "zoohub[serve]".

    >>> import json, urllib.request
    >>> from zoohub.backend import using
    >>> from zoohub.serve import load_served, ServerThread
    >>> with using("numpy"):                                   # the bundled toy, served eagerly
    ...     served = load_served("toy_llama", slots=2, context=64)
    >>> server = ServerThread([served]).start()                # on 127.0.0.1, a free port
    >>> body = json.dumps({"model": "toy_llama", "prompt": "great film", "max_tokens": 4, "temperature": 0})
    >>> reply = json.load(urllib.request.urlopen(server.url + "/v1/completions", body.encode()))
    >>> reply["usage"], reply["choices"][0]["finish_reason"]
    ({'prompt_tokens': 6, 'completion_tokens': 4, 'total_tokens': 10}, 'length')
    >>> server.stop()
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
import time

from zoohub.errors import InputError

log = logging.getLogger("zoohub")
SLOT_MEMORY_SHARE = 0.25
"""Share of the available memory the KV cache may take when --slots is left out."""
MAX_DEFAULT_SLOTS = 16


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def default_slots(lm, context: int) -> int:
    """Slots whose KV cache fits `SLOT_MEMORY_SHARE` of the available memory, 1..16 (numpy: at most 4)."""
    c = lm.config
    itemsize = 2 if "16" in str(getattr(next(iter(_leaves(lm.params))), "dtype", "float32")) else 4
    per_slot = 2 * c.num_hidden_layers * context * c.kv_heads * c.dim_per_head * itemsize
    slots = int(SLOT_MEMORY_SHARE * _available_memory() // max(per_slot, 1))
    return max(1, min(slots, MAX_DEFAULT_SLOTS if lm.backend == "jax" else 4))


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree


def load_served(handle: str, *, slots: int | None = None, context: int | None = None, prefill_chunk: int = 64,
                max_queue: int | None = None, name: str | None = None):
    """Load a preset for serving: a CausalLM with its engine (not started), or a TextEmbedder."""
    import json

    from zoohub.presets.resolve import resolve_preset
    from zoohub.serve.app import Served
    from zoohub.serve.engine import Engine

    folder = resolve_preset(handle)
    meta = {}
    if (folder / "zoohub.json").is_file():
        meta = json.loads((folder / "zoohub.json").read_text())
    embedder = (folder / "modules.json").is_file() or meta.get("task") in ("text_embedder",)
    name = name or str(handle)
    if embedder:
        from zoohub.tasks.text_embedder import TextEmbedder

        return Served(name=name, task=TextEmbedder.from_preset(handle), loaded_from=str(handle))
    from zoohub.tasks.causal_lm import CausalLM

    lm = CausalLM.from_preset(handle)
    if lm.tokenizer is None:
        raise InputError(f"{handle} has no tokenizer files; the server takes text")
    limit = lm.family.max_length(lm.config) or 2048
    context = min(context or min(limit, 2048), limit)
    engine = Engine(lm, slots=slots or default_slots(lm, context), context=context, prefill_chunk=prefill_chunk,
                    max_queue=max_queue)
    return Served(name=name, task=lm, engine=engine, loaded_from=str(handle))


def check_bind(host: str, api_key: str | None, insecure: bool) -> None:
    """Another address than loopback needs an API key or --insecure-no-auth."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not api_key and not insecure:
        raise InputError(f"--host {host} lets other machines in: pass --api-key KEY (clients send "
                         "'Authorization: Bearer KEY'), or --insecure-no-auth to serve without one")


class ServerThread:
    """uvicorn serving the app on a background thread (tests, scripts); `stop()` ends it.

    It starts (and at `stop()` stops) the engines of `served` when `start_engines`; with False the
    caller runs them (several apps may share one engine)."""

    def __init__(self, served, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 warm: bool = True, max_body: int | None = None, start_engines: bool = True):
        import uvicorn

        from zoohub.serve.app import MAX_BODY, build_app

        self.served = served
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.warm = warm
        self.engines = [s.engine for s in served if s.engine is not None] if start_engines else []
        app = build_app(served, api_key=api_key, max_body=max_body or MAX_BODY)
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="zoohub-http")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, wait: bool = True) -> "ServerThread":
        """Serve at once (/health says "loading" while the engines compile); with `wait`, return
        when every engine is warm and the socket accepts."""
        for engine in self.engines:
            engine.start(warm=self.warm)
        self.thread.start()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        for engine in self.engines:
            if not engine.wait_ready(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"the engine did not warm up in {timeout} s")
        while not self.server.started and time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError(f"the HTTP server on {self.url} stopped at start (see the log above)")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        for engine in self.engines:
            engine.stop()
        self.sock.close()


def run(args) -> None:
    """The `zoohub serve` verb: load each preset, compile, then serve until Ctrl-C."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise InputError('zoohub serve needs its extra: pip install "zoohub[serve]"') from None
    check_bind(args.host, args.api_key, args.insecure_no_auth)
    handles = list(dict.fromkeys(([args.preset] if args.preset else []) + list(args.presets or [])))
    if not handles:
        raise InputError("name a preset to serve: zoohub serve PRESET [--preset ANOTHER ...]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    served = []
    for handle in handles:
        print(f"loading {handle} ...", file=sys.stderr, flush=True)
        served.append(load_served(handle, slots=args.slots, context=args.context, prefill_chunk=args.prefill_chunk,
                                  max_queue=args.max_queue))
    server = ServerThread(served, host=args.host, port=args.port, api_key=args.api_key)
    started = time.monotonic()
    print("compiling ...", file=sys.stderr, flush=True)
    server.start(wait=True)
    for s in served:
        extra = f" ({s.engine.slots} slots of {s.engine.context} tokens)" if s.engine else ""
        print(f"serving {s.name}{extra}", file=sys.stderr)
    print(f"ready in {time.monotonic() - started:.1f} s: {server.url}/ (web page), {server.url}/v1 (OpenAI API)",
          file=sys.stderr, flush=True)
    try:
        while server.thread.is_alive():
            server.thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
