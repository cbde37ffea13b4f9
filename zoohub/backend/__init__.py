"""The selected array backend: "jax" (default when installed) or "numpy" (inference only).

    >>> import zoohub
    >>> with zoohub.backend.using("numpy"):   # a block on one backend; zoohub.set_backend sets the default
    ...     zoohub.get_backend()
    'numpy'

Layers call `ops()` at trace/call time, so one layer function serves both backends.
The numpy path never imports jax.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from types import ModuleType

from zoohub.errors import BackendError

BACKENDS = ("jax", "numpy")
_selected: str | None = None
_block = threading.local()  # `using` blocks: per thread, so a server's engine threads cannot flip each other
_ops_cache: dict[str, ModuleType] = {}


def _default() -> str:
    name = os.environ.get("ZOOHUB_BACKEND", "").strip().lower()
    if name:
        if name not in BACKENDS:
            raise BackendError(f"ZOOHUB_BACKEND={name!r} is not a backend; choose one of {BACKENDS}")
        return name
    return "jax" if _jax_installed() else "numpy"


def _jax_installed() -> bool:
    try:
        return importlib.util.find_spec("jax") is not None
    except (ImportError, ValueError):  # a stubbed-out sys.modules["jax"] = None
        return False


def _check(name: str) -> None:
    if name not in BACKENDS:
        raise BackendError(f"backend {name!r} is not one of {BACKENDS}")
    if name == "jax" and not _jax_installed():
        raise BackendError("backend 'jax' needs jax: pip install jax optax")


def set_backend(name: str) -> None:
    """Select the backend for models built from now on ("jax" or "numpy"), in every thread."""
    _check(name)
    global _selected
    _selected = name


def get_backend() -> str:
    """The name of the selected backend: this thread's `using` block's, else the process default."""
    inner = getattr(_block, "name", None)
    if inner is not None:
        return inner
    global _selected
    if _selected is None:
        _selected = _default()
    return _selected


@contextlib.contextmanager
def using(name: str) -> Iterator[None]:
    """Run a block on one backend in this thread (a model keeps the backend it was built on); other
    threads keep theirs."""
    _check(name)
    previous = getattr(_block, "name", None)
    _block.name = name
    try:
        yield
    finally:
        _block.name = previous


def ops(name: str | None = None) -> ModuleType:
    """The ops module of a backend (the selected one by default): `xp`, `erf`, `jit`, ..."""
    name = name or get_backend()
    if name not in _ops_cache:
        _ops_cache[name] = importlib.import_module(f"zoohub.backend.{name}_ops")
    return _ops_cache[name]
