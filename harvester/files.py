"""Atomic file writes: a state is recorded only after its file is whole on disk."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def replacing(path: Path, durable: bool = True) -> Iterator[BinaryIO]:
    """Write to a temporary file beside `path`; on success fsync it and rename it over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    The temporary name is unique to the process and thread writing it, so workers writing
    at once never share one; a crash can leave a `.part` file behind, never a wrong file.
    With `durable=False` there is no fsync: the caller makes the file durable later (see
    `sync_filesystem`) and records nothing of it before then.
    """
    partial = _partial_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        # 0o666 less the umask: the permissions any new file gets.
        descriptor = os.open(partial, flags, 0o666)
    except FileNotFoundError:  # the folder's first file (asking every time costs syscalls)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(partial, flags, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    with replacing(path, durable) as handle:
        handle.write(data)


# A file system without hard links (FAT, some network drives) answers a link with one of these.
_NO_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def link_atomically(existing: Path, path: Path, data: bytes) -> None:
    """Make `path` a second name of the file `existing`, whose bytes are `data`: a hard link,
    no second copy on disk. Where hard links are refused, `data` is written instead.

    Not durable by itself, like `write_atomically(durable=False)`: see `sync_filesystem`.
    """
    try:
        try:
            os.link(existing, path)  # one step: the name appears whole or not at all
        except FileNotFoundError:  # the folder's first file
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(existing, path)
    except FileExistsError:  # left by a run that died before recording it: replaced whole
        if path.samefile(existing):
            return  # already that file (and a rename onto it would leave the partial name)
        partial = _partial_name(path)
        os.link(existing, partial)
        os.replace(partial, path)
    except OSError as error:
        if error.errno not in _NO_LINKS:
            raise
        write_atomically(path, data, durable=False)


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.part")


def remove_partial_files(folder: Path) -> int:
    """Delete the temporary files that writers killed mid-write (SIGKILL, an OOM kill, a
    power cut) left in `folder`; returns how many. Only while nothing writes there."""
    removed = 0
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            if (entry.name.startswith(".") and entry.name.endswith(".part")
                    and entry.is_file(follow_symlinks=False)):
                os.unlink(entry.path)
                removed += 1
    return removed


_libc = ctypes.CDLL(None, use_errno=True)


def sync_filesystem(path: Path) -> None:
    """Everything written so far to the filesystem holding `path` reaches the disk.

    The workers write a photo's files without an fsync each (two per photo cost more CPU
    than its resize); the harvest syncs their filesystem once per batch instead, before it
    records the batch's states. A process killed mid-batch loses nothing either way:
    written files survive in the page cache.
    """
    syncfs = getattr(_libc, "syncfs", None)  # Linux; elsewhere, every filesystem
    if syncfs is None:
        os.sync()
        return
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if syncfs(descriptor) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), str(path))
    finally:
        os.close(descriptor)


class Locked(Exception):
    """Another process holds the lock."""


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` while the block runs.

    Raises Locked at once if another process holds it. The operating system releases
    the lock when its holder dies, so a killed run never leaves it stuck.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(str(lock_path)) from None
        yield
