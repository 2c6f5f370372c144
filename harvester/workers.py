"""Run a function over many items on a pool, with a bounded number in flight."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

COMMIT_EVERY = 64  # results per database transaction
COMMIT_SECONDS = 1.0


def bounded_map(
    pool: Executor, work: Callable[[Item], Result], items: Iterable[Item], in_flight: int
) -> Iterator[Result]:
    """Results of `work` over `items`, as they complete; at most `in_flight` submitted at once.

    Memory stays flat however many items there are. On an error or an early exit,
    work not yet started is cancelled.
    """
    pending: set[Future[Result]] = set()
    source = iter(items)
    try:
        for item in source:
            pending.add(pool.submit(work, item))
            if len(pending) >= in_flight:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        for future in pending:
            future.cancel()


def batched_by_time(results: Iterable[Result]) -> Iterator[list[Result]]:
    """Group results so the database sees one transaction per batch, not one per photo."""
    batch: list[Result] = []
    started = time.monotonic()
    for result in results:
        batch.append(result)
        if len(batch) >= COMMIT_EVERY or time.monotonic() - started >= COMMIT_SECONDS:
            yield batch
            batch, started = [], time.monotonic()
    if batch:
        yield batch
