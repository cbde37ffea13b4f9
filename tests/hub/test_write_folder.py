"""The one atomic folder writer: a reader or a crash sees the old folder or the new one, never a mix."""
from __future__ import annotations

import os

import pytest

from zoohub.hub import local
from zoohub.hub.local import write_folder


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_folder_replaces_the_old_folder_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "out"
    write_folder(target, lambda tmp: (tmp / "old.txt").write_text("old"))
    write_folder(target, lambda tmp: (tmp / "new.txt").write_text("new"))
    assert _names(target) == ["new.txt"]
    assert _names(tmp_path) == ["out"]


def test_a_failing_fill_keeps_the_old_folder(tmp_path):
    target = tmp_path / "out"
    write_folder(target, lambda tmp: (tmp / "a.txt").write_text("old"))

    def crash(tmp):
        (tmp / "a.txt").write_text("half")
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        write_folder(target, crash)
    assert (target / "a.txt").read_text() == "old"
    assert _names(tmp_path) == ["out"]


def test_a_failing_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "out"
    write_folder(target, lambda tmp: (tmp / "a.txt").write_text("old"))
    monkeypatch.setattr(local, "_renameat2", None)  # the portable swap: rename aside, then in
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in os.fspath(src):  # the new folder cannot move in (e.g. a full disk or a permission)
            raise OSError("rename refused")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="rename refused"):
        write_folder(target, lambda tmp: (tmp / "a.txt").write_text("new"))
    assert (target / "a.txt").read_text() == "old"
    assert _names(tmp_path) == ["out"]
