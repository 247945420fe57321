"""ganlab.atomic: files and folders appear complete or not at all, fsync'ed before the rename."""
from __future__ import annotations

import os

import pytest
import torch

from ganlab import atomic
from ganlab.atomic import atomic_open, atomic_torch_save, atomic_write_text, publish_dir


def test_a_file_is_replaced_whole_and_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "old")
    events.clear()
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["out.txt"]
    assert events == ["fsync", "replace", "fsync"]  # data, rename, directory


def test_an_error_while_writing_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.pt"
    atomic_torch_save({"w": torch.ones(2)}, target)
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write(b"half")
            raise RuntimeError("killed")
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_new_files_get_the_usual_permissions(tmp_path):
    atomic_write_text(tmp_path / "a", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o666 & ~umask


def test_publish_dir_replaces_a_folder_and_fsyncs_its_files(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.png").write_text("old")
    tmp = tmp_path / ".out.partial"
    (tmp / "a").mkdir(parents=True)
    (tmp / "a" / "1.png").write_text("1")
    (tmp / "manifest.csv").write_text("m")
    publish_dir(tmp, target)
    assert sorted(p.name for p in target.rglob("*")) == ["1.png", "a", "manifest.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # neither the temporary nor the old copy is left
    assert len(synced) >= 2 + 2 + 1  # two files, two folders, the parent
