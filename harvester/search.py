"""Stage: Flickr search pages -> found photos, until each class has enough to fill its count.

Each page is recorded with its cursor in one transaction, so a killed search
resumes at the page it was on and never asks for a page it already has.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from sqlite_utils import Database

from harvester.config import ClassSpec, Config
from harvester.flickr import FlickrClient, SearchPage
from harvester.progress import ProgressSink
from harvester.states import live_count, record_found

# Flickr serves only the first 4,000 results of a query; later pages repeat earlier ones.
FLICKR_RESULT_CAP = 4000

log = logging.getLogger(__name__)


def fill(db: Database, client: FlickrClient, config: Config, sink: ProgressSink) -> int:
    """Search until every class has `count` live photos, or its queries are exhausted.

    Returns how many pages were recorded.
    """
    pages = 0
    for spec in config.classes:
        live = live_count(db, spec.name)
        if live >= spec.count:
            continue
        stage = f"search {spec.name}"
        sink.start(stage, total=spec.count, done=live)
        while live < spec.count:
            tags = next_open_query(db, spec)
            if tags is None:
                break
            page_number = next_page(db, spec.name, tags)
            page = client.search(tags, page_number, config.image.longest_side)
            record_page(db, spec, tags, page_number, page, config.flickr.per_page)
            pages += 1
            now = live_count(db, spec.name)
            sink.advance(stage, max(0, min(now, spec.count) - min(live, spec.count)))
            live = now
        sink.finish(stage)
    return pages


def next_open_query(db: Database, spec: ClassSpec) -> str | None:
    """The first of the class's queries (one per tag, in config order) with pages left."""
    for tags in spec.tags:
        db.execute(
            "INSERT OR IGNORE INTO search_cursors (class, tags) VALUES (?, ?)", [spec.name, tags]
        )
        exhausted = db.execute(
            "SELECT exhausted FROM search_cursors WHERE class = ? AND tags = ?", [spec.name, tags]
        ).fetchone()[0]
        if not exhausted:
            return tags
    return None


def next_page(db: Database, class_name: str, tags: str) -> int:
    return db.execute(
        "SELECT next_page FROM search_cursors WHERE class = ? AND tags = ?", [class_name, tags]
    ).fetchone()[0]


def record_page(
    db: Database, spec: ClassSpec, tags: str, page_number: int, page: SearchPage, per_page: int
) -> int:
    """Record a page's photos and move the cursor past it, atomically. Returns photos new."""
    reached_cap = page_number * per_page >= FLICKR_RESULT_CAP
    last_page = page.pages is not None and page_number >= page.pages
    # Asked past the end, Flickr answers with its last page again.
    went_back = page.page is not None and page.page < page_number
    exhausted = (not page.photos and not page.malformed) or last_page or went_back or reached_cap
    if page.malformed:
        log.warning("%s page %d: skipped %d malformed photo records", tags, page_number,
                    page.malformed)
    with db.atomic():
        first_order = db.execute("SELECT coalesce(max(found_order), 0) FROM photos").fetchone()[0]
        new = record_found(
            db,
            (
                {
                    **asdict(photo),
                    "class_": spec.name,
                    "found_order": first_order + position,
                    "search_tags": tags,
                    "reason": None if photo.url else "no_usable_size",
                }
                for position, photo in enumerate(page.photos, start=1)
            ),
        )
        db.execute(
            """UPDATE search_cursors SET next_page = ?, pages = ?, total = ?, exhausted = ?,
               updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
               WHERE class = ? AND tags = ?""",
            [page_number + 1, page.pages, page.total, int(exhausted), spec.name, tags],
        )
    return new
