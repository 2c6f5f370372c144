"""Stage: downloaded -> resized. Normalises source images on every core."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlite_utils import Database

from harvester.config import Config, ImageSpec
from harvester.files import write_atomically
from harvester.images import Normalised, normalise
from harvester.progress import ProgressSink
from harvester.states import Photo, State, move, pending
from harvester.workers import batched_by_time, bounded_map

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


def run(db: Database, config: Config, sink: ProgressSink) -> int:
    """Resize every pending photo; returns how many photos left the `downloaded` state."""
    todo = pending(db, config.classes, State.DOWNLOADED)
    if not todo:
        return 0
    workers = config.resize.workers or os.cpu_count() or 1
    work = partial(resize_one, config.output_dir, config.image)
    sink.start("resize", total=len(todo))
    # forkserver, not fork: workers inherit no open files (the run's lock) and no threads.
    with ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("forkserver"),
        initializer=end_with, initargs=(os.getpid(),),
    ) as pool:
        for batch in batched_by_time(bounded_map(pool, work, todo, workers * 4)):
            record(db, batch)
            sink.advance("resize", len(batch))
    sink.finish("resize")
    return len(todo)


def record(db: Database, results: list[Resized | Rejected]) -> None:
    with db.atomic():
        for result in results:
            if isinstance(result, Resized):
                move(db, result.photo_id, State.DOWNLOADED, State.RESIZED,
                     path=result.path, width=result.width, height=result.height,
                     file_sha256=result.file_sha256, file_bytes=result.file_bytes,
                     pixels_sha256=result.pixels_sha256, phash=result.phash)
            else:
                log.info("photo %s rejected: %s (%s)", result.photo_id, result.reason,
                         result.detail)
                move(db, result.photo_id, State.DOWNLOADED, State.REJECTED, reason=result.reason)


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


def resize_one(output_dir: Path, spec: ImageSpec, photo: Photo) -> Resized | Rejected:
    """Runs in a worker process: read the source, write the dataset image atomically."""
    try:
        data = (output_dir / str(photo.source_path)).read_bytes()
    except FileNotFoundError:
        return Rejected(photo.photo_id, "source_missing", f"{photo.source_path} is gone")
    result = normalise(data, spec.longest_side, spec.jpeg_quality)
    if not isinstance(result, Normalised):
        return Rejected(photo.photo_id, result.reason, result.detail)
    relative = dataset_path(photo)
    write_atomically(output_dir / relative, result.jpeg)
    return Resized(photo.photo_id, relative, result.width, result.height,
                   hashlib.sha256(result.jpeg).hexdigest(), len(result.jpeg),
                   result.pixels_sha256, result.phash)
