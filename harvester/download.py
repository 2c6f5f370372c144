"""Stage: found -> downloaded. Fetches each dataset photo's source bytes once, concurrently.

A photo that is gone (404, a placeholder, unusable bytes) fails or is rejected at
once and is replaced. Trouble that may pass (timeouts, refused connections, 5xx)
only counts an attempt: the photo stays `found` and is tried again, until
`download.max_attempts`. When downloads of many photos fail one after another with
nothing getting through, the image host is down: the run stops, and resume continues it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.request
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from harvester.config import DownloadSpec
from harvester.errors import Stopped
from harvester.files import write_atomically
from harvester.states import Photo, State, move, record_attempt

if TYPE_CHECKING:  # worker processes run without sqlite_utils (and what it imports)
    from sqlite_utils import Database

SOURCES_DIR = ".sources"
MAX_SOURCE_BYTES = 50 * 1024 * 1024
# Flickr answers for a deleted photo with a redirect to this placeholder, served with 200.
PLACEHOLDER_MARK = "photo_unavailable"
PLACEHOLDER_MAX_BYTES = 1024 * 1024
CHUNK = 64 * 1024
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_AFTER_MAX = 30.0  # seconds

log = logging.getLogger(__name__)


class ImageHostFailing(Stopped):
    """Downloads keep failing with nothing getting through: stop, and resume later."""


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
    attempts: int  # including this one
    transient: bool = False  # may work later: counts an attempt, the photo stays found
    rejected: bool = False  # the bytes are unusable, rather than unreachable
    placeholder_sha256: str | None = None  # of the placeholder image Flickr redirected to


class CutShort(Exception):
    """A wait between a photo's retries ended because the harvest is stopping: the photo is
    left as it is, for resume."""


class _Retry(Retry):
    """urllib3's Retry, but a server's Retry-After can hold a worker for RETRY_AFTER_MAX at
    most, and a wait ends at once when `stopping` is set (by raising CutShort)."""

    stopping: Any = None  # an Event, or None: waits that nothing cuts short

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, RETRY_AFTER_MAX)

    def new(self, **kw: Any) -> _Retry:
        retry = super().new(**kw)  # each retry is a new object: the event goes along
        retry.stopping = self.stopping
        return retry

    def sleep(self, response: Any = None) -> None:
        seconds = (self.get_retry_after(response)
                   if self.respect_retry_after_header and response else None)
        if not seconds:
            seconds = self.get_backoff_time()
        if self.stopping is None:
            time.sleep(seconds)
        elif self.stopping.wait(seconds):
            raise CutShort("the harvest is stopping")


def make_session(spec: DownloadSpec, stopping: Any = None) -> requests.Session:
    """A pooled keep-alive session that retries connection trouble, 429 and 5xx with backoff.

    With `stopping` (an Event), setting it cuts a wait between retries short: the request
    raises CutShort instead of trying again (a Ctrl-C is not held up by a backoff).
    """
    retry = _Retry(
        total=spec.retries,
        backoff_factor=spec.retry_backoff,
        status_forcelist=sorted(TRANSIENT_STATUSES),
        allowed_methods=("GET",),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    retry.stopping = stopping
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=spec.workers)
    session = requests.Session()
    session.headers["User-Agent"] = "harvester (image-classification dataset builder)"
    # Proxies and CA bundle read from the environment once, here, rather than on each of a
    # harvest's requests (a third of a fetch's CPU). With NO_PROXY set, requests must judge
    # each URL against it, so it keeps reading the environment for proxies itself.
    session.verify = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                      or True)
    proxies = urllib.request.getproxies()
    if not proxies.get("no"):
        session.trust_env = False
        session.proxies = proxies
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def record(db: Database, result: Downloaded | DownloadFailed, max_attempts: int) -> bool:
    """Record one download's outcome (in the caller's transaction).

    Returns True when the photo left its class's dataset window (failed or rejected).
    """
    if isinstance(result, Downloaded):
        move(db, result.photo_id, State.FOUND, State.DOWNLOADED,
             source_path=result.source_path, source_bytes=result.source_bytes,
             sha256=result.sha256, attempts=result.attempts, reason=None)
        return False
    log.info("photo %s: %s (%s)", result.photo_id, result.reason, result.detail)
    if result.placeholder_sha256:
        db.execute("INSERT OR IGNORE INTO placeholders (sha256, url) VALUES (?, ?)",
                   [result.placeholder_sha256, result.detail])
    if result.transient and result.attempts < max_attempts:
        record_attempt(db, result.photo_id, State.FOUND, result.reason)
        return False
    target = State.REJECTED if result.rejected else State.FAILED
    return move(db, result.photo_id, State.FOUND, target,
                reason=result.reason, attempts=result.attempts)


class HostWatch:
    """Watches the image host over a whole run.

    Transient failures of many photos one after another, with nothing getting through
    in between, mean the host is failing, not the photos: the run stops so that it can
    be resumed later. Attempts are still counted, so a few photos that keep failing on
    a healthy host end as failed and replaced, and no harvest can be stuck for good.
    """

    def __init__(self, spec: DownloadSpec) -> None:
        self.limit = max(16, 2 * spec.workers)
        self.failing: set[str] = set()  # photos failing since anything last got through
        self.host_answered = False
        self.last_failure: DownloadFailed | None = None

    def observe(self, results: Iterable[Downloaded | DownloadFailed]) -> None:
        for result in results:
            if isinstance(result, DownloadFailed) and result.transient:
                self.failing.add(result.photo_id)
                self.last_failure = result
            else:  # a download, or an answer about the photo itself (404, placeholder)
                self.failing.clear()
                self.host_answered = True
        if len(self.failing) >= self.limit:
            self._stop()

    def end_of_round(self) -> None:
        # A whole round failed and nothing has got through since the run started.
        if self.failing and not self.host_answered:
            self._stop()

    def _stop(self) -> NoReturn:
        last = self.last_failure
        detail = f" (last: {last.reason}: {last.detail})" if last else ""
        raise ImageHostFailing(
            f"{len(self.failing)} photos' downloads failed one after another{detail}; "
            "the image host looks unreachable"
        )


def source_path_for(photo: Photo) -> str:
    suffix = PurePosixPath(urlparse(photo.url or "").path).suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png", ".gif", ".webp"):
        suffix = ".jpg"
    return f"{SOURCES_DIR}/{photo.class_}/{photo.photo_id}{suffix}"


def fetch_source(
    session: requests.Session, output_dir: Path, spec: DownloadSpec, photo_id: str, url: str,
    relative: str, attempt: int,
) -> tuple[Downloaded | DownloadFailed, bytes | None]:
    """Fetch one photo's bytes to its source file `relative`; returns the outcome and the bytes.

    Errors come back as data (with no bytes), except a full disk. `attempt` counts this try.
    """
    target = output_dir / relative
    if target.exists():
        # Written whole (by rename) by a run that died before recording it: no second fetch.
        data = target.read_bytes()
        return Downloaded(photo_id, relative, len(data), hashlib.sha256(data).hexdigest(),
                          attempt), data

    def failed(reason: str, detail: str, **kind: bool) -> tuple[DownloadFailed, None]:
        return DownloadFailed(photo_id, reason, detail, attempt, **kind), None

    try:
        with _get(session, url, spec.timeout) as response:
            if response.status_code != 200:
                status = response.status_code
                return failed(f"http_{status}", response.reason or "",
                              transient=status in TRANSIENT_STATUSES)
            if PLACEHOLDER_MARK in urlparse(response.url).path:
                # Its bytes are learned: the same image served without a redirect (from a
                # cache, a mirror) is then known for what it is (see dedupe).
                body = response.raw.read(PLACEHOLDER_MAX_BYTES, decode_content=True)
                return DownloadFailed(photo_id, "unavailable", response.url, attempt,
                                      rejected=True,
                                      placeholder_sha256=hashlib.sha256(body).hexdigest()), None
            if _declared_length(response) > MAX_SOURCE_BYTES:
                return failed("too_large", f"{_declared_length(response)} bytes", rejected=True)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(CHUNK):
                size += len(chunk)
                if size > MAX_SOURCE_BYTES:
                    return failed("too_large", f"over {MAX_SOURCE_BYTES} bytes", rejected=True)
                chunks.append(chunk)
    except requests.Timeout as error:
        return failed("timeout", str(error), transient=True)
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError) as error:
        # Refused, reset, or dropped in the middle of the body: the next try may work.
        return failed("connection_error", f"{type(error).__name__}: {error}", transient=True)
    except requests.RequestException as error:
        # Redirect loops, invalid URLs, broken chunked encoding: this photo's answer is bad.
        return failed("bad_response", f"{type(error).__name__}: {error}")
    # Written whole once the body is in: a dropped connection leaves no file to clean up.
    # Made durable by the harvest, with the batch it is recorded in (files.sync_filesystem).
    data = b"".join(chunks)
    write_atomically(target, data, durable=False)
    return Downloaded(photo_id, relative, size, hashlib.sha256(data).hexdigest(), attempt), data


def _get(session: requests.Session, url: str, timeout: float) -> requests.Response:
    """`session.get(url, stream=True)` for a quarter less CPU: a copy of a GET prepared once
    from the session's headers, with the URL set (requests' "prepared requests").

    `Session.get` would also merge the session's cookies, auth, params and hooks and the
    environment's settings into each request: an image download has none of them (the
    proxies and CA bundle are the session's, from `make_session`; with NO_PROXY set,
    `send` still picks each URL's proxy). Preparing each request whole would still check
    its empty params and body against typing protocols and read its empty cookie jar:
    37 microseconds, against 16 for the copy. A 240 px image's whole fetch, one thread,
    6 alternating rounds of 800 (bench/throughput.py's stand-in): 0.34-0.53 ms of CPU this
    way, 0.39-0.57 ms prepared whole, 0.48-0.67 ms with `session.get`.
    """
    request = _blank_get(session).copy()
    request.prepare_url(url, "")  # no params ("", not {}: nothing to check)
    request.prepare_auth(None, "")  # a user and password in the URL, as requests would
    return session.send(request, stream=True, timeout=timeout)


# Each session's blank GET (see `_blank_get`), gone with the session.
_BLANK_GETS: weakref.WeakKeyDictionary[requests.Session, requests.PreparedRequest] = (
    weakref.WeakKeyDictionary())


def _blank_get(session: requests.Session) -> requests.PreparedRequest:
    """A GET with the session's headers and no URL yet: copied for each of its downloads.

    Made at the session's first download, with its headers as they are then (`make_session`
    sets them all). A copy shares the blank's hooks, which nothing here changes.
    """
    blank = _BLANK_GETS.get(session)
    if blank is None:  # two threads may both make one: either will do
        blank = requests.Request("GET", "http://127.0.0.1/", headers=session.headers).prepare()
        _BLANK_GETS[session] = blank
    return blank


def _declared_length(response: requests.Response) -> int:
    try:
        return int(response.headers.get("Content-Length") or 0)
    except ValueError:
        return 0  # a garbled header: the streamed size is checked anyway
