"""Settings read from the environment at call time, and progress-bar policy.

huggingface_hub reads `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HUB_CACHE` and `HF_HUB_DISABLE_XET` once, at
import; zoohub reads them on every call and passes them explicitly, so behaviour never depends on
import order.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT_ENDPOINT = "https://huggingface.co"
# Endpoints known to run a Xet storage backend; uploads elsewhere use the plain LFS protocol.
XET_ENDPOINTS = ("https://huggingface.co", "https://hf.co")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
log = logging.getLogger("zoohub")


def flag(name: str) -> bool:
    """An on/off environment variable: "1", "true", "yes", "on" (any case) mean on; "0", "false", "no",
    "off", empty or unset mean off. Any other value is read as off (as huggingface_hub reads its own
    flags) and logs a warning.

    >>> os.environ["ZOOHUB_EXAMPLE_FLAG"] = "False"
    >>> flag("ZOOHUB_EXAMPLE_FLAG")
    False
    >>> del os.environ["ZOOHUB_EXAMPLE_FLAG"]
    """
    value = os.environ.get(name, "").strip().lower()
    if value not in _TRUE and value not in _FALSE:
        log.warning("%s=%r is not one of 1/true/yes/on or 0/false/no/off; reading it as off", name, value)
    return value in _TRUE


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def hf_cache_dir() -> Path:
    """huggingface_hub's cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hf_token() -> str | None:
    """HF_TOKEN, else the token `hf auth login` stored; None when there is none."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token.strip()
    try:
        from huggingface_hub import get_token
        return get_token()
    except Exception:  # a broken token file must not break anonymous downloads
        return None


def offline() -> bool:
    """HF_HUB_OFFLINE=1 or ZOOHUB_OFFLINE=1: never touch the network."""
    return flag("HF_HUB_OFFLINE") or flag("ZOOHUB_OFFLINE")


def zoohub_home() -> Path:
    return Path(os.environ.get("ZOOHUB_HOME") or "~/.cache/zoohub").expanduser()


def connect_timeout() -> float:
    """Seconds to wait for a host to answer before calling it unreachable."""
    return float(os.environ.get("ZOOHUB_CONNECT_TIMEOUT", "5"))


def read_timeout() -> float:
    """Seconds a static host may go silent mid-download before the attempt counts as failed."""
    return float(os.environ.get("ZOOHUB_READ_TIMEOUT", "60"))


def use_xet_for_upload(endpoint: str) -> bool:
    return endpoint.rstrip("/") in XET_ENDPOINTS and not flag("HF_HUB_DISABLE_XET")


def quiet() -> bool:
    """No progress bars when stderr is not a terminal or ZOOHUB_QUIET is on (see `flag`)."""
    if flag("ZOOHUB_QUIET"):
        return True
    return not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


@contextlib.contextmanager
def hf_progress() -> Iterator[None]:
    """Silence huggingface_hub's bars while quiet, restoring its previous state afterwards."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    silence = quiet() and not are_progress_bars_disabled()
    if silence:
        disable_progress_bars()
    try:
        yield
    finally:
        if silence:
            enable_progress_bars()


def redact(text: str, token: str | None) -> str:
    """`text` with the token (if any) replaced; tokens never reach messages or logs."""
    return text.replace(token, "hf_***") if token else text
