"""Open the state database from schema.sql; query helpers and the log of runs and API calls."""

from __future__ import annotations

import json
from collections import defaultdict
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from harvester.config import ClassSpec

SCHEMA = files("harvester").joinpath("schema.sql").read_text(encoding="utf-8")


def open_database(path: Path | None) -> Database:
    """The harvest database at `path` (created if new), or an in-memory one for None."""
    if path is None:
        db = Database(memory=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = Database(path)
        db.enable_wal()
        # NORMAL is crash-safe in WAL mode: a killed process loses nothing committed.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
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
            f"SELECT method, sum(calls) AS calls FROM api_calls {where} "
            "GROUP BY method ORDER BY method",
            params,
        )
    }


def start_run(db: Database, command: str, definition: dict[str, Any]) -> int:
    cursor = db.execute(
        "INSERT INTO runs (command, config) VALUES (?, ?)",
        [command, json.dumps(definition, sort_keys=True)],
    )
    return int(cursor.lastrowid)


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


def count_api_call(db: Database, run_id: int, method: str, failed: bool) -> None:
    db.execute(
        """INSERT INTO api_calls (run_id, method, calls, errors) VALUES (?, ?, 1, ?)
           ON CONFLICT (run_id, method)
           DO UPDATE SET calls = calls + 1, errors = errors + excluded.errors""",
        [run_id, method, int(failed)],
    )


def class_exhausted(db: Database, spec: ClassSpec) -> bool:
    """Whether every query of the class has run out of pages."""
    placeholders = ", ".join("?" for _ in spec.tags)
    done = db.execute(
        f"SELECT count(*) FROM search_cursors WHERE class = ? AND tags IN ({placeholders}) "
        "AND exhausted",
        [spec.name, *spec.tags],
    ).fetchone()[0]
    return done == len(spec.tags)
