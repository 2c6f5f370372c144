"""Stage: Flickr search pages -> found photos, until each class has enough to fill its count.

Flickr serves only the first 4,000 results of any query, and pages past them repeat
earlier photos. So a class's query is walked in upload-date windows that each hold
fewer. The first window is the whole date range: if its first page says it holds more,
the window is `split`, and windows are cut off it one at a time from the newest end,
each sized from the count of the window before it (uploads are uneven over the years, but
change slowly). A window that still holds too many is cut smaller; every page's photos
are kept either way, as they are real matches. Windows, pages and photos are recorded in
one transaction per page, so a killed search resumes in the window and at the page it
was on, and asks Flickr nothing it already has.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sqlite_utils import Database

from harvester import db as queries
from harvester.config import ClassSpec, Config
from harvester.flickr import FlickrClient, FoundPhoto, SearchPage
from harvester.progress import ProgressSink
from harvester.states import live_count, record_found

# Flickr serves the first 4,000 results of a query; later pages repeat earlier ones.
FLICKR_RESULT_CAP = 4000
# What a cut window is sized to hold: eight pages of 500 with room for the estimate to be
# a little off before the window needs cutting again.
WINDOW_TARGET = 3750
# No photo on Flickr was uploaded before 2004-01-01.
FLICKR_BEGAN = 1_072_915_200
# A photo the class's search found that belongs to an earlier class (ambiguous_photos:
# first_class): not recorded here, so that class's own search records it.
SOMEONE_ELSES = "someone else's"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """Photos uploaded from `uploaded_from` to `uploaded_to` (unix time, both inclusive)."""

    window_id: int
    class_: str
    uploaded_from: int
    uploaded_to: int
    state: str
    next_page: int
    total: int | None

    @property
    def span(self) -> tuple[int, int]:
        return self.uploaded_from, self.uploaded_to

    @property
    def seconds(self) -> int:
        return self.uploaded_to - self.uploaded_from + 1


def fill(
    db: Database,
    client: FlickrClient,
    config: Config,
    sink: ProgressSink,
    clock: Callable[[], float] = time.time,
) -> int:
    """Search until every class has `count` live photos, or Flickr has no more for it.

    Returns how many pages were recorded. (A harvest searches page by page as its
    windows need photos, see `stream`; this is every class's search at once.)
    """
    pages = 0
    for spec in config.classes:
        live = live_count(db, spec.name)
        if live >= spec.count:
            continue
        stage = f"search {spec.name}"
        sink.start(stage, total=spec.count, done=live)
        while live < spec.count and search_page(db, client, config, spec, clock):
            pages += 1
            now = live_count(db, spec.name)
            sink.advance(stage, max(0, min(now, spec.count) - min(live, spec.count)))
            live = now
        sink.finish(stage)
    return pages


def search_page(
    db: Database,
    client: FlickrClient,
    config: Config,
    spec: ClassSpec,
    clock: Callable[[], float] = time.time,
) -> bool:
    """Ask Flickr for the class's next page and record it; False when every window is walked."""
    record_licenses(db, client, config)
    window = next_window(db, spec, config, clock)
    if window is None:
        return False
    page = client.search(spec, window.span, window.next_page, config.image.longest_side)
    record_page(db, config, spec, window, page)
    return True


def record_licenses(db: Database, client: FlickrClient, config: Config) -> None:
    """Flickr's license names and URLs, asked once per harvest, for attribution."""
    if db.execute("SELECT count(*) FROM licenses").fetchone()[0]:
        return
    licenses = client.licenses()
    queries.store_licenses(db, [asdict(license) for license in licenses])
    known = {license.license_id for license in licenses}
    for license_id in config.flickr.license:
        if str(license_id) not in known:
            log.warning("flickr.license: Flickr has no license %d; no photo will have it",
                        license_id)


def next_window(
    db: Database, spec: ClassSpec, config: Config, clock: Callable[[], float]
) -> Window | None:
    """The class's window to search next; None when the whole date range is walked."""
    whole = whole_range(db, spec, config, clock)
    if whole.state == "open":
        return whole
    current = _windows(db, "class = ? AND state = 'open'", [spec.name])
    if current:
        return current[0]
    if whole.state == "done":
        return None
    return cut_next(db, spec, newest_first=not _ascending(config.flickr.sort))


def whole_range(
    db: Database, spec: ClassSpec, config: Config, clock: Callable[[], float]
) -> Window:
    """The class's first window: every upload date the config allows."""
    whole = _whole(db, spec.name)
    if whole:
        return whole
    # Fixed at the first search: a resumed search walks the same windows, and photos
    # uploaded after the harvest began never shift its pages.
    uploaded_to = config.flickr.max_upload_date or int(clock())
    uploaded_from = config.flickr.min_upload_date or min(FLICKR_BEGAN, uploaded_to)
    db.execute(
        "INSERT INTO search_windows (class, uploaded_from, uploaded_to) VALUES (?, ?, ?)",
        [spec.name, uploaded_from, uploaded_to],
    )
    return whole_range(db, spec, config, clock)


def _whole(db: Database, class_name: str) -> Window | None:
    # The first window spans the whole range; every later one is cut from it, so smaller.
    windows = _windows(db, "class = ? ORDER BY uploaded_to - uploaded_from DESC LIMIT 1",
                       [class_name])
    return windows[0] if windows else None


def cut_next(
    db: Database, spec: ClassSpec, newest_first: bool, seconds: int | None = None
) -> Window | None:
    """Cut the next window off the part of the range not walked yet, sized to fit the cap.

    `seconds` is its length when already judged (see seconds_to_fit); otherwise it is
    sized from the count of the window measured last, the nearest to it.
    """
    whole = _whole(db, spec.name)
    assert whole is not None, "cut_next before the whole range was searched"
    walked = [window for window in _windows(db, "class = ? AND window_id != ? AND state = 'done'",
                                            [spec.name, whole.window_id])]
    if newest_first:
        edge = min((window.uploaded_from for window in walked), default=whole.uploaded_to + 1)
        left = (whole.uploaded_from, edge - 1)
    else:
        edge = max((window.uploaded_to for window in walked), default=whole.uploaded_from - 1)
        left = (edge + 1, whole.uploaded_to)
    if left[0] > left[1]:
        return None
    if seconds is None:
        measured = _windows(
            db, "class = ? AND total IS NOT NULL ORDER BY window_id DESC LIMIT 1", [spec.name]
        )[0]
        if measured.total and measured.seconds > 1:
            seconds = max(1, WINDOW_TARGET * measured.seconds // measured.total)
        else:
            # The last window held nothing, or was one crowded second: neither tells the
            # pace beyond it. The window being walked in pieces does: its count, less what
            # was walked inside it, spread over its part not walked yet.
            seconds = _pace_of_the_rest(db, spec, walked, left)
    seconds = max(1, min(seconds, left[1] - left[0] + 1))
    span = (left[1] - seconds + 1, left[1]) if newest_first else (left[0], left[0] + seconds - 1)
    db.execute(
        "INSERT INTO search_windows (class, uploaded_from, uploaded_to) VALUES (?, ?, ?)",
        [spec.name, *span],
    )
    return _windows(db, "class = ? AND state = 'open'", [spec.name])[0]


def _pace_of_the_rest(
    db: Database, spec: ClassSpec, walked: list[Window], left: tuple[int, int]
) -> int:
    """Seconds of the unwalked part of the latest split window that hold WINDOW_TARGET."""
    cut = _windows(db, "class = ? AND state = 'split' ORDER BY window_id DESC LIMIT 1",
                   [spec.name])[0]
    rest = min(left[1], cut.uploaded_to) - max(left[0], cut.uploaded_from) + 1
    inside = sum(window.total or 0 for window in walked
                 if cut.uploaded_from <= window.uploaded_from <= window.uploaded_to
                 <= cut.uploaded_to)
    remaining = (cut.total or 0) - inside
    return rest if remaining <= 0 else max(1, WINDOW_TARGET * rest // remaining)


def _windows(db: Database, where: str, params: list[object]) -> list[Window]:
    return [
        Window(row["window_id"], row["class"], row["uploaded_from"], row["uploaded_to"],
               row["state"], row["next_page"], row["total"])
        for row in db.query(f"SELECT * FROM search_windows WHERE {where}", params)
    ]


def _ascending(sort: str) -> bool:
    # Oldest first for the ascending date sorts, so the dataset follows the sort asked for.
    return sort.startswith("date-") and sort.endswith("-asc")


def record_page(
    db: Database, config: Config, spec: ClassSpec, window: Window, page: SearchPage
) -> int:
    """Record a page's photos and move its window on (or split it), atomically.

    Returns how many photos were new.
    """
    if page.malformed:
        log.warning("%s page %d: skipped %d malformed photo records", spec.name,
                    window.next_page, page.malformed)
    with db.atomic():
        new = record_photos(db, config, spec, page.photos)
        if window.next_page == 1 and page.total > FLICKR_RESULT_CAP:
            if window.uploaded_from < window.uploaded_to:
                # Too many for one query: walk it in smaller windows instead.
                _move_window(db, window, "split", page.pages, page.total)
                cut_after_overfull(db, config, spec, window, page)
                return new
            log.warning(
                "%s: %d photos were uploaded in the same second; Flickr serves only %d of them",
                spec.name, page.total, FLICKR_RESULT_CAP,
            )
        per_page = config.flickr.per_page
        reached_cap = window.next_page * per_page >= FLICKR_RESULT_CAP
        last_page = page.pages is not None and window.next_page >= page.pages
        # Asked past the end, Flickr answers with its last page again.
        went_back = page.page is not None and page.page < window.next_page
        walked = (not page.photos and not page.malformed) or last_page or went_back or reached_cap
        _move_window(db, window, "done" if walked else "open", page.pages, page.total)
    return new


def cut_after_overfull(
    db: Database, config: Config, spec: ClassSpec, window: Window, page: SearchPage
) -> None:
    """After a window's first page says it holds too many, cut the next window smaller.

    How much smaller is judged from the upload dates on that page, by the sort:
    - date-posted: the page holds the window's newest (oldest) uploads, every one between
      the window's edge and the page's last photo. That stretch is walked: it is recorded
      as done and the next window is the rest, so every call brings a page of new photos.
    - relevance, interestingness: the page is a sample of the window's uploads over time;
      the next window ends where the share of the sample in it is the share wanted.
    - date-taken, or a page that cannot tell: the window's average pace.
    """
    sort = config.flickr.sort
    newest_first = not _ascending(sort)
    dates = sorted(
        (photo.date_upload for photo in page.photos if photo.date_upload is not None
         and window.uploaded_from <= photo.date_upload <= window.uploaded_to),
        reverse=newest_first,
    )
    edge = window.uploaded_to if newest_first else window.uploaded_from
    # Its average pace: always a smaller window, as its total is above WINDOW_TARGET.
    seconds = max(1, WINDOW_TARGET * window.seconds // page.total)
    if sort.startswith("date-posted") and dates and dates[-1] != edge:
        # Photos uploaded in the same second as the page's last may go on past it.
        walked = (dates[-1] + 1, edge) if newest_first else (edge, dates[-1] - 1)
        db.execute(
            "INSERT INTO search_windows (class, uploaded_from, uploaded_to, state, next_page, "
            "total) VALUES (?, ?, ?, 'done', 2, ?)",
            [spec.name, *walked, sum(1 for date in dates if date != dates[-1])],
        )
        seconds = window.seconds
    elif sort.startswith("date-posted") and dates:
        # The whole page in the edge's second: that second alone is the next window.
        seconds = 1
    elif sort.startswith(("relevance", "interestingness")):
        wanted = len(dates) * WINDOW_TARGET // page.total
        if 1 <= wanted < len(dates):
            # At least the edge's second, however many of the sample share it.
            seconds = max(1, abs(edge - dates[wanted]))
    cut_next(db, spec, newest_first, seconds)


def _move_window(db: Database, window: Window, state: str, pages: int | None, total: int) -> None:
    # Guarded on the page it was at: a window moves on only from where this search found it.
    db.execute(
        """UPDATE search_windows SET state = ?, next_page = next_page + 1, pages = ?, total = ?,
           updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
           WHERE window_id = ? AND next_page = ?""",
        [state, pages, total, window.window_id, window.next_page],
    )


def record_photos(
    db: Database, config: Config, spec: ClassSpec, photos: list[FoundPhoto]
) -> int:
    first_order = db.execute("SELECT coalesce(max(found_order), 0) FROM photos").fetchone()[0]
    rows = []
    for photo in photos:
        reason = rejection(config, spec, photo)
        if reason == SOMEONE_ELSES:
            continue
        rows.append({
            **vars(photo),  # (its fields are plain values: no need for asdict's deep copy)
            "class_": spec.name,
            "found_order": first_order + len(rows) + 1,
            "search_tags": spec.query,
            "reason": reason,
        })
    return record_found(db, rows, reject_conflicts=config.ambiguous_photos == "reject")


def rejection(config: Config, spec: ClassSpec, photo: FoundPhoto) -> str | None:
    """Why a found photo cannot be in the class's dataset, or None if it can."""
    if not photo.url:
        return "no_usable_size"
    if config.flickr.license and photo.license not in {str(i) for i in config.flickr.license}:
        return "license"  # Flickr answered outside the filter it was given
    tags = (photo.tags or "").split()
    others = [other for other in config.classes if other != spec and other.matches(tags)]
    if not others:
        return None
    if config.ambiguous_photos == "first_class":
        first = next(other for other in config.classes if other == spec or other in others)
        return None if first == spec else SOMEONE_ELSES
    return "ambiguous"
