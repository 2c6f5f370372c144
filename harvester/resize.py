"""Stage: downloaded -> resized. Normalises one source image; `stream` runs it on every core."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harvester.config import ImageSpec
from harvester.files import write_atomically
from harvester.images import Normalised, normalise
from harvester.states import Photo, State, move

if TYPE_CHECKING:  # resize workers run without sqlite_utils (and what it imports)
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


@dataclass(frozen=True, slots=True)
class ResizeJob:
    """What a resize worker needs of a photo: small, as it is pickled to another process."""

    photo_id: str
    source_path: str
    path: str  # the dataset image to write


def job_for(photo: Photo, source_path: str) -> ResizeJob:
    return ResizeJob(photo.photo_id, source_path, dataset_path(photo))


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


def end_with(harvest_pid: int) -> None:
    """Pool initializer: the worker ends itself once the harvest that started it is gone.

    A run killed with SIGKILL cannot shut its pool down, and its workers would wait forever.
    """

    def watch() -> None:
        while True:
            time.sleep(1)
            try:
                os.kill(harvest_pid, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=watch, name="watch-harvest", daemon=True).start()


def resize_one(output_dir: Path, spec: ImageSpec, job: ResizeJob) -> Resized | Rejected:
    """Runs in a worker: read the source, write the dataset image atomically."""
    try:
        data = (output_dir / job.source_path).read_bytes()
    except FileNotFoundError:
        return Rejected(job.photo_id, "source_missing", f"{job.source_path} is gone")
    result = normalise(data, spec.longest_side, spec.jpeg_quality)
    if not isinstance(result, Normalised):
        return Rejected(job.photo_id, result.reason, result.detail)
    write_atomically(output_dir / job.path, result.jpeg)
    return Resized(job.photo_id, job.path, result.width, result.height,
                   hashlib.sha256(result.jpeg).hexdigest(), len(result.jpeg),
                   result.pixels_sha256, result.phash)
