"""On/off environment variables have one reading, shared by progress bars, offline mode and fit."""
from __future__ import annotations

import logging

import pytest

from zoohub.hub import env


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", "on", " on "])
def test_on_values(monkeypatch, value):
    monkeypatch.setenv("ZOOHUB_QUIET", value)
    assert env.flag("ZOOHUB_QUIET") is True


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "OFF", "", " "])
def test_off_values(monkeypatch, value):
    monkeypatch.setenv("ZOOHUB_QUIET", value)
    assert env.flag("ZOOHUB_QUIET") is False


def test_unset_is_off(monkeypatch):
    monkeypatch.delenv("ZOOHUB_QUIET", raising=False)
    assert env.flag("ZOOHUB_QUIET") is False


def test_other_values_are_off_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("ZOOHUB_OFFLINE", "maybe")
    with caplog.at_level(logging.WARNING, logger="zoohub"):
        assert env.offline() is False
    assert "ZOOHUB_OFFLINE='maybe'" in caplog.text


def test_quiet_false_shows_progress_on_a_terminal(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    monkeypatch.setenv("ZOOHUB_QUIET", "false")
    assert not env.quiet()
    monkeypatch.setenv("ZOOHUB_QUIET", "yes")
    assert env.quiet()
