"""Fixtures of the kill, concurrency, disk-full and network-fault tests: the loopback servers of
tests/hub and isolated caches (helpers in harness.py)."""
from __future__ import annotations

import pytest

from tests.reliability.harness import HubServers
from staticserver import start_static  # tests/hub, put on sys.path by harness


@pytest.fixture(scope="module")
def hub_servers():
    servers = HubServers()
    yield servers
    servers.close()


@pytest.fixture(scope="module")
def static_host(tmp_path_factory):
    """(server, state): a loopback static host serving a folder."""
    server, state = start_static(tmp_path_factory.mktemp("static-root"))
    yield server, state
    server.close()


@pytest.fixture
def isolated(monkeypatch, tmp_path, hub_servers):
    """Own caches for the test, the loopback hub as endpoint, no token, online, quiet."""
    monkeypatch.setenv("HF_ENDPOINT", hub_servers.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("ZOOHUB_HOME", str(tmp_path / "zoohub-home"))
    monkeypatch.setenv("ZOOHUB_QUIET", "1")
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "ZOOHUB_OFFLINE", "HF_HUB_DISABLE_XET"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path
