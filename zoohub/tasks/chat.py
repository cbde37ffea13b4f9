"""Chat templates: the checkpoint's own Jinja template, rendered as transformers renders it.

Templates come from the hub, so they are untrusted code: they run in jinja2's
`ImmutableSandboxedEnvironment` with the same globals and filters transformers gives them
(`raise_exception`, `strftime_now`, a non-escaping `tojson`, loop controls), and nothing else.
Any `__dunder__` attribute is refused, and a rendering is bounded in time and in the characters it
builds; a template that breaks these limits, or fails, raises InputError.

    >>> template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\\n{% endfor %}"
    >>> render_chat(template, [{"role": "user", "content": "Hi!"}], add_generation_prompt=False)
    '[user] Hi!\\n'
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache, wraps

from zoohub.errors import InputError, MissingFileError

Message = Mapping[str, object]


# Templates come from the hub: besides the sandbox's refusals (no attribute starting with "_", no
# mutation), a rendering is bounded in time and in the characters it builds, so a hostile template
# ("{{ 'x' * 10**10 }}", nested loops, doubling strings) fails fast with an InputError.
_MAX_SECONDS = 5.0
"""Wall-clock budget of one rendering (real templates take milliseconds)."""
_MAX_CHARS = 1 << 26
"""Characters (and list items) one rendering may build in all, intermediate values included: 64M."""
_MAX_WIDTH = 256
"""Largest width or count a padding, indenting or batching call may ask for."""
_MAX_BITS = 1 << 16
"""Largest integer, in bits, that `*` and `**` may build."""
_WIDTHS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "tojson", "batch", "slice",
                     "generate_lorem_ipsum"})
"""Functions and filters whose integer arguments are widths or counts: their output grows with them."""
_FORMAT_WIDTH = re.compile(r"%(\([^)]*\))?[-#0 +]*\d*\.?(\*|\d{4,})|\{[^{}]*:[^{}]*(\{|\d{4,})")
"""A %-style or {}-style field with a width or precision of 1000 or more, or one taken from the arguments."""
_state = threading.local()


class _OutOfTime(BaseException):
    """Raised into a rendering past its deadline; a BaseException, so no `except Exception` swallows it."""


def _refuse(what: str):
    from jinja2.sandbox import SecurityError

    raise SecurityError(what)


def _size(value) -> int:
    """Characters of a string; items of a container counted through nested ones (a list held twice
    counts twice, as it prints twice). Memoised per rendering; stops counting past the budget."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if not isinstance(value, (list, tuple, dict, set, frozenset)):
        return 1
    sizes = getattr(_state, "sizes", {})
    if id(value) not in sizes:
        total = 1
        for item in (*value.keys(), *value.values()) if isinstance(value, dict) else value:
            total += _size(item)
            if total > _MAX_CHARS:
                break
        sizes[id(value)] = (value, total)  # holding `value` keeps its id from being reused
    return sizes[id(value)][1]


def _charge(size: int) -> None:
    left = getattr(_state, "left", None)
    if left is not None:
        _state.left = left - size
        if _state.left < 0:
            _refuse(f"the template builds more than {_MAX_CHARS} characters")


def _charged(value):
    _charge(_size(value))
    return value


def _check_call(name: str, args, fmt=None) -> None:
    """Refuse a call that would build more than the budget in one go: a width or count beyond
    _MAX_WIDTH, a huge field width in a format string, or two operands whose sizes multiply past the
    budget (what replace, join, indent and format can make of them)."""
    widths = [abs(a) for a in args if isinstance(a, int)] if name in _WIDTHS else []
    if any(w > _MAX_WIDTH for w in widths):
        _refuse(f"{name}() asks for a width or count beyond {_MAX_WIDTH}")
    if isinstance(fmt, str) and _FORMAT_WIDTH.search(fmt):
        _refuse(f"a format string asks for a field width beyond {_MAX_WIDTH} or from its arguments")
    sizes = sorted([_size(a) for a in args if not isinstance(a, int)] + widths)[-2:]
    if sizes and sizes[-1] > _MAX_CHARS or len(sizes) == 2 and sizes[0] * sizes[1] > _MAX_CHARS:
        _refuse(f"{name or 'a call'}() could build more than {_MAX_CHARS} characters")


def _check_binop(operator: str, left, right) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if operator == "**" and abs(left) > 1 and right * left.bit_length() > _MAX_BITS \
                or operator == "*" and left.bit_length() + right.bit_length() > _MAX_BITS:
            _refuse(f"'{operator}' would build an integer of more than {_MAX_BITS} bits")
    elif operator == "*" and (isinstance(left, int) or isinstance(right, int)):
        count, repeated = (left, right) if isinstance(left, int) else (right, left)
        if abs(count) * _size(repeated) > _MAX_CHARS:
            _refuse(f"'*' would build more than {_MAX_CHARS} characters")
    elif operator == "%" and isinstance(left, str):
        _check_call("%", (left, right), fmt=left)


@contextmanager
def _limits():
    """Bound the rendering in this thread: a deadline checked on every call and on every line of
    template code (so loops stop too), and a budget of characters (see `_charge`)."""
    import jinja2

    deadline = time.monotonic() + _MAX_SECONDS
    # Raised only in template code and the libraries it runs: a gc callback or __del__ elsewhere would
    # swallow the exception, and Python stops tracing after a trace function raises.
    interruptible = ("<template>", os.path.dirname(jinja2.__file__), os.path.dirname(json.__file__))

    def trace(frame, event, arg):
        if time.monotonic() > deadline and frame.f_code.co_filename.startswith(interruptible):
            raise _OutOfTime
        return trace if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    _state.left, _state.sizes = _MAX_CHARS, {}
    sys.settrace(trace)
    try:
        yield
    finally:
        sys.settrace(previous)
        _state.left, _state.sizes = None, {}


@lru_cache(maxsize=1)
def _environment():
    import jinja2
    import jinja2.ext
    from jinja2.compiler import CodeGenerator
    from jinja2.runtime import markup_join, str_join
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generator(CodeGenerator):
        def visit_Concat(self, node, frame):  # `a ~ b`: sized before it is built
            self.write("environment.checked_join(context, (")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class Sandbox(ImmutableSandboxedEnvironment):
        code_generator_class = Generator
        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def unsafe_undefined(self, obj, attribute):  # jinja2 returns an Undefined; refuse at once
            _refuse(f"access to attribute {attribute!r} of a {type(obj).__name__} object is refused")

        def getattr(self, obj, attribute):  # `x.__anything__`, even when missing, is an escape attempt
            if isinstance(attribute, str) and attribute.startswith("__"):
                self.unsafe_undefined(obj, attribute)
            return super().getattr(obj, attribute)

        def wrap_str_format(self, value):  # `'{:>999999999}'.format`: refused when reached
            if getattr(value, "__name__", None) in ("format", "format_map"):
                _check_call("format", (), fmt=getattr(value, "__self__", None))
            return super().wrap_str_format(value)

        def call_binop(self, context, operator, left, right):
            _check_binop(operator, left, right)
            return _charged(super().call_binop(context, operator, left, right))

        def call(self, context, obj, /, *args, **kwargs):
            target = getattr(obj, "__wrapped__", obj)  # jinja2 wraps str.format
            bound, name = getattr(target, "__self__", None), getattr(target, "__name__", "")
            _check_call(name, (bound, *args, *kwargs.values()), fmt=bound if name in ("format", "format_map") else None)
            return _charged(super().call(context, obj, *args, **kwargs))

        def checked_join(self, context, parts):
            _charge(sum(_size(p) for p in parts))
            return (markup_join if context.eval_ctx.autoescape else str_join)(parts)

        @staticmethod
        def concat(parts):  # block captures and macro output
            parts = list(parts)
            _charge(sum(map(len, parts)))
            return "".join(parts)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters; transformers' does not, and templates rely on that.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def guarded(name, func):
        @wraps(func)  # keeps jinja2's pass_context / pass_environment marks
        def run(*args, **kwargs):
            values = (*args, *kwargs.values())
            _check_call(name, values, fmt=args[0] if name == "format" and args else None)
            return _charged(func(*args, **kwargs))
        return run

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols], finalize=_charged)
    env.filters["tojson"] = tojson
    env.filters = {name: guarded(name, func) for name, func in env.filters.items()}
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


@lru_cache(maxsize=16)
def _compile(template: str):
    return _environment().from_string(template)


def render_chat(template: str, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                special_tokens: Mapping[str, str] | None = None, **kwargs) -> str:
    """Render `messages` ([{"role": ..., "content": ...}, ...]) with a chat template.

    special_tokens: `bos_token`, `eos_token`, ... strings the template may use (transformers passes
    the tokenizer's special tokens map). Extra keyword arguments reach the template too
    (e.g. `enable_thinking=False` for Qwen3)."""
    if not isinstance(messages, Sequence) or not all(isinstance(m, Mapping) for m in messages):
        raise InputError("messages must be a list of dicts such as {'role': 'user', 'content': 'Hi!'}")
    if not isinstance(template, str):
        raise InputError(f"a chat template is a string of Jinja code, not a {type(template).__name__}")
    context = {**(special_tokens or {}), **kwargs}
    import jinja2

    _environment()  # built once, outside the time budget
    try:
        with _limits():
            chunks = []
            for chunk in _compile(template).generate(messages=[dict(m) for m in messages],
                                                     add_generation_prompt=add_generation_prompt, **context):
                _charge(len(chunk))
                chunks.append(chunk)
            return "".join(chunks)
    except _OutOfTime:
        raise InputError(f"the chat template ran for more than {_MAX_SECONDS:g} s and was stopped (an endless "
                         "loop, or a hostile template); pass chat_template=... to use another") from None
    except (jinja2.TemplateError, ArithmeticError, AttributeError, LookupError, RuntimeError, TypeError,
            ValueError) as e:
        detail = str(e) if len(str(e)) <= 300 else str(e)[:300] + "..."
        raise InputError(f"the chat template cannot be rendered ({type(e).__name__}: {detail}); it is the "
                         "checkpoint's own code: fix the messages it refuses, or pass chat_template=...") from None


def find_chat_template(tokenizer_config: Mapping, aux_files: Mapping[str, bytes], name: str | None = None) -> str:
    """The checkpoint's template: `chat_template.jinja`, else `tokenizer_config.json`'s `chat_template`
    (a string, or a list of {"name", "template"} where "default" is used unless `name` says otherwise)."""
    if name is None and "chat_template.jinja" in aux_files:
        return aux_files["chat_template.jinja"].decode("utf-8")
    found = tokenizer_config.get("chat_template")
    if isinstance(found, list):
        named = {t["name"]: t["template"] for t in found}
        key = name or "default"
        if key not in named:
            raise InputError(f"chat template {key!r} not found; this checkpoint has {sorted(named)}")
        return named[key]
    if isinstance(found, str):
        return found
    raise MissingFileError(
        "this checkpoint has no chat template (no chat_template.jinja and no 'chat_template' in "
        "tokenizer_config.json); use an instruction-tuned preset or pass chat_template=... ")
