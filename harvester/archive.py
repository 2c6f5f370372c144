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
import tarfile
from collections.abc import Iterable, Iterator
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


@contextmanager
def tar_writer(target: Path, compressed: bool,
               digest: hashlib._Hash | None = None) -> Iterator[tarfile.TarFile]:
    """A tar (gzipped or not) written to a temporary file and renamed over `target`.

    `digest` (a hashlib object) is fed every byte of the file as it is written: the
    archive's sha256 without reading it back.
    """
    with replacing(target) as handle:
        stream: BinaryIO = handle if digest is None else _Digesting(handle, digest)  # type: ignore[assignment]
        if compressed:
            # Deflated on a thread of its own while this one builds the tar (ISA-L lets go
            # of the GIL). The bytes depend on the block size, not on the thread; the header
            # has no file name and time 0: nothing of this machine or moment.
            stream = igzip_threaded.open(stream, "wb", compresslevel=GZIP_LEVEL, threads=1,
                                         block_size=COMPRESSED_BLOCK)
        try:
            with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                yield tar
        finally:
            if compressed:
                stream.close()


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


def write(target: Path, members: Iterable[Member], compressed: bool) -> None:
    with tar_writer(target, compressed) as tar:
        for member in members:
            add(tar, member)


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
