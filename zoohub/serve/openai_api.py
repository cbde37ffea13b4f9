"""The OpenAI request fields zoohub serves, checked into engine requests, and the response bodies.

Fields are checked by type and range; a bad value is an `ApiError` (400) naming the field, in the
error shape OpenAI's clients read: {"error": {"message", "type", "param", "code"}}. Fields this server
does not need (`user`, `metadata`, `presence_penalty` at 0, ...) are accepted and ignored, as
OpenAI-compatible servers do, so stock clients work; a field whose value would change the answer in a
way this server does not do (`logit_bias`, penalties, tools, JSON mode, `echo`) is refused, not ignored.
"""
from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Mapping

from zoohub.serve.engine import TOP_LOGPROBS

MAX_CHOICES = 8


class ApiError(Exception):
    """An error reply: HTTP status, OpenAI error type, message and the offending field."""

    def __init__(self, status: int, message: str, *, param: str | None = None, kind: str | None = None,
                 code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error",
                             503: "server_overloaded"}.get(status, "invalid_request_error" if status < 500
                                                           else "server_error")
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


def _number(body: Mapping, key: str, default, *, low=None, high=None, integer=False, low_open=False):
    value = body.get(key, default)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _bad(key, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise _bad(key, f"must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise _bad(key, f"must be <= {high}, got {value}")
    return value


def sampling(body: Mapping, *, default_max_tokens: int) -> dict:
    """The sampling fields of a chat or completion request, checked:
    {max_tokens, temperature, top_p, top_k, seed, stop, n, logprobs, stream, greedy}."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _number({param: max_tokens}, param, default_max_tokens, low=1, integer=True)
    temperature = _number(body, "temperature", 1.0, low=0, high=2)
    top_p = _number(body, "top_p", 1.0, low=0, high=1, low_open=True)
    top_k = _number(body, "top_k", 0, low=0, integer=True)  # vLLM's extension: 0 = off
    seed = _number(body, "seed", None, low=0, integer=True)
    unsupported(body)
    n = _number(body, "n", 1, low=1, high=MAX_CHOICES, integer=True)
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise _bad("stop", "expected a non-empty string or a list of up to 4 of them")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", f"expected true or false, got {stream!r}")
    return {"max_tokens": max_tokens, "temperature": float(temperature), "top_p": float(top_p), "top_k": top_k,
            "seed": seed, "stop": stop, "n": n, "stream": stream, "greedy": temperature == 0}


# Fields whose non-default value would change the answer in a way this server does not do: refused
# (400) rather than silently ignored. Their default (or an empty value) is accepted, as stock clients send it.
UNSUPPORTED = {"logit_bias": "logit biases", "frequency_penalty": "frequency penalties",
               "presence_penalty": "presence penalties", "tools": "tool calls", "functions": "function calls",
               "tool_choice": "tool calls", "function_call": "function calls", "suffix": "suffixes (insertion)",
               "echo": "echoing the prompt", "best_of": "best_of", "audio": "audio output",
               "prediction": "predicted outputs", "modalities": "modalities other than text"}
DEFAULTS = {"frequency_penalty": 0, "presence_penalty": 0, "tool_choice": "none", "function_call": "none",
            "echo": False, "modalities": ["text"]}
ROLES = ("system", "developer", "user", "assistant", "tool")


def unsupported(body: Mapping) -> None:
    """400 for a field this server would have to ignore to answer (see UNSUPPORTED)."""
    for key, what in UNSUPPORTED.items():
        value = body.get(key)
        if value is None or value == DEFAULTS.get(key) or value in ({}, [], ""):
            continue
        if key == "best_of" and value == body.get("n", 1):
            continue
        raise _bad(key, f"{what} are not supported by this server; leave {key} out")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, Mapping) and fmt.get("type") == "text"):
        raise _bad("response_format", "only {'type': 'text'} is supported by this server (no JSON mode)")


def chat_logprobs(body: Mapping) -> int | None:
    """Chat: `logprobs: true` with `top_logprobs: 0..20`; None when logprobs are not asked for."""
    wanted = body.get("logprobs", False)
    if not isinstance(wanted, bool):
        raise _bad("logprobs", f"expected true or false, got {wanted!r}")
    top = _number(body, "top_logprobs", None, low=0, high=TOP_LOGPROBS, integer=True)
    if top is not None and not wanted:
        raise _bad("top_logprobs", "needs logprobs: true")
    return (top or 0) if wanted else None


def completion_logprobs(body: Mapping) -> int | None:
    """Completions: `logprobs: k` (0..5 in OpenAI's API; up to 20 here)."""
    return _number(body, "logprobs", None, low=0, high=TOP_LOGPROBS, integer=True)


def messages_of(body: Mapping) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "expected a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise _bad(f"messages[{i}]", "expected an object with a 'role' string")
        if m["role"] not in ROLES:
            raise _bad(f"messages[{i}].role", f"expected one of {', '.join(ROLES)}, got {m['role']!r}")
        content = m.get("content", "")
        if isinstance(content, list):  # content parts: only text is served here
            if not all(isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise _bad(f"messages[{i}].content", "only text content parts are supported")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content", "expected a string or a list of text parts")
        out.append({"role": m["role"], "content": content})
    return out


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def random_seed() -> int:
    return secrets.randbits(63)


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
