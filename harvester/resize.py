"""Stage: downloaded -> resized. Normalises one source image; `workers` run it on every core."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harvester.config import ImageSpec
from harvester.files import link_atomically, write_atomically
from harvester.images import Normalised, normalise
from harvester.states import Photo, State, move

if TYPE_CHECKING:  # worker processes run without sqlite_utils (and what it imports)
    from sqlite_utils import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resized:
    photo_id: str
    path: str
    width: int
    height: int
    file_sha256: str
    file_bytes: int
    pixels_sha256: str
    phash: str


@dataclass(frozen=True)
class Rejected:
    photo_id: str
    reason: str
    detail: str


def dataset_path(photo: Photo) -> str:
    return f"{photo.class_}/{photo.photo_id}.jpg"


def record(db: Database, result: Resized | Rejected) -> bool:
    """Record one resize's outcome (in the caller's transaction).

    Returns True when the photo left its class's dataset window (rejected).
    """
    if isinstance(result, Resized):
        move(db, result.photo_id, State.DOWNLOADED, State.RESIZED,
             path=result.path, width=result.width, height=result.height,
             file_sha256=result.file_sha256, file_bytes=result.file_bytes,
             pixels_sha256=result.pixels_sha256, phash=result.phash)
        return False
    log.info("photo %s rejected: %s (%s)", result.photo_id, result.reason, result.detail)
    return move(db, result.photo_id, State.DOWNLOADED, State.REJECTED, reason=result.reason)


def resize_source(output_dir: Path, spec: ImageSpec, photo_id: str, source: bytes,
                  source_path: str, path: str) -> Resized | Rejected:
    """Normalise a photo's source bytes (from `source_path`) and write its dataset image
    `path` atomically."""
    result = normalise(source, spec.longest_side, spec.jpeg_quality)
    if not isinstance(result, Normalised):
        return Rejected(photo_id, result.reason, result.detail)
    # Made durable by the harvest, with the batch it is recorded in (files.sync_filesystem).
    if result.kept:  # the source is the dataset image: one file under both names
        link_atomically(output_dir / source_path, output_dir / path, result.jpeg)
    else:
        write_atomically(output_dir / path, result.jpeg, durable=False)
    return Resized(photo_id, path, result.width, result.height,
                   hashlib.sha256(result.jpeg).hexdigest(), len(result.jpeg),
                   result.pixels_sha256, result.phash)
