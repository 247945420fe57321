"""Atomic, durable writes: a reader sees the old file (or folder) or the new one, never half of one,
and once the call returns a crash or power cut keeps the new one.

Files: written to a hidden temporary beside the target, fsync'ed, renamed over the target
(os.replace), then the directory is fsync'ed so the rename itself is on disk. Folders (`publish_dir`):
every file and directory in the finished temporary folder is fsync'ed before it is renamed into place.
Temporaries are named `.<target name>.<pid>.<random>.tmp`; a kill leaves one behind at most.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO, Iterator

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a rename, a new file) durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """`with atomic_open(path) as fh: fh.write(...)`: the file appears at `path` complete, or not at all
    (an exception inside the block leaves the previous file and no temporary)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    fh = open(tmp, "xb")  # exclusive creation, the usual permissions (unlike mkstemp's 0600)
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj, path: str | Path) -> None:
    import torch

    with atomic_open(path) as fh:
        torch.save(obj, fh)


def fsync_tree(root: str | Path) -> None:
    """fsync every file, then every directory (deepest first) under `root`, `root` included."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def publish_dir(tmp: str | Path, target: str | Path) -> None:
    """Move a finished temporary folder (a sibling of `target`, same file system) into place, replacing
    whatever `target` held: the old content is renamed aside first and removed only after the new
    folder is in place, so `target` is always one complete version."""
    tmp, target = Path(tmp), Path(target)
    fsync_tree(tmp)
    old = None
    if target.exists() or target.is_symlink():
        old = tmp.with_name(f"{tmp.name}.old")
        os.rename(target, old)
    os.rename(tmp, target)
    fsync_dir(target.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
