"""The HTTP app (starlette, run by uvicorn): OpenAI's endpoints over the batching engines, /health,
/metrics (Prometheus text) and the web page at /.

    >>> from starlette.testclient import TestClient
    >>> from zoohub.backend import using
    >>> from zoohub.serve import load_served
    >>> with using("numpy"):
    ...     served = load_served("toy_llama", slots=1, context=64)
    >>> client = TestClient(build_app([served]))                # the engine is not started: no completions
    >>> [m["id"] for m in client.get("/v1/models").json()["data"]], client.get("/health").status_code
    (['toy_llama'], 503)

Text is made on the event loop: each choice's tokens go through `TextStream` (stop strings, held-back
partial characters) as `CausalLM.generate(stream=True)` does; a stop string cancels the engine request.
A client that disconnects cancels its requests, which frees their rows at the engine's next step.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from zoohub.errors import InputError, ZoohubError
from zoohub.serve import openai_api as api
from zoohub.serve.engine import Engine, EngineStopped, QueueFull, Request
from zoohub.tasks.generation import TextStream

log = logging.getLogger("zoohub")

MAX_BODY = 1 << 20
"""Largest request body (bytes); a bigger one is refused with 413."""
DISCONNECT_CHECK = 0.25
"""Seconds between checks that the client of a running request is still there."""


@dataclass
class Served:
    """One served preset: its name (the request's `model`), the task, and the engine for a CausalLM."""

    name: str
    task: object
    engine: Engine | None = None
    loaded_from: str = ""
    lock: asyncio.Lock | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return "causal_lm" if self.engine is not None else "embedder"

    def card(self) -> dict:
        """What the web page shows: family, size, context, slots, settings; nothing from disk."""
        t = self.task
        out = {"id": self.name, "source": self.loaded_from, "task": self.kind, "family": t.family.model_type,
               "architecture": t.architecture, "parameters": int(t.num_params()), "backend": t.backend,
               "config": {k: v for k, v in t.hf_config().items() if isinstance(v, (int, float, str, bool))}}
        if self.engine is not None:
            e = self.engine
            out.update(context=e.context, slots=e.slots, prefill_chunk=e.prefill_chunk, ready=e.ready.is_set(),
                       chat_template=_has_chat_template(t), stop_token_ids=list(t.default_stop_token_ids()))
        return out


def _has_chat_template(lm) -> bool:
    try:
        lm.apply_chat_template([{"role": "user", "content": "x"}])
        return True
    except ZoohubError:
        return False


def error_response(e: api.ApiError):
    from starlette.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


class Metrics:
    """HTTP counters; the engines keep their own."""

    def __init__(self):
        self.responses: dict[tuple[str, int], int] = {}

    def count(self, path: str, status: int) -> None:
        self.responses[(path, status)] = self.responses.get((path, status), 0) + 1

    def text(self, served: list[Served]) -> str:
        lines = ["# HELP zoohub_http_responses_total HTTP responses by path and status.",
                 "# TYPE zoohub_http_responses_total counter"]
        lines += [f'zoohub_http_responses_total{{path="{p}",status="{s}"}} {n}'
                  for (p, s), n in sorted(self.responses.items())]
        gauges = (("requests_total", "counter", "generation requests admitted to a slot", lambda e: e.stats.requests),
                  ("prompt_tokens_total", "counter", "prompt tokens prefilled", lambda e: e.stats.prompt_tokens),
                  ("generated_tokens_total", "counter", "tokens generated", lambda e: e.stats.generated_tokens),
                  ("cancelled_requests_total", "counter", "requests cancelled (client left, stop string)",
                   lambda e: e.stats.cancelled),
                  ("decode_steps_total", "counter", "decode steps run", lambda e: e.stats.decode_steps),
                  ("decode_rows_total", "counter", "rows decoded summed over steps (over steps: the mean batch)",
                   lambda e: e.stats.decode_rows),
                  ("queue_length", "gauge", "requests waiting for a slot", lambda e: e.queued()),
                  ("running_requests", "gauge", "requests holding a slot", lambda e: e.running()),
                  ("slots", "gauge", "slots of the KV cache", lambda e: e.slots),
                  ("tokens_per_second", "gauge", "tokens generated per second over the last 10 s",
                   lambda e: round(e.stats.tokens_per_second(), 3)))
        engines = [(s.name, s.engine) for s in served if s.engine is not None]
        for name, kind, text, get in gauges:
            lines += [f"# HELP zoohub_{name} {text[0].upper() + text[1:]}.", f"# TYPE zoohub_{name} {kind}"]
            lines += [f'zoohub_{name}{{model="{m}"}} {get(e)}' for m, e in engines]
        lines += ["# HELP zoohub_time_to_first_token_seconds Time from arrival to the first token (last 1024).",
                  "# TYPE zoohub_time_to_first_token_seconds summary"]
        for m, e in engines:
            ttft = np.asarray(list(e.stats.ttft), np.float64)
            for q in (0.5, 0.9, 0.99):
                value = float(np.quantile(ttft, q)) if len(ttft) else float("nan")
                lines.append(f'zoohub_time_to_first_token_seconds{{model="{m}",quantile="{q}"}} {value:.6f}')
            lines.append(f'zoohub_time_to_first_token_seconds_sum{{model="{m}"}} {ttft.sum():.6f}')
            lines.append(f'zoohub_time_to_first_token_seconds_count{{model="{m}"}} {len(ttft)}')
        return "\n".join(lines) + "\n"


def local_hub_presets() -> list[dict]:
    """The presets on the local hub (local://owner/name), with task and size from their zoohub.json."""
    from zoohub.hub.handles import local_hub_root

    root = local_hub_root()
    out = []
    for folder in sorted(root.glob("*/*")) if root.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        meta = {}
        try:
            meta = json.loads((folder / "zoohub.json").read_text())
        except (OSError, ValueError):
            pass
        meta = meta if isinstance(meta, dict) else {}
        try:  # a plain transformers folder has no zoohub.json; its config still names the architecture
            architectures = json.loads((folder / "config.json").read_text()).get("architectures")
        except (OSError, ValueError, AttributeError):
            architectures = None
        architecture = architectures[0] if isinstance(architectures, list) and architectures else None
        out.append({"handle": f"local://{folder.parent.name}/{folder.name}", "task": meta.get("task"),
                    "architecture": meta.get("architecture", architecture),
                    "parameters": meta.get("num_params", meta.get("params"))})
    return out


def build_app(served: list[Served], *, api_key: str | None = None, max_body: int = MAX_BODY):
    """The starlette app serving `served` (engines started by the caller)."""
    from starlette.applications import Starlette
    from starlette.requests import Request as HttpRequest
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    by_name = {s.name: s for s in served}
    metrics = Metrics()
    page = resources.files("zoohub.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    def check_auth(request: HttpRequest) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise api.ApiError(401, "a valid API key is needed: send 'Authorization: Bearer KEY'",
                               code="invalid_api_key")

    async def read_json(request: HttpRequest) -> dict:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise api.ApiError(413, f"the request body is {declared} bytes; the limit is {max_body}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                raise api.ApiError(413, f"the request body is over the limit of {max_body} bytes")
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            raise api.ApiError(400, "the request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise api.ApiError(400, "the request body must be a JSON object")
        return value

    def model_of(body: Mapping, kind: str) -> Served:
        name = body.get("model")
        if name is None and len(served) == 1:
            name = served[0].name
        if not isinstance(name, str) or name not in by_name:
            raise api.ApiError(404, f"model {name!r} is not served here; /v1/models lists {sorted(by_name)}",
                               param="model", code="model_not_found")
        s = by_name[name]
        if s.kind != kind:
            raise api.ApiError(400, f"model {name!r} is a {s.kind}; this endpoint needs a {kind}", param="model")
        if s.engine is not None and not s.engine.ready.is_set():
            raise api.ApiError(503, f"model {name!r} is still compiling; retry shortly", headers={"Retry-After": "2"})
        return s

    def handler(fn, auth: bool = True):
        async def run(request: HttpRequest) -> Response:
            try:
                if auth:
                    check_auth(request)
                response = await fn(request)
            except api.ApiError as e:
                response = error_response(e)
            except (InputError, ValueError) as e:
                response = error_response(api.ApiError(400, str(e)))
            except Exception as e:  # noqa: BLE001 - one bad request never takes the server down
                log.exception("request failed")
                response = error_response(api.ApiError(500, f"{type(e).__name__}: {e}"))
            metrics.count(request.url.path, response.status_code)
            return response
        return run

    # ---- generation ------------------------------------------------------------------------------
    def start(s: Served, prompt: list[int], opts: dict, logprobs: int | None, loop) -> list[tuple[Request, asyncio.Queue]]:
        lm, engine = s.task, s.engine
        seed = api.random_seed() if opts["seed"] is None else opts["seed"]
        out = []
        try:
            for i in range(opts["n"]):
                events: asyncio.Queue = asyncio.Queue()
                req = Request(prompt=prompt, max_tokens=opts["max_tokens"], temperature=opts["temperature"] or 1.0,
                              top_k=opts["top_k"], top_p=opts["top_p"], greedy=opts["greedy"], seed=seed + i,
                              stop_token_ids=frozenset(lm.default_stop_token_ids()), logprobs=logprobs,
                              sink=lambda ev, q=events: loop.call_soon_threadsafe(q.put_nowait, ev))
                engine.submit(req)
                out.append((req, events))
        except QueueFull as e:
            for req, _ in out:
                req.cancel()
            raise api.ApiError(503, f"the server is busy ({e}); retry shortly", headers={"Retry-After": "1"}) from None
        except EngineStopped as e:
            for req, _ in out:
                req.cancel()
            raise api.ApiError(503, str(e), headers={"Retry-After": "30"}) from None
        except InputError as e:
            for req, _ in out:
                req.cancel()
            raise api.ApiError(400, str(e), param="messages" if "messages" in opts else None) from None
        return out

    async def choices(s: Served, runs, opts: dict, request: HttpRequest):
        """Yield (choice index, text piece, [(token id, logprob, top)], finish_reason or None)."""
        lm = s.task
        streams = [TextStream(lm._decode, opts["stop"], lm.default_stop_token_ids()) for _ in runs]
        merged: asyncio.Queue = asyncio.Queue()

        async def pump(i, events):
            while True:
                ev = await events.get()
                await merged.put((i, ev))
                if ev[0] != "token":
                    return

        tasks = [asyncio.create_task(pump(i, q)) for i, (_, q) in enumerate(runs)]
        open_choices = set(range(len(runs)))
        checked = time.monotonic()
        try:
            while open_choices:
                # A client that left is noticed within DISCONNECT_CHECK s, even while tokens flow (a
                # streamed response is also cancelled by starlette when the socket closes).
                if time.monotonic() - checked > DISCONNECT_CHECK:
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        return
                try:
                    i, ev = await asyncio.wait_for(merged.get(), timeout=DISCONNECT_CHECK)
                except asyncio.TimeoutError:
                    continue
                if i not in open_choices:
                    continue
                stream, (req, _) = streams[i], runs[i]
                if ev[0] == "error":
                    raise api.ApiError(500, ev[1])
                if ev[0] == "token":
                    piece = stream.feed([ev[1]])
                    info = [(ev[1], ev[2], ev[3])] if req.logprobs is not None and ev[1] not in stream.stop_token_ids \
                        else []
                    if stream.finished:  # a stop token or string: the engine may stop early
                        req.cancel()
                        open_choices.discard(i)
                        yield i, piece, info, "stop", req
                    elif piece or info:
                        yield i, piece, info, None, req
                    continue
                open_choices.discard(i)
                reason = ev[1] if ev[1] in ("stop", "length") else "stop"
                yield i, stream.flush(), [], reason, req
        finally:
            for t in tasks:
                t.cancel()
            for req, _ in runs:
                req.cancel()

    def token_text(lm, token: int) -> str:
        return lm.tokenizer.decode([token], skip_special_tokens=False)

    def chat_logprob_items(lm, info) -> list[dict]:
        items = []
        for token, logprob, top in info:
            text = token_text(lm, token)
            items.append({"token": text, "logprob": logprob, "bytes": list(text.encode()),
                          "top_logprobs": [{"token": token_text(lm, t), "logprob": lp,
                                            "bytes": list(token_text(lm, t).encode())} for t, lp in (top or [])]})
        return items

    def completion_logprobs(lm, info) -> dict:
        return {"tokens": [token_text(lm, t) for t, _, _ in info], "token_logprobs": [x for _, x, _ in info],
                "top_logprobs": [{token_text(lm, a): b for a, b in (top or [])} for _, _, top in info]}

    async def generate(request: HttpRequest, chat: bool) -> Response:
        body = await read_json(request)
        s = model_of(body, "causal_lm")
        lm = s.task
        if chat:
            messages = api.messages_of(body)
            try:
                text = lm.apply_chat_template(messages)
            except ZoohubError as e:
                raise api.ApiError(400, str(e), param="messages") from None
            prompt = lm.preprocessor.encode([text], add_special_tokens=False)[0]
            logprobs = api.chat_logprobs(body)
        else:
            text = body.get("prompt")
            if isinstance(text, list) and len(text) == 1 and isinstance(text[0], str):
                text = text[0]
            if isinstance(text, list) and text and all(isinstance(t, int) and not isinstance(t, bool) for t in text):
                prompt = [int(t) for t in text]
                if min(prompt) < 0 or max(prompt) >= lm.config.vocab_size:
                    raise api.ApiError(400, f"prompt: token ids must be in [0, {lm.config.vocab_size})", param="prompt")
            elif isinstance(text, str) and text:
                prompt = lm.preprocessor.encode([text])[0]
            else:
                raise api.ApiError(400, "prompt: expected a non-empty string (or one list of token ids)",
                                   param="prompt")
            logprobs = api.completion_logprobs(body)
        room = s.engine.context - len(prompt)
        if room < 1:
            raise api.ApiError(400, f"the prompt is {len(prompt)} tokens; this server's context is "
                                    f"{s.engine.context} tokens", param="messages" if chat else "prompt",
                               code="context_length_exceeded")
        opts = api.sampling(body, default_max_tokens=min(256, room))
        if opts["max_tokens"] > room:
            raise api.ApiError(400, f"max_tokens: the prompt is {len(prompt)} tokens, so at most {room} more fit "
                                    f"this server's context of {s.engine.context}", param="max_tokens",
                               code="context_length_exceeded")
        runs = start(s, prompt, opts, logprobs, asyncio.get_running_loop())
        rid, created = api.new_id("chatcmpl" if chat else "cmpl"), api.now()
        head = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
                "model": s.name}
        if opts["stream"]:
            async def events():
                counts = [0] * len(runs)
                try:
                    if chat:
                        for i in range(len(runs)):
                            first = {**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                          "logprobs": None, "finish_reason": None}]}
                            yield f"data: {json.dumps(first)}\n\n"
                    async for i, piece, info, reason, req in choices(s, runs, opts, request):
                        counts[i] = req.generated
                        if chat:
                            choice = {"index": i, "delta": {"content": piece} if piece else {},
                                      "logprobs": {"content": chat_logprob_items(lm, info)} if info else None,
                                      "finish_reason": reason}
                        else:
                            choice = {"index": i, "text": piece, "logprobs": completion_logprobs(lm, info)
                                      if info else None, "finish_reason": reason}
                        yield f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"
                    include_usage = isinstance(body.get("stream_options"), Mapping) and \
                        body["stream_options"].get("include_usage")
                    if include_usage:
                        tail = {**head, "choices": [], "usage": api.usage(len(prompt), sum(counts))}
                        yield f"data: {json.dumps(tail)}\n\n"
                    yield "data: [DONE]\n\n"
                except api.ApiError as e:
                    yield f"data: {json.dumps(e.body())}\n\n"
                finally:
                    for req, _ in runs:
                        req.cancel()

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        texts, infos, reasons, counts = [""] * len(runs), [[] for _ in runs], [None] * len(runs), [0] * len(runs)
        async for i, piece, info, reason, req in choices(s, runs, opts, request):
            texts[i] += piece
            infos[i] += info
            counts[i] = req.generated
            reasons[i] = reason or reasons[i]
        if await request.is_disconnected():
            return Response(status_code=499)
        out = []
        for i in range(len(runs)):
            if chat:
                lp = {"content": chat_logprob_items(lm, infos[i])} if logprobs is not None else None
                out.append({"index": i, "message": {"role": "assistant", "content": texts[i]}, "logprobs": lp,
                            "finish_reason": reasons[i]})
            else:
                lp = completion_logprobs(lm, infos[i]) if logprobs is not None else None
                out.append({"index": i, "text": texts[i], "logprobs": lp, "finish_reason": reasons[i]})
        obj = "chat.completion" if chat else "text_completion"
        return JSONResponse({"id": rid, "object": obj, "created": created, "model": s.name, "choices": out,
                             "usage": api.usage(len(prompt), sum(counts))})

    async def chat_completions(request):
        return await generate(request, chat=True)

    async def completions(request):
        return await generate(request, chat=False)

    async def embeddings(request):
        body = await read_json(request)
        s = model_of(body, "embedder")
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts) or len(texts) > 2048:
            raise api.ApiError(400, "input: expected a string or a list of 1 to 2048 strings", param="input")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise api.ApiError(400, f"encoding_format: expected 'float' or 'base64', got {encoding!r}",
                               param="encoding_format", code="invalid_value")
        if body.get("dimensions") is not None:
            raise api.ApiError(400, "dimensions: this server returns the model's own width; leave it out",
                               param="dimensions", code="invalid_value")
        async with s.lock:
            vectors = await asyncio.to_thread(s.task.predict, texts)
        tokens = sum(len(x) for x in s.task.tokenizer.encode_batch(texts, max_length=None)[0])

        def encode(v: np.ndarray):
            # base64: the float32 little-endian bytes, which the openai client asks for by default.
            return v.tolist() if encoding == "float" else base64.b64encode(v.astype("<f4").tobytes()).decode()

        return JSONResponse({"object": "list", "model": s.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                             "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                                      for i, v in enumerate(vectors)]})

    # ---- the rest ---------------------------------------------------------------------------------
    async def models(request):
        return JSONResponse({"object": "list", "data": [
            {"id": s.name, "object": "model", "created": 0, "owned_by": "zoohub"} for s in served]})

    async def model(request):
        name = request.path_params["name"]
        if name not in by_name:
            raise api.ApiError(404, f"model {name!r} is not served here", param="model", code="model_not_found")
        return JSONResponse({"object": "model", "created": 0, "owned_by": "zoohub", **by_name[name].card()})

    async def presets(request):
        return JSONResponse({"served": [s.card() for s in served], "local_hub": local_hub_presets()})

    async def health(request):
        ready = all(s.engine is None or s.engine.ready.is_set() for s in served)
        failed = [s.name for s in served if s.engine is not None and s.engine.failure is not None]
        status = "failed" if failed else "ok" if ready else "loading"
        return JSONResponse({"status": status, "models": [s.name for s in served]},
                            status_code=200 if status == "ok" else 503)

    async def metrics_page(request):
        return PlainTextResponse(metrics.text(served), media_type="text/plain; version=0.0.4")

    async def index(request):
        return HTMLResponse(page)

    async def not_found(request, exc):
        status = getattr(exc, "status_code", 404)
        return error_response(api.ApiError(status, f"{request.method} {request.url.path}: "
                                                   f"{'no such endpoint' if status == 404 else 'not allowed'}"))

    routes = [Route("/", handler(index, auth=False)), Route("/health", handler(health, auth=False)),
              Route("/metrics", handler(metrics_page)), Route("/v1/models", handler(models)),
              Route("/v1/models/{name:path}", handler(model)), Route("/zoohub/presets", handler(presets)),
              Route("/v1/chat/completions", handler(chat_completions), methods=["POST"]),
              Route("/v1/completions", handler(completions), methods=["POST"]),
              Route("/v1/embeddings", handler(embeddings), methods=["POST"])]
    for s in served:
        s.lock = s.lock or asyncio.Lock()
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
