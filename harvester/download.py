"""Stage: found -> downloaded. Fetches each dataset photo's source bytes once, concurrently."""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from sqlite_utils import Database
from urllib3.util.retry import Retry

from harvester.config import Config, DownloadSpec
from harvester.files import replacing
from harvester.progress import ProgressSink
from harvester.states import Photo, State, dataset_window, move
from harvester.workers import batched_by_time, bounded_map

SOURCES_DIR = ".sources"
MAX_SOURCE_BYTES = 50 * 1024 * 1024
# Flickr answers for a deleted photo with a redirect to this placeholder, served with 200.
PLACEHOLDER_MARK = "photo_unavailable"
CHUNK = 64 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Downloaded:
    photo_id: str
    source_path: str
    source_bytes: int
    sha256: str
    attempts: int


@dataclass(frozen=True)
class DownloadFailed:
    photo_id: str
    reason: str
    detail: str
    attempts: int
    rejected: bool = False  # the photo is unusable, rather than unreachable


def make_session(spec: DownloadSpec) -> requests.Session:
    """A pooled keep-alive session that retries connection trouble, 429 and 5xx with backoff."""
    retry = Retry(
        total=spec.retries,
        backoff_factor=spec.retry_backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET",),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=spec.workers)
    session = requests.Session()
    session.headers["User-Agent"] = "harvester (dataset builder; +https://github.com/)"
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def pending(db: Database, config: Config) -> list[Photo]:
    """Photos in their class's dataset window that still need their bytes."""
    return [
        photo
        for spec in config.classes
        for photo in dataset_window(db, spec.name, spec.count)
        if photo.state == State.FOUND
    ]


def run(
    db: Database, config: Config, sink: ProgressSink, session: requests.Session | None = None
) -> int:
    """Download every pending photo; returns how many photos left the `found` state."""
    todo = pending(db, config)
    if not todo:
        return 0
    session = session or make_session(config.download)
    fetch = partial(fetch_source, session, config.output_dir, config.download)
    sink.start("download", total=len(todo))
    with ThreadPoolExecutor(config.download.workers, thread_name_prefix="download") as pool:
        for batch in batched_by_time(bounded_map(pool, fetch, todo, config.download.workers * 4)):
            record(db, batch)
            sink.advance("download", len(batch))
    sink.finish("download")
    return len(todo)


def record(db: Database, results: list[Downloaded | DownloadFailed]) -> None:
    with db.atomic():
        for result in results:
            if isinstance(result, Downloaded):
                move(db, result.photo_id, State.FOUND, State.DOWNLOADED,
                     source_path=result.source_path, source_bytes=result.source_bytes,
                     sha256=result.sha256, attempts=result.attempts)
            else:
                log.info("photo %s: %s (%s)", result.photo_id, result.reason, result.detail)
                target = State.REJECTED if result.rejected else State.FAILED
                move(db, result.photo_id, State.FOUND, target,
                     reason=result.reason, attempts=result.attempts)


def source_path_for(photo: Photo) -> str:
    suffix = PurePosixPath(urlparse(photo.url or "").path).suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png", ".gif", ".webp"):
        suffix = ".jpg"
    return f"{SOURCES_DIR}/{photo.class_}/{photo.photo_id}{suffix}"


def fetch_source(
    session: requests.Session, output_dir: Path, spec: DownloadSpec, photo: Photo
) -> Downloaded | DownloadFailed:
    """Fetch one photo's bytes to its source file. Errors come back as data, except a full disk."""
    relative = source_path_for(photo)
    target = output_dir / relative
    if target.exists():
        # Written whole (by rename) by a run that died before recording it: no second fetch.
        return _downloaded(photo.photo_id, relative, target.read_bytes(), attempts=0)
    try:
        with session.get(photo.url, timeout=spec.timeout, stream=True) as response:
            attempts = _attempts(response)
            if response.status_code != 200:
                return DownloadFailed(photo.photo_id, f"http_{response.status_code}",
                                      response.reason or "", attempts)
            if PLACEHOLDER_MARK in urlparse(response.url).path:
                return DownloadFailed(photo.photo_id, "unavailable", response.url, attempts,
                                      rejected=True)
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > MAX_SOURCE_BYTES:
                return DownloadFailed(photo.photo_id, "too_large", f"{declared} bytes", attempts,
                                      rejected=True)
            digest, size = hashlib.sha256(), 0
            with replacing(target) as handle:
                for chunk in response.iter_content(CHUNK):
                    size += len(chunk)
                    if size > MAX_SOURCE_BYTES:
                        raise _TooLarge
                    digest.update(chunk)
                    handle.write(chunk)
    except _TooLarge:
        return DownloadFailed(photo.photo_id, "too_large", f"over {MAX_SOURCE_BYTES} bytes",
                              attempts, rejected=True)
    except requests.Timeout as error:
        return DownloadFailed(photo.photo_id, "timeout", str(error), spec.retries + 1)
    except requests.ConnectionError as error:
        return DownloadFailed(photo.photo_id, "connection_error", str(error), spec.retries + 1)
    except requests.RequestException as error:
        return DownloadFailed(photo.photo_id, "download_error", str(error), spec.retries + 1)
    return Downloaded(photo.photo_id, relative, size, digest.hexdigest(), attempts)


class _TooLarge(Exception):
    pass


def _downloaded(photo_id: str, relative: str, data: bytes, attempts: int) -> Downloaded:
    return Downloaded(photo_id, relative, len(data), hashlib.sha256(data).hexdigest(), attempts)


def _attempts(response: requests.Response) -> int:
    retries = getattr(response.raw, "retries", None)
    return 1 + len(retries.history) if retries is not None else 1
