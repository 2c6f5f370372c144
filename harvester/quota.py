"""The Flickr API quota: at most `calls_per_hour` calls in any hour, across runs.

Every call is logged in the database as it is made (table api_calls), so the budget
survives a restart: a harvest killed after 3,000 calls and resumed at once has 600
left for the rest of that hour, not another 3,600.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlite_utils import Database

HOUR = 3600.0

log = logging.getLogger(__name__)


class Quota:
    def __init__(
        self,
        db: Database,
        run_id: int,
        calls_per_hour: int,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = db
        self._run_id = run_id
        self._per_hour = calls_per_hour
        self._clock = clock
        self._sleep = sleep

    def spend(self, method: str) -> int:
        """Wait until a call fits in the hour's budget, then log it. Returns its log id."""
        while (wait := self.wait_needed()) > 0:
            until = datetime.fromtimestamp(self._clock() + wait).strftime("%H:%M:%S")
            log.warning(
                "Flickr quota: %d API calls in the last hour; waiting %.0fs, until %s",
                self._per_hour, wait, until,
            )
            self._sleep(wait)
        cursor = self._db.execute(
            "INSERT INTO api_calls (run_id, method, made_at) VALUES (?, ?, ?)",
            [self._run_id, method, self._clock()],
        )
        return int(cursor.lastrowid)

    def failed(self, call_id: int) -> None:
        self._db.execute("UPDATE api_calls SET failed = 1 WHERE call_id = ?", [call_id])

    def wait_needed(self) -> float:
        """Seconds until the oldest of the last hour's calls leaves the hour, if it is full."""
        now = self._clock()
        # The calls of the last hour, newest first: the budget is full when there are
        # calls_per_hour of them, and frees up when the oldest of those turns an hour old.
        row = self._db.execute(
            "SELECT made_at FROM api_calls WHERE made_at > ? ORDER BY made_at DESC "
            "LIMIT 1 OFFSET ?",
            [now - HOUR, self._per_hour - 1],
        ).fetchone()
        if row is None:
            return 0.0
        # Never more than an hour, even if the machine's clock was set back since.
        return min(HOUR, max(0.0, row[0] + HOUR - now))
