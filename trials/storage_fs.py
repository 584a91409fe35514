"""Where checkpoints live: a local folder, or an fsspec URL (``s3://bucket/runs``, ``gs://...``, ``file:///shared``)
that every node of a cluster reaches, so that a trial retried or resumed on another node finds its checkpoint.

Every checkpoint read, write, copy, size and removal goes through here. A local path (no ``scheme://``) is
handled exactly as before, with ``pathlib`` and an atomic rename (``trials.paths.write_atomic``); fsspec is
imported only for a URL. Writes to a URL are atomic too: on object stores (S3, GCS, Azure) an object appears
only once its upload completes, so the final key is written directly; on other file systems (``file://``,
``sftp://``, ...) the file is written under a temporary name beside it and moved over the final name. Either
way the file is serialized in memory first (a checkpoint's size in RAM, for the moment of the write). The
backend's package is the user's to install (``s3fs`` for ``s3://``, ``gcsfs`` for ``gs://``); credentials come
from the backend's usual places (environment, instance roles), never from the URL we log.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from trials.paths import write_atomic

#: Protocols whose objects become visible only when their upload completes: written to the final key directly.
WHOLE_OBJECT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"})


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is an fsspec URL (``scheme://...``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def protocol_problem(location: str) -> str | None:
    """Why ``location`` cannot hold checkpoints (an unknown URL scheme, or its fsspec backend not installed),
    or None when it can. Nothing is written or contacted."""
    if not is_url(location):
        return None
    scheme = location.split("://", 1)[0]
    if not scheme:
        return "a URL needs a scheme (s3://, gs://, file://, ...)"
    try:
        import fsspec

        fsspec.get_filesystem_class(scheme)
    except ImportError as e:  # a known scheme whose package is missing: fsspec says which to install
        return f"the {scheme}:// backend is not installed ({' '.join(str(e).split())})"
    except ValueError:
        return f"unknown URL scheme {scheme!r} (fsspec knows none such; a local path, file://, s3:// or gs://)"
    return None


def join(folder: str | Path, name: str) -> str:
    """``folder/name`` for a local folder or a URL."""
    return f"{str(folder).rstrip('/')}/{name}" if is_url(folder) else str(Path(folder).expanduser() / name)


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def make_folder(folder: str | Path) -> None:
    """Create ``folder`` (and its parents); on object stores, where folders do not exist, nothing."""
    if not is_url(folder):
        Path(folder).expanduser().mkdir(parents=True, exist_ok=True)
        return
    fs, path = _fs(str(folder))
    fs.makedirs(path, exist_ok=True)


def exists(location: str | Path) -> bool:
    """Whether the file ``location`` is there."""
    if not is_url(location):
        return Path(location).expanduser().is_file()
    fs, path = _fs(str(location))
    return bool(fs.isfile(path))


def write(location: str | Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write the file ``location`` atomically (readers see the old file or the new one): ``fill(f)`` writes it.

    For a URL, ``fill`` writes into memory first, so a failure there leaves nothing behind; the bytes then go up
    in one call (an object store completes the object only when they all arrived) or, on other file systems,
    to a temporary name beside the target that is moved over it."""
    if not is_url(location):
        write_atomic(Path(location).expanduser(), fill)
        return
    buffer = io.BytesIO()
    fill(buffer)
    data = buffer.getvalue()
    fs, path = _fs(str(location))
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if str(location).split("://", 1)[0] in WHOLE_OBJECT_PROTOCOLS:
        fs.pipe_file(path, data)
        return
    name = path.rsplit("/", 1)[-1]
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp" if parent else f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


def read_bytes(location: str | Path) -> bytes:
    """The whole file ``location``; FileNotFoundError when it is not there."""
    if not is_url(location):
        return Path(location).expanduser().read_bytes()
    fs, path = _fs(str(location))
    return bytes(fs.cat_file(path))


def save_torch(obj: Any, location: str | Path) -> None:
    """``torch.save(obj)`` to ``location``, atomically."""
    import torch

    write(location, lambda f: torch.save(obj, f))


def load_torch(location: str | Path) -> Any:
    """``torch.load(weights_only=True)`` of ``location`` onto the CPU (a URL is read whole first)."""
    import torch

    if not is_url(location):
        return torch.load(Path(location).expanduser(), map_location="cpu", weights_only=True)
    return torch.load(io.BytesIO(read_bytes(location)), map_location="cpu", weights_only=True)


def copy(src: str | Path, dst: str | Path) -> bool:
    """Copy the file ``src`` to ``dst`` (atomically there), across local folders and URLs alike; whether
    ``src`` was there to copy."""
    if not is_url(src) and not is_url(dst):
        source = Path(src).expanduser()
        if not source.is_file():
            return False
        with source.open("rb") as stream:
            write_atomic(Path(dst).expanduser(), lambda f: shutil.copyfileobj(stream, f))
        return True
    if not exists(src):
        return False
    data = read_bytes(src)
    write(dst, lambda f: f.write(data))
    return True


def remove(location: str | Path) -> None:
    """Delete the file ``location`` (nothing when it is not there)."""
    if not is_url(location):
        Path(location).expanduser().unlink(missing_ok=True)
        return
    fs, path = _fs(str(location))
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


def remove_if_empty(folder: str | Path) -> None:
    """Delete ``folder`` when nothing is left in it (object stores have no empty folders: nothing to do)."""
    if not is_url(folder):
        with contextlib.suppress(OSError):  # not empty, or gone already
            Path(folder).expanduser().rmdir()
        return
    fs, path = _fs(str(folder))
    with contextlib.suppress(Exception):  # not empty, gone, or no folders on this store
        if fs.isdir(path) and not fs.ls(path, detail=False):
            fs.rmdir(path)


def folder_is_there(folder: str | Path) -> bool:
    """Whether ``folder`` exists (on an object store: whether any object lies under it)."""
    if not is_url(folder):
        return Path(folder).expanduser().is_dir()
    fs, path = _fs(str(folder))
    return bool(fs.isdir(path))


def remove_folder(folder: str | Path) -> bool:
    """Delete ``folder`` and everything in it; whether it was there."""
    if not is_url(folder):
        path = Path(folder).expanduser()
        if not path.is_dir():
            return False
        shutil.rmtree(path)
        return True
    if not folder_is_there(folder):
        return False
    fs, path_s = _fs(str(folder))
    fs.rm(path_s, recursive=True)
    return True


def folder_bytes(folder: str | Path | None) -> int:
    """The bytes of the files under ``folder`` (0 when there is none)."""
    if not folder:
        return 0
    if not is_url(folder):
        return _local_bytes(Path(folder).expanduser())
    fs, path = _fs(str(folder))
    try:
        return int(fs.du(path, total=True)) if fs.isdir(path) else 0
    except FileNotFoundError:
        return 0


def _local_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                continue
    return total


def local_path(location: str) -> str | None:
    """The local path of ``location`` when it is one (a plain path, or a ``file://`` URL), else None."""
    if not is_url(location):
        return location
    if location.startswith("file://"):
        return location.removeprefix("file://") or "/"
    return None
