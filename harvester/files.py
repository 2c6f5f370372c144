"""Atomic file writes: a state is recorded only after its file is whole on disk."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """Write to a temporary file beside `path`; on success fsync it and rename it over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    The temporary name is unique to the process and thread writing it, so workers writing
    at once never share one; a crash can leave a `.part` file behind, never a wrong file.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.part")
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
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes) -> None:
    with replacing(path) as handle:
        handle.write(data)


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
