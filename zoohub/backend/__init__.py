"""The selected array backend: "jax" (default when installed) or "numpy" (inference only).

    >>> import zoohub
    >>> zoohub.set_backend("numpy")
    >>> zoohub.get_backend()
    'numpy'

Layers call `ops()` at trace/call time, so one layer function serves both backends.
The numpy path never imports jax.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator
from types import ModuleType

from zoohub.errors import BackendError

BACKENDS = ("jax", "numpy")
_selected: str | None = None
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


def set_backend(name: str) -> None:
    """Select the backend for models built from now on ("jax" or "numpy")."""
    if name not in BACKENDS:
        raise BackendError(f"backend {name!r} is not one of {BACKENDS}")
    if name == "jax" and not _jax_installed():
        raise BackendError("backend 'jax' needs jax: pip install jax optax")
    global _selected
    _selected = name


def get_backend() -> str:
    """The name of the selected backend."""
    global _selected
    if _selected is None:
        _selected = _default()
    return _selected


@contextlib.contextmanager
def using(name: str) -> Iterator[None]:
    """Run a block on one backend (a model keeps the backend it was built on)."""
    global _selected
    previous = get_backend()
    _selected = name
    try:
        yield
    finally:
        _selected = previous


def ops(name: str | None = None) -> ModuleType:
    """The ops module of a backend (the selected one by default): `xp`, `erf`, `jit`, ..."""
    name = name or get_backend()
    if name not in _ops_cache:
        _ops_cache[name] = importlib.import_module(f"zoohub.backend.{name}_ops")
    return _ops_cache[name]
