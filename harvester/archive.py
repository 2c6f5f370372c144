"""Byte-reproducible tar files: dataset.tgz and the WebDataset shards.

The same members in the same order give the same tar bytes on any machine, on any day:
member names relative, no timestamps, owners or modes taken from the machine. The gzip
header has no file name or time, and the deflate stream is ISA-L's, which python-isal
bundles rather than the system's zlib: the .tgz is the same wherever python-isal's
version is.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from isal import igzip_threaded

from harvester.errors import Stopped
from harvester.files import replacing

# Dataset images are JPEGs, which deflate cannot shrink: ISA-L's level 1 makes the same
# size as zlib's level 6 (within 1%) at eight times the speed.
GZIP_LEVEL = 1
# Deflated a block at a time, each with the last 32 KiB of the one before as its dictionary.
COMPRESSED_BLOCK = 1 << 20


class ChangedFile(Stopped):
    """A file to pack is not what harvester wrote and recorded: packing it would hide that."""

    def __init__(self, member: str, path: Path) -> None:
        super().__init__(
            f"{path} changed since harvester wrote it (its sha256 differs from the record); "
            f"restore it from the last archive (tar -xzOf dataset.tgz {member} > {path}) "
            "and export again")


@dataclass(frozen=True)
class Member:
    """One entry of an archive: a folder, a file (from disk or bytes), or a hard link."""

    name: str
    kind: str  # "dir", "file" or "link"
    source: Path | None = None  # a file's bytes on disk
    data: bytes | None = None  # or in memory
    link_to: str | None = None  # a link's target: an earlier member's name
    sha256: str | None = None  # what the file's bytes should hash to, when recorded


def write_parted(target: Path, head: Iterable[Member], tail: Callable[[], Path],
                 added: Callable[[], object] = lambda: None) -> str:
    """A .tgz of `head`'s members, then of the part `tail()` returns (see `write_part`),
    written to a temporary file and renamed over `target`; returns its sha256.

    Two processes can write one archive at once this way: a gzip file may hold several
    gzip streams one after the other, which every gunzip reads as one, and the tar in them
    ends only where the last part ends it. `tail` is called once the head is written (it
    may wait for the process writing the part); the part's file is removed once copied.
    `added` is called after each of the head's members. The sha256 is taken of the bytes
    as they are written, not read back.
    """
    digest = hashlib.sha256()
    with replacing(target) as handle:
        stream = _Digesting(handle, digest)
        with _gzip_tar(stream, last=False) as tar:
            for member in head:
                add(tar, member)
                added()
        part = tail()
        try:
            with part.open("rb") as written:
                shutil.copyfileobj(written, stream, COMPRESSED_BLOCK)
        finally:
            part.unlink(missing_ok=True)
    return digest.hexdigest()


def write_part(target: Path, members: Iterable[Member]) -> int:
    """The last part of a `write_parted` archive: `members`, then the tar's end, as one gzip
    stream in the file `target`. Returns how many members it holds."""
    count = 0
    # A plain file: read only once it is whole (its writer has returned), and not durable,
    # as the archive it is copied into is, and it is removed then.
    with target.open("wb") as handle, _gzip_tar(handle, last=True) as tar:
        for member in members:
            add(tar, member)
            count += 1
    return count


@contextmanager
def _gzip_tar(stream: BinaryIO | _Digesting, last: bool) -> Iterator[tarfile.TarFile]:
    """Tar members written as one gzip stream to `stream`; the tar's end-of-archive blocks
    only if this is the `last` part.

    Deflated on a thread of its own while this one builds the tar (ISA-L lets go of the
    GIL). The bytes depend on the block size, not on the thread; the header has no file name
    and time 0: nothing of this machine or moment.
    """
    compressed = igzip_threaded.open(stream, "wb", compresslevel=GZIP_LEVEL, threads=1,
                                     block_size=COMPRESSED_BLOCK)
    try:
        # Written straight through (not tarfile's stream mode, which would end the tar on
        # closing); the position tarfile asks for once, at the start, is the part's own.
        tar = tarfile.TarFile(fileobj=_Positioned(compressed), mode="w",  # type: ignore[arg-type]
                              format=tarfile.PAX_FORMAT)
        yield tar
        if last:
            tar.close()  # two zero blocks, then zeros to the end of a 10 KiB record
        # A part that is not the last is left open: the tar goes on in the next part.
    finally:
        compressed.close()


def add(tar: tarfile.TarFile, member: Member) -> None:
    # A writing TarFile keeps every member's TarInfo (for getmembers()), which we never ask
    # for: let each go once written, or an archive's memory grows with its member count.
    tar.members.clear()
    if member.kind == "dir":
        tar.addfile(_info(member.name, tarfile.DIRTYPE))
    elif member.kind == "link":
        info = _info(member.name, tarfile.LNKTYPE)
        info.linkname = str(member.link_to)
        tar.addfile(info)
    else:
        data = member.data if member.data is not None else Path(str(member.source)).read_bytes()
        if member.sha256 is not None and hashlib.sha256(data).hexdigest() != member.sha256:
            raise ChangedFile(member.name, Path(str(member.source)))
        info = _info(member.name, tarfile.REGTYPE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def write(target: Path, members: Iterable[Member]) -> None:
    """An uncompressed tar of `members` (a WebDataset shard), written to a temporary file
    and renamed over `target`."""
    with (replacing(target) as handle,
          tarfile.open(fileobj=handle, mode="w|", format=tarfile.PAX_FORMAT) as tar):
        for member in members:
            add(tar, member)


class _Positioned:
    """A stream written to, which tells how much has been written: all tarfile asks of it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.written = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        return self.stream.write(data)

    def tell(self) -> int:
        return self.written


class _Digesting:
    """A file being written, whose bytes are hashed on their way to it."""

    def __init__(self, handle: BinaryIO, digest: hashlib._Hash) -> None:
        self.handle = handle
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _info(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info
