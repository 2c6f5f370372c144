"""How stages report progress; the CLI decides how (or whether) to show it."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def start(self, stage: str, total: int, done: int = 0) -> None: ...

    def advance(self, stage: str, amount: int = 1) -> None: ...

    def finish(self, stage: str) -> None: ...


class Silent:
    def start(self, stage: str, total: int, done: int = 0) -> None:
        pass

    def advance(self, stage: str, amount: int = 1) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass
