"""Photos stream through search, download and resize at once; one writer records them.

Each class's dataset window (its first `count` live photos in search order, see
`states.dataset_window`) is walked by a `Cursor`. A photo in the window still to fetch or
resize goes to the worker processes (see `workers`), which fetch and resize it. When a
class's window reaches past what search has found, the next search page is asked for
between batches, while the workers go on with the photos in flight.

Only the loop here, in the calling thread, touches the database: workers hand back
results as data, and the loop records them in one transaction per batch. Memory is
bounded by IN_FLIGHT photos, however large the harvest.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from harvester import db as queries
from harvester import download, files, resize, search
from harvester.config import ClassSpec, Config
from harvester.download import Downloaded, DownloadFailed, HostWatch
from harvester.flickr import FlickrClient
from harvester.progress import ProgressSink
from harvester.resize import Resized
from harvester.states import LIVE, Photo, State, live_count
from harvester.workers import Crashed, Job, Result, Workers

# Photos handed to workers and not yet recorded. Enough to keep every worker busy through
# a slow search call (a second or so of Flickr) between batches; small enough that memory
# does not notice.
IN_FLIGHT = 1024
# A batch is recorded when it holds this many photos' results, once every photo in flight
# is back, or this long after it was begun.
BATCH_PHOTOS = 256
BATCH_SECONDS = 0.5
# Rows read per query when a cursor takes more photos into a window.
TAKE_AT_ONCE = 512


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
        workers: Workers,
    ) -> None:
        self.db = db
        self.config = config
        self.client = client
        self.sink = sink
        self.host = host
        self.cursors = [Cursor(spec) for spec in config.classes]
        self.workers = workers
        self.class_of: dict[str, Cursor] = {}  # photo id -> its cursor, while in flight
        self.moved = 0
        self.searches: set[str] = set()  # the search bars started

    # The loop.

    def run(self) -> int:
        """Work until every window is resized or cannot grow; returns photos tried + pages."""
        self._start_progress()
        try:
            while True:
                self._record(self.workers.collect(BATCH_PHOTOS, wait=0))
                self._dispatch()
                searching = next((c for c in self.cursors if c.needs_search), None)
                if searching is not None:
                    self._search(searching)
                    continue
                if not self.class_of:
                    break
                # No longer than it takes the photos in flight to come back: the last photos
                # of a round are recorded as soon as they are in.
                self._record(self.workers.collect(min(BATCH_PHOTOS, len(self.class_of)),
                                                  wait=BATCH_SECONDS))
            self.host.end_of_round()
        except BaseException:
            # Stopping (Ctrl-C, a dead image host, a full disk): what the workers finished
            # is recorded all the same. The reason the run stops is the one reported.
            finished = [result for result in self.workers.stop()
                        if not isinstance(result, Crashed)]
            queries.abandon_open_transaction(self.db)
            self._record(finished, watch_host=False)
            raise
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
                # Only the columns a job needs: a window is mostly photos already done (all
                # of it, when a finished harvest runs again).
                rows = list(self.db.query(
                    f"SELECT photo_id, class, state, found_order, search_tags, url, attempts, "
                    f"source_path FROM photos "
                    f"WHERE class = ? AND found_order > ? AND state IN ({LIVE}) "
                    f"ORDER BY found_order LIMIT ?",
                    [cursor.spec.name, cursor.last_order, want]))
                cursor.at_end = len(rows) < want
                jobs = []
                for row in rows:
                    cursor.last_order = row["found_order"]
                    cursor.taken += 1
                    if row["state"] in (State.FOUND, State.DOWNLOADED):
                        jobs.append(self._job(Photo.from_row(row)))
                        self.class_of[row["photo_id"]] = cursor
                self.workers.submit(jobs)
                self.moved += len(jobs)

    @staticmethod
    def _job(photo: Photo) -> Job:
        photo_id = photo.photo_id
        if photo.state == State.DOWNLOADED:  # fetched by an earlier run: resized only
            return Job(photo_id, None, photo.attempts, str(photo.source_path),
                       resize.dataset_path(photo))
        return Job(photo_id, photo.url, photo.attempts + 1, download.source_path_for(photo),
                   resize.dataset_path(photo))

    def _record(self, batch: list[Result], watch_host: bool = True) -> None:
        if not batch:
            return
        downloads = resizes = 0
        if any(isinstance(result, Downloaded | Resized) for result in batch):
            files.sync_filesystem(self.config.output_dir)  # the files, before their states
        with self.db.atomic():
            for result in batch:
                if isinstance(result, Crashed):
                    raise result.error
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
