"""Photos stream through search, download and resize at once; one writer records them.

Each class's dataset window (its first `count` live photos in search order, see
`states.dataset_window`) is walked by a `Cursor`. A found photo in the window goes to a
download worker (a thread; the fetch waits on the network), which hands the bytes it
wrote straight to a resize worker (a process per core; decode, resize and encode need
the CPU). When a class's window reaches past what search has found, the next search
page is asked for between batches, while the workers go on with the photos in flight.

Only the loop here, in the calling thread, touches the database: workers hand back
results as data, and the loop records them in one transaction per batch. Memory is
bounded by IN_FLIGHT photos, however large the harvest.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import requests
from sqlite_utils import Database

from harvester import download, resize, search
from harvester.config import ClassSpec, Config
from harvester.download import Downloaded, DownloadFailed, HostWatch
from harvester.flickr import FlickrClient
from harvester.progress import ProgressSink
from harvester.resize import Rejected, Resized, ResizeJob
from harvester.states import LIVE, Photo, State, live_count

# Photos handed to workers and not yet recorded. Enough to keep every worker busy through
# a slow search call (a second or so of Flickr) between batches; small enough that memory
# does not notice.
IN_FLIGHT = 1024
# A batch is recorded when it holds this many results, or this long after its first.
BATCH_RESULTS = 256
BATCH_SECONDS = 0.5
# Rows read per query when a cursor takes more photos into a window.
TAKE_AT_ONCE = 512

Result = Downloaded | DownloadFailed | Resized | Rejected


@dataclass
class Cursor:
    """How far a class's dataset window reaches in search order."""

    spec: ClassSpec
    last_order: int = 0  # found_order of the last photo taken into the window
    taken: int = 0  # live photos up to last_order: the window's size so far
    at_end: bool = False  # every photo found so far is taken
    searched_out: bool = False  # Flickr has no more for the class

    @property
    def room(self) -> int:
        return self.spec.count - self.taken

    @property
    def needs_search(self) -> bool:
        return self.at_end and self.room > 0 and not self.searched_out


class Stream:
    """One round of the harvest's work: see the module's docstring."""

    def __init__(
        self,
        db: Database,
        config: Config,
        client: FlickrClient,
        sink: ProgressSink,
        host: HostWatch,
        session: requests.Session,
    ) -> None:
        self.db = db
        self.config = config
        self.client = client
        self.sink = sink
        self.host = host
        self.cursors = [Cursor(spec) for spec in config.classes]
        self.class_of: dict[str, Cursor] = {}  # photo id -> its cursor, while in flight
        self.results: queue.SimpleQueue[Result | Future[Resized | Rejected]] = (
            queue.SimpleQueue())
        self.fetch = partial(download.fetch_source, session, config.output_dir, config.download)
        self.resize = partial(resize.resize_one, config.output_dir, config.image)
        self.fetchers: ThreadPoolExecutor | None = None
        self.resizers: Executor | None = None
        self.moved = 0
        self.searches: set[str] = set()  # the search bars started

    # The loop.

    def run(self) -> int:
        """Work until every window is resized or cannot grow; returns photos tried + pages."""
        self._start_progress()
        try:
            while True:
                self._record(self._collect(wait=False))
                self._dispatch()
                searching = next((c for c in self.cursors if c.needs_search), None)
                if searching is not None:
                    self._search(searching)
                    continue
                if not self.class_of:
                    break
                self._record(self._collect(wait=True))
            self.host.end_of_round()
        finally:
            self._stop_workers()
        for stage in ("download", "resize", *self.searches):
            self.sink.finish(stage)
        return self.moved

    def _search(self, cursor: Cursor) -> None:
        stage = f"search {cursor.spec.name}"
        before = live_count(self.db, cursor.spec.name)
        if stage not in self.searches:
            self.searches.add(stage)
            self.sink.start(stage, total=cursor.spec.count, done=min(before, cursor.spec.count))
        if not search.search_page(self.db, self.client, self.config, cursor.spec):
            cursor.searched_out = True
            return
        self.moved += 1
        cursor.at_end = False
        after = live_count(self.db, cursor.spec.name)
        self.sink.advance(stage, max(0, min(after, cursor.spec.count) - min(before,
                                                                        cursor.spec.count)))
        # A page can reject another class's photos as ambiguous: windows are recounted.
        for each in self.cursors:
            each.taken = self.db.execute(
                f"SELECT count(*) FROM photos WHERE class = ? AND found_order <= ? "
                f"AND state IN ({LIVE})", [each.spec.name, each.last_order]).fetchone()[0]

    def _dispatch(self) -> None:
        """Take photos into the windows and hand them to the workers, up to IN_FLIGHT."""
        for cursor in self.cursors:
            while cursor.room > 0 and not cursor.at_end and len(self.class_of) < IN_FLIGHT:
                want = min(cursor.room, TAKE_AT_ONCE, IN_FLIGHT - len(self.class_of))
                # Light rows: a window is mostly photos already done (all of it, when a
                # finished harvest runs again); whole rows are read for those with work.
                rows = self.db.execute(
                    f"SELECT photo_id, state, found_order FROM photos WHERE class = ? "
                    f"AND found_order > ? AND state IN ({LIVE}) ORDER BY found_order LIMIT ?",
                    [cursor.spec.name, cursor.last_order, want]).fetchall()
                cursor.at_end = len(rows) < want
                for photo_id, state, found_order in rows:
                    cursor.last_order = found_order
                    cursor.taken += 1
                    if state == State.FOUND:
                        photo = self._start(cursor, photo_id)
                        self.fetchers.submit(self._fetch_then_resize, photo).add_done_callback(
                            self._report_crash)
                    elif state == State.DOWNLOADED:  # fetched by an earlier run
                        photo = self._start(cursor, photo_id)
                        self._submit_resize(resize.job_for(photo, str(photo.source_path)))

    def _start(self, cursor: Cursor, photo_id: str) -> Photo:
        """The photo, whole, counted in flight; the workers start with a round's first."""
        if self.fetchers is None:
            self.fetchers = ThreadPoolExecutor(self.config.download.workers,
                                               thread_name_prefix="download")
            self._start_resizers()
        self.class_of[photo_id] = cursor
        self.moved += 1
        row = next(self.db.query("SELECT * FROM photos WHERE photo_id = ?", [photo_id]))
        return Photo.from_row(row)

    def _report_crash(self, future: Future[None]) -> None:
        # Errors come back as data; what escapes a worker (a full disk) stops the run.
        if not future.cancelled() and future.exception() is not None:
            self.results.put(future)  # type: ignore[arg-type]

    def _collect(self, wait: bool) -> list[Result]:
        """Finished work: a batch's worth, waiting up to BATCH_SECONDS for it if `wait`."""
        batch: list[Result] = []
        deadline = time.monotonic() + BATCH_SECONDS
        while len(batch) < BATCH_RESULTS:
            try:
                item = self.results.get(timeout=max(0.0, deadline - time.monotonic())
                                        ) if wait else self.results.get_nowait()
            except queue.Empty:
                break
            batch.append(item.result() if isinstance(item, Future) else item)
        return batch

    def _record(self, batch: list[Result], watch_host: bool = True) -> None:
        if not batch:
            return
        downloads = resizes = 0
        with self.db.atomic():
            for result in batch:
                cursor = self.class_of[result.photo_id]
                if isinstance(result, Downloaded | DownloadFailed):
                    left = download.record(self.db, result,
                                           self.config.download.max_attempts)
                    downloads += isinstance(result, Downloaded)
                    done = not isinstance(result, Downloaded)
                else:
                    left = resize.record(self.db, result)
                    resizes += isinstance(result, Resized)
                    done = True
                cursor.taken -= left
                if done:
                    del self.class_of[result.photo_id]
        if watch_host:
            self.host.observe(result for result in batch
                              if isinstance(result, Downloaded | DownloadFailed))
        self.sink.advance("download", downloads)
        self.sink.advance("resize", resizes)

    # The workers' side: these run in download threads (and the loop, for earlier downloads).

    def _fetch_then_resize(self, photo: Photo) -> None:
        result = self.fetch(photo)
        self.results.put(result)
        if isinstance(result, Downloaded):
            self._submit_resize(resize.job_for(photo, result.source_path))

    def _submit_resize(self, job: ResizeJob) -> None:
        assert self.resizers is not None
        try:
            future = self.resizers.submit(self.resize, job)
        except RuntimeError:
            return  # the run is stopping: the photo stays downloaded, resized next run
        future.add_done_callback(self.results.put)

    def _start_resizers(self) -> None:
        workers = self.config.resize.workers or os.cpu_count() or 1
        # forkserver, not fork: workers inherit no open files (the run's lock) and no threads.
        self.resizers = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("forkserver"),
            initializer=resize.end_with, initargs=(os.getpid(),),
        )

    # Progress and the end.

    def _start_progress(self) -> None:
        """Bars count towards every class's `count`: what its window still needs of each stage."""
        downloaded = resized = 0
        for spec in self.config.classes:
            states = dict(self.db.execute(
                f"SELECT state, count(*) FROM (SELECT state FROM photos WHERE class = ? "
                f"AND state IN ({LIVE}) ORDER BY found_order LIMIT ?) GROUP BY state",
                [spec.name, spec.count]).fetchall())
            downloaded += states.get("downloaded", 0)
            resized += states.get("resized", 0) + states.get("assigned", 0)
        wanted = sum(spec.count for spec in self.config.classes)
        self.sink.start("download", total=wanted, done=downloaded + resized)
        self.sink.start("resize", total=wanted, done=resized)

    def _stop_workers(self) -> None:
        """Stop the workers, and record what they finished: no finished work is lost."""
        for pool in (self.fetchers, self.resizers):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        finished: list[Result] = []
        while True:
            try:
                item = self.results.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Future):
                if item.cancelled() or item.exception() is not None:
                    continue
                item = item.result()
            if item is not None:  # (a download thread's future: it failed, or returns None)
                finished.append(item)
        # The run is stopping for a reason of its own: that is the one reported.
        self._record(finished, watch_host=False)

