"""Settings read from the environment at call time, and progress-bar policy.

huggingface_hub reads `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HUB_CACHE` and `HF_HUB_DISABLE_XET` once, at
import; zoohub reads them on every call and passes them explicitly, so behaviour never depends on
import order.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT_ENDPOINT = "https://huggingface.co"
# Endpoints known to run a Xet storage backend; uploads elsewhere use the plain LFS protocol.
XET_ENDPOINTS = ("https://huggingface.co", "https://hf.co")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


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
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("ZOOHUB_OFFLINE"))


def zoohub_home() -> Path:
    return Path(os.environ.get("ZOOHUB_HOME") or "~/.cache/zoohub").expanduser()


def connect_timeout() -> float:
    """Seconds to wait for a host to answer before calling it unreachable."""
    return float(os.environ.get("ZOOHUB_CONNECT_TIMEOUT", "5"))


def use_xet_for_upload(endpoint: str) -> bool:
    return endpoint.rstrip("/") in XET_ENDPOINTS and not _truthy(os.environ.get("HF_HUB_DISABLE_XET"))


def quiet() -> bool:
    """No progress bars when stderr is not a terminal or ZOOHUB_QUIET=1."""
    if _truthy(os.environ.get("ZOOHUB_QUIET")):
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
