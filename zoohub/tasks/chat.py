"""Chat templates: the checkpoint's own Jinja template, rendered as transformers renders it.

Templates come from the hub, so they are untrusted code: they run in jinja2's
`ImmutableSandboxedEnvironment` with the same globals and filters transformers gives them
(`raise_exception`, `strftime_now`, a non-escaping `tojson`, loop controls), and nothing else.

    >>> template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\\n{% endfor %}"
    >>> render_chat(template, [{"role": "user", "content": "Hi!"}], add_generation_prompt=False)
    '[user] Hi!\\n'
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache

from zoohub.errors import InputError, MissingFileError

Message = Mapping[str, object]


@lru_cache(maxsize=16)
def _compile(template: str):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters; transformers' does not, and templates rely on that.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(template: str, messages: Sequence[Message], *, add_generation_prompt: bool = True,
                special_tokens: Mapping[str, str] | None = None, **kwargs) -> str:
    """Render `messages` ([{"role": ..., "content": ...}, ...]) with a chat template.

    special_tokens: `bos_token`, `eos_token`, ... strings the template may use (transformers passes
    the tokenizer's special tokens map). Extra keyword arguments reach the template too
    (e.g. `enable_thinking=False` for Qwen3)."""
    if not isinstance(messages, Sequence) or not all(isinstance(m, Mapping) for m in messages):
        raise InputError("messages must be a list of dicts such as {'role': 'user', 'content': 'Hi!'}")
    context = {**(special_tokens or {}), **kwargs}
    return _compile(template).render(messages=[dict(m) for m in messages],
                                     add_generation_prompt=add_generation_prompt, **context)


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
