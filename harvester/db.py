"""Open the state database from schema.sql; query helpers and the log of runs and API calls."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from harvester.config import ClassSpec
from harvester.errors import UsageError
from harvester.quota import HOUR

SCHEMA = files("harvester").joinpath("schema.sql").read_text(encoding="utf-8")
SCHEMA_VERSION = int(re.search(r"PRAGMA user_version = (\d+)", SCHEMA).group(1))  # type: ignore[union-attr]


class UnusableDatabase(UsageError):
    """The harvest database is not one this harvester can read."""


class NoHarvest(UsageError):
    """There is no harvest database where the config says it would be."""


def open_database(path: Path | None) -> Database:
    """The harvest database at `path` (created if new), or an in-memory one for None."""
    if path is None:
        db = Database(memory=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = Database(path)
        try:
            db.enable_wal()
            # NORMAL is crash-safe in WAL mode: a killed process loses nothing committed.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.table_names()
        except sqlite3.DatabaseError as error:
            db.close()
            raise UnusableDatabase(f"{path} is not a harvest database ({error})") from None
        if tables and version != SCHEMA_VERSION:
            db.close()
            raise UnusableDatabase(
                f"{path} was made by another version of harvester (layout {version}, this one "
                f"reads {SCHEMA_VERSION}): set a new output_dir to start the harvest again"
            )
    db.executescript(SCHEMA)
    return db


def state_counts(db: Database) -> dict[str, dict[str, int]]:
    """{class: {state: photos}} from the progress view."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in db.query("SELECT class, state, photos FROM progress"):
        counts[row["class"]][row["state"]] = row["photos"]
    return counts


def reason_counts(db: Database) -> dict[str, dict[str, int]]:
    """{class: {"rejected: reason" or "failed: reason": photos}}."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in db.query(
        """SELECT class, state, reason, count(*) AS photos FROM photos
           WHERE state IN ('failed', 'rejected') GROUP BY class, state, reason
           ORDER BY class, state, photos DESC, reason"""
    ):
        counts[row["class"]][f"{row['state']}: {row['reason']}"] = row["photos"]
    return counts


def class_totals(db: Database) -> dict[str, dict[str, int]]:
    """Per class: found, downloaded, failed, rejected, in_dataset, train, test."""
    return {
        row.pop("class"): row
        for row in db.query(
            """SELECT class,
                      count(*) AS found,
                      count(source_path) AS downloaded,
                      sum(state = 'failed') AS failed,
                      sum(state = 'rejected') AS rejected,
                      sum(state = 'assigned') AS in_dataset,
                      sum(split = 'train') AS train,
                      sum(split = 'test') AS test
               FROM photos GROUP BY class"""
        )
    }


def api_call_counts(db: Database, run_id: int | None = None) -> dict[str, int]:
    """API calls by method, for one run or (None) over the harvest's whole life."""
    where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
    return {
        row["method"]: row["calls"]
        for row in db.query(
            f"SELECT method, count(*) AS calls FROM api_calls {where} "
            "GROUP BY method ORDER BY method",
            params,
        )
    }


def runs(db: Database) -> list[dict[str, Any]]:
    """Every run, oldest first, with its Flickr API calls by method."""
    calls: dict[int, dict[str, int]] = defaultdict(dict)
    for row in db.query(
        "SELECT run_id, method, count(*) AS calls FROM api_calls GROUP BY run_id, method "
        "ORDER BY run_id, method"
    ):
        calls[row["run_id"]][row["method"]] = row["calls"]
    return [
        {**row, "api_calls": calls.get(row["run_id"], {})}
        for row in db.query(
            "SELECT run_id, command, started_at, finished_at, outcome FROM runs ORDER BY run_id"
        )
    ]


def calls_in_last_hour(db: Database, now: float) -> int:
    return db.execute(
        "SELECT count(*) FROM api_calls WHERE made_at > ?", [now - HOUR]
    ).fetchone()[0]


def start_run(db: Database, command: str, definition: dict[str, Any]) -> int:
    cursor = db.execute(
        "INSERT INTO runs (command, config) VALUES (?, ?)",
        [command, json.dumps(definition, sort_keys=True)],
    )
    return int(cursor.lastrowid)


def abandon_open_transaction(db: Database) -> None:
    """Undo a transaction that an exception left open.

    A Ctrl-C can land between a batch's BEGIN and its COMMIT, or inside the rollback that
    follows: the batch is then still open, and whatever is written next would join it
    and be lost with it. Its states were never committed; their files are on disk, and
    resume picks them up.
    """
    if db.conn.in_transaction:
        db.conn.rollback()


def finish_run(db: Database, run_id: int, outcome: str) -> None:
    db.execute(
        "UPDATE runs SET finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), outcome = ? "
        "WHERE run_id = ?",
        [outcome, run_id],
    )


def harvest_definition(db: Database) -> dict[str, Any] | None:
    """The config the harvest in this database was started with, if any."""
    rows = list(db.query("SELECT config FROM runs ORDER BY run_id LIMIT 1"))
    return json.loads(rows[0]["config"]) if rows else None


def class_exhausted(db: Database, spec: ClassSpec) -> bool:
    """Whether the class's search has walked every upload date it had: Flickr has no more."""
    windows = list(db.query(
        "SELECT uploaded_to - uploaded_from + 1 AS seconds, state FROM search_windows "
        "WHERE class = ? ORDER BY seconds DESC", [spec.name]))
    if not windows:
        return False
    whole, *cut = windows
    if whole["state"] != "split":
        return whole["state"] == "done"
    # Walked windows never overlap: together they cover the range once it is all walked.
    return sum(window["seconds"] for window in cut if window["state"] == "done") == whole[
        "seconds"]


def store_licenses(db: Database, licenses: list[dict[str, str | None]]) -> None:
    """Flickr's license list: rows of license_id, name and url."""
    db["licenses"].insert_all(licenses, replace=True)


def open_for_reading(path: Path) -> Database:
    """The existing harvest database at `path`, opened read-only: for a helper process (see
    `helper`) reading beside the harvest's process, which has checked and migrated it."""
    return Database(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True))


def dataset_size(db: Database) -> int:
    return db.execute("SELECT count(*) FROM photos WHERE state = 'assigned'").fetchone()[0]


def dataset_photos(db: Database, by_split: bool = False) -> Iterator[dict[str, Any]]:
    """The dataset's photos with what their exports need, by path (or by split, then path):
    streamed, not loaded."""
    order = "p.split, p.path" if by_split else "p.path"
    yield from db.query(
        "SELECT p.photo_id, p.class, p.split, p.path, p.file_sha256, p.file_bytes, p.url, "
        "p.title, p.owner, p.owner_name, p.license, l.name AS license_name, "
        "l.url AS license_url, p.page_url "
        "FROM photos p LEFT JOIN licenses l ON l.license_id = p.license "
        f"WHERE p.state = 'assigned' ORDER BY {order}"
    )


def snapshot_time(db: Database) -> int | None:
    """The upper end of the searched upload dates: Flickr as it was then is what was harvested."""
    return db.execute("SELECT max(uploaded_to) FROM search_windows").fetchone()[0]


def record_artifacts(db: Database, artifacts: list[dict[str, Any]]) -> None:
    """What the export just wrote (path, bytes, sha256), replacing the last export's record."""
    with db.atomic():
        db.execute("DELETE FROM artifacts")
        db["artifacts"].insert_all(artifacts)


def export_fingerprint(db: Database) -> str | None:
    """The digest of what the last export was made of (see export.inputs_fingerprint)."""
    row = db.execute("SELECT fingerprint FROM export_inputs").fetchone()
    return row[0] if row else None


def record_export(db: Database, artifacts: list[dict[str, Any]], fingerprint: str) -> None:
    """What the export just wrote, replacing the last export's record, and what it was made of."""
    with db.atomic():
        record_artifacts(db, artifacts)
        db.execute("INSERT OR REPLACE INTO export_inputs (id, fingerprint) VALUES (1, ?)",
                   [fingerprint])


def artifacts(db: Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT path, bytes, sha256 FROM artifacts ORDER BY path"))
