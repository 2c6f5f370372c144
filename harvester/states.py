"""The photo states, and the only code that creates photos or changes their state.

Every change is a compare-and-set: `UPDATE ... WHERE photo_id = ? AND state = ?`,
so no photo can jump from a state other than the one its stage expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # worker processes run without sqlite_utils (and what it imports)
    from sqlite_utils import Database


class State(StrEnum):
    FOUND = "found"
    DOWNLOADED = "downloaded"
    RESIZED = "resized"
    ASSIGNED = "assigned"
    FAILED = "failed"  # could not be fetched; reason kept
    REJECTED = "rejected"  # unusable or duplicate; reason kept


TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.FOUND: frozenset({State.DOWNLOADED, State.FAILED, State.REJECTED}),
    State.DOWNLOADED: frozenset({State.RESIZED, State.FAILED, State.REJECTED}),
    State.RESIZED: frozenset({State.ASSIGNED, State.FAILED, State.REJECTED}),
    State.ASSIGNED: frozenset(),
    State.FAILED: frozenset(),
    State.REJECTED: frozenset(),
}
LIVE_STATES = (State.FOUND, State.DOWNLOADED, State.RESIZED, State.ASSIGNED)

# Columns a transition may set alongside the state.
WRITABLE = frozenset(
    {"split", "source_path", "source_bytes", "sha256", "path", "width", "height", "reason",
     "attempts", "file_sha256", "file_bytes", "pixels_sha256", "phash", "duplicate_of"}
)


class IllegalTransition(Exception):
    """A stage asked for a move the state machine does not have: a bug, never user error."""


@dataclass(frozen=True, slots=True)
class Photo:
    photo_id: str
    class_: str
    state: State
    found_order: int
    search_tags: str
    url: str | None = None
    url_width: int | None = None
    url_height: int | None = None
    source_path: str | None = None
    source_bytes: int | None = None
    sha256: str | None = None
    path: str | None = None
    width: int | None = None
    height: int | None = None
    file_sha256: str | None = None
    file_bytes: int | None = None
    pixels_sha256: str | None = None
    phash: str | None = None
    duplicate_of: str | None = None
    split: str | None = None
    owner: str | None = None
    owner_name: str | None = None
    license: str | None = None
    title: str | None = None
    page_url: str | None = None
    tags: str | None = None
    date_upload: int | None = None
    reason: str | None = None
    attempts: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Photo:
        values = {key: value for key, value in row.items() if key in _ROW_FIELDS}
        return cls(**values, class_=row["class"], state=State(row["state"]))


# The columns that are Photo fields under their own names (read once: a harvest makes
# tens of thousands of Photos).
_ROW_FIELDS = frozenset(field.name for field in fields(Photo)) - {"class_", "state"}


def record_found(
    db: Database, photos: Iterable[Mapping[str, Any]], reject_conflicts: bool = True
) -> int:
    """Insert newly found photos. Returns how many were new.

    A photo with a `reason` is recorded as rejected for it (no usable size, ambiguous...).
    A photo id already known is not recorded twice. If another class has it and
    `reject_conflicts`, the photo is a labelling hazard and leaves the dataset as
    rejected `ambiguous`: so which class a photo counts for never depends on which
    search found it first. Otherwise the class that found it first keeps it.
    """
    photos = list(photos)
    inserted = 0
    for columns, rows in _by_columns(photos).items():
        before = db.conn.total_changes
        # One prepared statement for the page's photos, not one statement each.
        db.conn.executemany(
            f"INSERT OR IGNORE INTO photos ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})", rows)
        inserted += db.conn.total_changes - before
    if reject_conflicts:
        by_id = {photo["photo_id"]: photo["class_"] for photo in photos}
        known = [row for chunk in _chunks(list(by_id), 500) for row in db.execute(
            f"SELECT photo_id, class FROM photos WHERE photo_id IN "
            f"({', '.join('?' for _ in chunk)})", chunk).fetchall()]
        for photo_id, known_class in known:
            if known_class != by_id[photo_id]:
                _reject_if_ambiguous(db, photo_id, by_id[photo_id])
    return inserted


def _by_columns(photos: Iterable[Mapping[str, Any]]) -> dict[tuple[str, ...], list[list[Any]]]:
    """Rows to insert, grouped by the columns they give (a page's photos all give the same)."""
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    for photo in photos:
        row = {key: value for key, value in photo.items() if key != "class_"}
        row["class"] = photo["class_"]
        row["state"] = str(State.REJECTED if photo.get("reason") else State.FOUND)
        groups.setdefault(tuple(row), []).append(list(row.values()))
    return groups


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    return (items[start:start + size] for start in range(0, len(items), size))


def _reject_if_ambiguous(db: Database, photo_id: str, class_name: str) -> None:
    known_class, known_state = db.execute(
        "SELECT class, state FROM photos WHERE photo_id = ?", [photo_id]
    ).fetchone()
    state = State(known_state)
    # An assigned photo stays: classes are split only after every search has finished.
    if known_class != class_name and state in (State.FOUND, State.DOWNLOADED, State.RESIZED):
        move(db, photo_id, state, State.REJECTED, reason="ambiguous")


def move(db: Database, photo_id: str, source: State, target: State, **changes: Any) -> bool:
    """Move one photo from `source` to `target`, setting `changes` on its row.

    Returns False, changing nothing, when the photo is not in `source`.
    """
    return _guarded_move(db, [photo_id], source, target, changes) == 1


def move_all(db: Database, photo_ids: list[str], source: State, target: State,
             **changes: Any) -> int:
    """`move` for many photos given the same `changes`, a statement per 500 rather than
    one each; returns how many moved (those in `source`)."""
    return sum(_guarded_move(db, chunk, source, target, changes)
               for chunk in _chunks(photo_ids, 500))


def _guarded_move(db: Database, photo_ids: list[str], source: State, target: State,
                  changes: dict[str, Any]) -> int:
    if target not in TRANSITIONS[source]:
        raise IllegalTransition(f"{source} -> {target} is not a transition")
    unknown = set(changes) - WRITABLE
    if unknown:
        raise IllegalTransition(f"a transition cannot set {', '.join(sorted(unknown))}")
    assignments = "".join(f", {column} = ?" for column in changes)
    cursor = db.execute(
        f"UPDATE photos SET state = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
        f"{assignments} WHERE photo_id IN ({', '.join('?' for _ in photo_ids)}) AND state = ?",
        [str(target), *changes.values(), *photo_ids, str(source)],
    )
    return cursor.rowcount


def record_attempt(db: Database, photo_id: str, state: State, reason: str) -> bool:
    """Count a failed try at a photo's next step, leaving it in `state` to try again."""
    cursor = db.execute(
        "UPDATE photos SET attempts = attempts + 1, reason = ?, "
        "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE photo_id = ? AND state = ?",
        [reason, photo_id, str(state)],
    )
    return cursor.rowcount == 1


LIVE = ", ".join(f"'{state}'" for state in LIVE_STATES)


def live_count(db: Database, class_name: str) -> int:
    """A class's photos that are not failed or rejected."""
    return db.execute(
        f"SELECT count(*) FROM photos WHERE class = ? AND state IN ({LIVE})", [class_name]
    ).fetchone()[0]


def dataset_window(db: Database, class_name: str, count: int) -> list[Photo]:
    """The photos meant to be a class's dataset: its first `count` live photos in search order
    (their ids, states, order and owners).

    Failed and rejected photos drop out, so the window slides onto the next found
    photos: that is how a lost photo is replaced, and why the dataset is the same
    whatever order the work was done in.
    """
    # The columns a window is judged and split by, not whole rows: a window can be a
    # class's 50,000 photos.
    return [
        Photo.from_row(row)
        for row in db.query(
            f"SELECT photo_id, class, state, found_order, search_tags, owner FROM photos "
            f"WHERE class = ? AND state IN ({LIVE}) ORDER BY found_order LIMIT ?",
            [class_name, count],
        )
    ]
