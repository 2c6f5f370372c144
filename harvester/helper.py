"""One function run in a process of its own, beside the harvest's: its result, or its error.

The export has its documents and split folders written by a helper while it builds the
archive itself: Python runs one thread at a time in a process, and the two jobs take about
as long. A helper is started from the workers' fork server (see `forkserver`), so it starts
in milliseconds, with none of this process's open files or threads.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, NoReturn

from harvester import forkserver
from harvester.errors import Stopped

# How long a helper may take to clean up after a stop before it is ended.
STOP_GRACE_SECONDS = 5.0


class HelperFailed(Stopped):
    """A helper process died, or hit a bug: the run stops, and resume does the work again."""


class Helper:
    """`function(*args)` in a helper process, started at once; `result()` waits for it.

    Leaving the `with` block waits for the helper to end. When the block is left by an
    exception (a Ctrl-C, which only this process gets, or a failure of its own part), the
    helper is stopped first: it cleans up as if interrupted (files are written whole or not
    at all).
    """

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        context = forkserver.context()
        self._answer, answer_in = context.Pipe(duplex=False)
        # By name: the helper imports its module itself, as `_serve` sets it up to.
        self._process = context.Process(target=_serve,
                                        args=(function.__module__, function.__qualname__,
                                              args, answer_in),
                                        name=f"harvester-helper-{function.__name__}",
                                        daemon=True)
        try:
            self._process.start()
        except BaseException:
            self._answer.close()
            raise
        finally:
            answer_in.close()  # the helper's now: its end of the pipe closes when it ends
        self._outcome: tuple[str, Any] | None = None

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is not None and self._process.is_alive():
            self._process.terminate()  # raises SystemExit in the helper (see `_serve`)
        self._process.join(STOP_GRACE_SECONDS if kind is not None else None)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._answer.close()

    def result(self) -> Any:
        """What the function returned; raises what it raised (an OSError as such, anything
        else as HelperFailed), or HelperFailed if the helper died."""
        if self._outcome is None:
            try:
                self._outcome = self._answer.recv()
            except EOFError:  # ended without answering: killed, or out of memory
                self._process.join()
                self._outcome = ("error", HelperFailed(
                    f"a helper process ended unexpectedly (exit code {self._process.exitcode})"))
        status, value = self._outcome
        if status == "error":
            raise value
        return value


def picklable(error: BaseException, failed: type[Exception]) -> BaseException:
    """`error` as it can cross to another process: an OSError keeps its errno, strerror and
    file name (what the user is told), anything else becomes `failed` with its text.

    An exception that cannot be pickled would otherwise be lost on the way.
    """
    if isinstance(error, OSError) and error.errno is not None:
        return OSError(error.errno, error.strerror, error.filename)
    return failed(f"{type(error).__name__}: {error}")


def _serve(module: str, name: str, args: tuple[Any, ...], answer: Connection) -> None:
    # A stop from the harvest (terminate) unwinds like Ctrl-C does: partial files removed.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # As the `harvester` command does (see __main__): sqlite-utils would import pandas.
    sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]
    try:
        function = getattr(importlib.import_module(module), name)
        outcome: tuple[str, Any] = ("ok", function(*args))
    except BaseException as error:  # sent to the harvest, which raises it
        outcome = ("error", picklable(error, HelperFailed))
    try:
        answer.send(outcome)
    except OSError:
        pass  # the harvest is gone (killed): nobody is waiting for the answer
    finally:
        answer.close()


def _exit_on_signal(number: int, frame: object) -> NoReturn:
    raise SystemExit(128 + number)

