"""Continuous batching: a fixed number of rows ("slots") over one static KV cache, stepped by one thread.

Each row holds one request's tokens at cache slots [0, length), so a token's position is its slot.
A new request is prefilled into a free row in chunks of at most `prefill_chunk` tokens, one chunk
between two decode steps, so a long prompt never stalls the others for long; once its prompt is in,
the row joins the decode step, which feeds every active row its last token at its own write offset
(`KVCache.index` as [B] offsets). A finished or cancelled request frees its row at once.

The model is run by `generation.model_step`, the step `CausalLM.generate` compiles. On jax the two
programs (prefill a chunk of one row; decode one token for the first `batch` rows, attending the
first `window` slots) are compiled per bucket (chunk, batch and window round up to powers of two),
all of them by `warm_up()`, so steady traffic never compiles. On numpy the same steps run eagerly.

Tokens are chosen on the host from the step's logits: greedy rows take the device's argmax; rows that
sample draw Gumbel noise from their own `numpy.random.Generator(seed)`, as the numpy decode loop
does, so a seed gives the same text at any load.

    >>> import queue, zoohub
    >>> from zoohub.backend import using
    >>> with using("numpy"):
    ...     lm = zoohub.CausalLM.from_preset("toy_llama")
    >>> engine = Engine(lm, slots=2, context=64).start()
    >>> events = queue.Queue()
    >>> request = engine.submit(Request(prompt=[1, 5, 7], max_tokens=3, sink=events.put))
    >>> [events.get(timeout=30)[0] for _ in range(4)]
    ['token', 'token', 'token', 'done']
    >>> engine.stop()
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from zoohub.backend import ops, using
from zoohub.errors import InputError
from zoohub.layers import get_path
from zoohub.serve.programs import jax_programs, numpy_programs
from zoohub.tasks.generation import pick_tokens
from zoohub.tasks.probabilities import log_softmax
from zoohub.tasks.tokenizer import bucket_length

log = logging.getLogger("zoohub")

MIN_WINDOW = 64
"""Smallest attended window of the decode step (slots); windows grow by 4x up to the context."""
TOP_LOGPROBS = 20
"""Most alternatives a request may ask for per token (OpenAI's limit)."""


@dataclass(eq=False)
class Request:
    """One generation: prompt token ids in, events out through `sink` (called on the engine thread).

    Events: ("token", id, logprob or None, [(id, logprob), ...] or None), then one
    ("done", finish_reason) with finish_reason "stop" (a stop token), "length" (max_tokens) or
    "cancelled", or ("error", message)."""

    prompt: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = True
    seed: int | None = None
    stop_token_ids: frozenset = frozenset()
    logprobs: int | None = None          # None: no logprobs; k: the chosen token's and the k best
    sink: Callable[[tuple], None] = lambda event: None
    # set by the engine
    submitted: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    generated: int = 0
    _cancelled: bool = False
    _row: int = -1
    _prefilled: int = 0
    _rng: np.random.Generator | None = None

    def cancel(self) -> None:
        """Stop generating (a client left, or a stop string ended the text); the row is freed at the
        engine's next step."""
        self._cancelled = True


class QueueFull(Exception):
    """The engine holds as many requests as it may queue."""


class EngineStopped(Exception):
    """The engine is stopped or failed: it takes no more requests."""


@dataclass
class Stats:
    """Counters for /metrics (read without a lock: single values, written by the engine thread)."""

    requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cancelled: int = 0
    decode_steps: int = 0
    decode_rows: int = 0        # rows decoded, summed over steps: / decode_steps is the mean batch
    prefill_chunks: int = 0
    ttft: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1024))
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))  # (time, tokens)

    def tokens_per_second(self, horizon: float = 10.0) -> float:
        now = time.monotonic()
        tokens = sum(n for t, n in list(self.recent) if now - t <= horizon)
        return tokens / horizon


class Engine:
    """Continuous batching for a CausalLM on its own backend (see the module docstring).

    Args:
        lm: a CausalLM.
        slots: rows of the KV cache: requests decoded together.
        context: tokens a row holds (prompt + completion) at most; default the model's positions, at
            most 2048.
        prefill_chunk: prompt tokens prefilled per step at most (a power of two).
        max_queue: requests waiting for a row at most; `submit` raises QueueFull past it.
    """

    def __init__(self, lm, *, slots: int = 8, context: int | None = None, prefill_chunk: int = 64,
                 max_queue: int | None = None):
        if slots < 1:
            raise InputError(f"slots must be >= 1, got {slots}")
        limit = lm.family.max_length(lm.config) or 2048
        self.lm, self.slots = lm, slots
        self.context = min(context or min(limit, 2048), limit)
        self.prefill_chunk = bucket_length(min(prefill_chunk, self.context), minimum=16)
        self.max_queue = 8 * slots if max_queue is None else max_queue
        self.backend = lm.backend
        self.stats = Stats()
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: collections.deque[Request] = collections.deque()
        self._rows: list[Request | None] = [None] * slots
        self._lengths = np.zeros(slots, np.int32)   # tokens in each row's cache
        self._last = np.zeros(slots, np.int32)      # the token each decoding row feeds next
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        # A right-padded final chunk writes up to prefill_chunk - 1 slots past the prompt: room for it.
        self.cache_length = self.context + self.prefill_chunk
        self.windows = self._window_buckets()
        self.batches = [b for b in (1 << i for i in range(16)) if b < slots] + [slots]
        self.chunks = [c for c in (16 << i for i in range(16)) if c <= self.prefill_chunk]
        with using(self.backend):
            self._build()

    # ---- public ---------------------------------------------------------------------------------
    def start(self, warm: bool = True) -> "Engine":
        """Start the engine thread (compiling every bucket first when `warm`)."""
        self._thread = threading.Thread(target=self._run, args=(warm,), name="zoohub-engine", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        self.ready.wait(timeout)
        if self.failure is not None:
            raise self.failure
        return self.ready.is_set()

    def stop(self) -> None:
        """End the engine thread; requests still held get an error event (their clients are told)."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            if not self._thread.is_alive():
                self._fail_all("the server is shutting down")

    def submit(self, request: Request) -> Request:
        """Queue a request; raises InputError when it cannot fit a row, QueueFull when the queue is full,
        EngineStopped after `stop()` or a failure."""
        if self.failure is not None or self._stop:
            reason = f"{type(self.failure).__name__}: {self.failure}" if self.failure is not None else "stopped"
            raise EngineStopped(f"the serving engine is not running ({reason})")
        total = len(request.prompt) + request.max_tokens
        if not request.prompt:
            raise InputError("the prompt encodes to no tokens")
        if total > self.context:
            raise InputError(f"prompt ({len(request.prompt)} tokens) + max_tokens ({request.max_tokens}) = {total} "
                             f"tokens is past this server's context of {self.context} tokens; shorten the prompt "
                             f"or lower max_tokens")
        if self.queued() >= self.max_queue:
            raise QueueFull(f"{self.queued()} requests are waiting for one of {self.slots} slots")
        if not request.greedy:
            request._rng = np.random.default_rng(request.seed)
        request.submitted = time.monotonic()
        self._inbox.put(request)
        self._wake.set()
        return request

    def queued(self) -> int:
        return self._inbox.qsize() + len(self._waiting)

    def running(self) -> int:
        return sum(r is not None for r in self._rows)

    # ---- the compiled steps ------------------------------------------------------------------------
    def _window_buckets(self) -> list[int]:
        out, w = [], MIN_WINDOW
        while w < self.cache_length:
            out.append(w)
            w *= 4
        return out + [self.cache_length]

    def _build(self) -> None:
        lm = self.lm
        config = lm.config
        dtype = get_path(lm.params, lm.family.embedding_path(lm.head)).dtype
        shape = (config.num_hidden_layers, self.slots, self.cache_length, config.kv_heads, config.dim_per_head)
        xp = ops().xp
        self._k, self._v = xp.zeros(shape, dtype), xp.zeros(shape, dtype)
        if self.backend == "jax":
            self._decode, self._prefill = jax_programs(lm)
        else:
            self._decode, self._prefill = numpy_programs(lm)

    def _decode_call(self, batch: int, window: int, tokens: np.ndarray, lengths: np.ndarray):
        self._k, self._v, logits, best = self._decode(self.lm.params, self._k, self._v, tokens, lengths,
                                                      batch=batch, window=window)
        return logits, np.asarray(best)

    def _prefill_call(self, row: int, tokens: np.ndarray, start: int, count: int):
        self._k, self._v, logits = self._prefill(self.lm.params, self._k, self._v, np.int32(row), tokens,
                                                 np.int32(start), np.int32(count), chunk=tokens.shape[1])
        return np.asarray(logits)

    def warm_up(self) -> None:
        """Compile every bucket (jax): each chunk size of the prefill, each (batch, window) of decode."""
        if self.backend != "jax":
            return
        started = time.monotonic()
        for chunk in self.chunks:
            self._prefill_call(0, np.zeros((1, chunk), np.int32), 0, 1)
        for batch in self.batches:
            for window in self.windows:
                self._decode_call(batch, window, np.zeros(batch, np.int32), np.zeros(batch, np.int32))
        from zoohub.backend.memory import release_free_memory

        release_free_memory()
        log.info("compiled %d programs in %.1f s", len(self.chunks) + len(self.batches) * len(self.windows),
                 time.monotonic() - started)

    # ---- the loop ------------------------------------------------------------------------------------
    def _run(self, warm: bool) -> None:
        try:
            with using(self.backend):
                if warm:
                    self.warm_up()
                self.ready.set()
                while not self._stop:
                    self._admit()
                    if not self._waiting and self.running() == 0:
                        self._wake.wait(0.5)
                        self._wake.clear()
                        continue
                    self._step()
        except BaseException as e:  # noqa: BLE001 - reported to every request, then re-raised on wait_ready
            log.exception("the serving engine stopped")
            self.failure = e
            self.ready.set()
            self._fail_all(f"the engine stopped: {type(e).__name__}: {e}")

    def _fail_all(self, message: str) -> None:
        """Every request held (running, waiting, or not yet taken from the inbox) gets an error event."""
        while True:
            try:
                self._waiting.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for r in [*self._rows, *self._waiting]:
            if r is not None:
                _send(r, ("error", message))
        self._rows = [None] * self.slots
        self._waiting.clear()

    def _admit(self) -> None:
        while True:
            try:
                self._waiting.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for r in [r for r in self._waiting if r._cancelled]:
            self._waiting.remove(r)
            self.stats.cancelled += 1
            _send(r, ("done", "cancelled"))
        for row in range(self.slots):
            if self._rows[row] is None and self._waiting:
                r = self._waiting.popleft()
                r._row, r._prefilled = row, 0
                self._rows[row] = r
                self._lengths[row] = 0
                self.stats.requests += 1
                self.stats.prompt_tokens += len(r.prompt)

    def _free(self, row: int, event: tuple) -> None:
        r = self._rows[row]
        self._rows[row] = None
        self._lengths[row] = 0
        self._last[row] = 0
        _send(r, event)

    def _step(self) -> None:
        for row, r in enumerate(self._rows):
            if r is not None and r._cancelled:
                self.stats.cancelled += 1
                self._free(row, ("done", "cancelled"))
        # One prefill chunk: the request that waited longest (rows are served in arrival order).
        filling = [r for r in self._rows if r is not None and r._prefilled < len(r.prompt)]
        if filling:
            self._prefill_chunk(min(filling, key=lambda r: r.submitted))
        decoding = [row for row, r in enumerate(self._rows) if r is not None and r._prefilled == len(r.prompt)
                    and r.generated > 0]
        if decoding:
            self._decode_step(decoding)

    def _prefill_chunk(self, r: Request) -> None:
        start = r._prefilled
        count = min(self.prefill_chunk, len(r.prompt) - start)
        chunk = bucket_length(count, minimum=16, maximum=self.prefill_chunk)
        tokens = np.zeros((1, chunk), np.int32)
        tokens[0, :count] = r.prompt[start:start + count]
        logits = self._prefill_call(r._row, tokens, start, count)
        self.stats.prefill_chunks += 1
        r._prefilled += count
        self._lengths[r._row] = r._prefilled
        if r._prefilled == len(r.prompt):
            self._emit(r, logits[None], np.asarray([int(np.argmax(logits))]), 0)

    def _decode_step(self, rows: list[int]) -> None:
        batch = next(b for b in self.batches if b > max(rows))
        # Rows of the batch that are not decoding (free, or mid-prefill) write a throwaway key at their
        # length, which the next prefill chunk overwrites; the window must hold those slots too.
        lengths = self._lengths[:batch].copy()
        window = next(w for w in self.windows if w > int(lengths.max()))
        logits, best = self._decode_call(batch, window, self._last[:batch].copy(), lengths)
        self.stats.decode_steps += 1
        self.stats.decode_rows += len(rows)
        wanted = [row for row in rows if not self._rows[row].greedy or self._rows[row].logprobs is not None]
        host = np.asarray(logits) if wanted else None
        for row in rows:
            self._lengths[row] += 1
            self._emit(self._rows[row], host, best, row)

    def _emit(self, r: Request, logits: np.ndarray | None, best: np.ndarray, index: int) -> None:
        """Choose row `index`'s token from the step's logits, send it, and finish the request if done."""
        token = int(best[index])
        row_logits = None if logits is None else logits[index].astype(np.float32)
        if not r.greedy:
            noise = r._rng.gumbel(size=(1, row_logits.shape[-1])).astype(np.float32)
            token = int(pick_tokens(row_logits[None], noise, do_sample=True, temperature=r.temperature,
                                    top_k=r.top_k, top_p=r.top_p, xp=np)[0])
        chosen = top = None
        if r.logprobs is not None:
            logp = log_softmax(row_logits)
            chosen = float(logp[token])
            k = min(r.logprobs, TOP_LOGPROBS)
            if k:
                ids = np.argpartition(-logp, k - 1)[:k]
                ids = ids[np.argsort(-logp[ids], kind="stable")]
                top = [(int(i), float(logp[i])) for i in ids]
        now = time.monotonic()
        if r.first_token_at is None:
            r.first_token_at = now
            self.stats.ttft.append(now - r.submitted)
        r.generated += 1
        self.stats.generated_tokens += 1
        self.stats.recent.append((now, 1))
        self._last[r._row] = token
        _send(r, ("token", token, chosen, top))
        if token in r.stop_token_ids:
            self._free(r._row, ("done", "stop"))
        elif r.generated >= r.max_tokens:
            self._free(r._row, ("done", "length"))


def _send(r: Request, event: tuple) -> None:
    """Hand `event` to the request's sink; a sink that fails (its event loop closed) cancels that
    request only, never the engine and the others' requests."""
    try:
        r.sink(event)
    except Exception:  # noqa: BLE001
        log.warning("a request's sink failed; cancelling it", exc_info=True)
        r.cancel()
