"""The command line: the only module that prints tables, shows progress or decides exit codes."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from harvester import db as queries
from harvester.config import Config, ConfigError, load_config
from harvester.errors import Stopped, UsageError
from harvester.progress import ProgressSink, Silent
from harvester.states import State

# What harvests, exports and checks (requests, flickrapi, Pillow, the workers: half of
# what the command would load) is imported by the commands that use it, so that
# `harvester status` and `--help` load in half the time.
if TYPE_CHECKING:
    from harvester.pipeline import Outcome

EXIT_OK, EXIT_STOPPED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
T = TypeVar("T")

app = typer.Typer(
    help="Build image-classification datasets from tagged Flickr photos. "
    "Every photo's progress is kept in SQLite, so any run can be stopped and resumed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft_wrap: messages stay on one line, so paths and commands can be copied and grepped.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigPath = Annotated[
    Path,
    typer.Option(
        "--config", "-c",
        help="The harvest's config file; output_dir in it is relative to the file's folder.",
        show_default=True,
    ),
]


@app.callback()
def _global_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every retry, failure and rejection.")
    ] = False,
) -> None:
    handler: logging.Handler = (
        RichHandler(console=err, show_path=False) if err.is_terminal else _StderrHandler()
    )
    if not err.is_terminal:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler],
                        force=True)
    # flickrapi logs every non-200 answer as an error; harvester reports what matters itself.
    logging.getLogger("flickrapi").setLevel(logging.INFO if verbose else logging.CRITICAL)


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever sys.stderr is at the time of the record, not at start-up."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


@app.command()
def run(config: ConfigPath = Path("config.yaml")) -> None:
    """Search, download, resize, split and export; continues a harvest already in output_dir."""
    _harvest(config, "run")


@app.command()
def resume(config: ConfigPath = Path("config.yaml")) -> None:
    """Continue an interrupted harvest; nothing that finished is done again."""
    _harvest(config, "resume")


@app.command()
def status(
    config: ConfigPath = Path("config.yaml"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Per class: photos in each state, the target, and what is left."""
    from harvester.export import run_lines

    settings = _load(config)
    report = _guard(lambda: status_report(settings))
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title=f"harvest in {settings.output_dir}")
    table.add_column("class")
    for state in State:
        table.add_column(str(state), justify="right")
    table.add_column("wanted", justify="right")
    table.add_column("left", justify="right")
    for name, row in report["classes"].items():
        table.add_row(name, *(str(row["states"][state]) for state in State),
                      str(row["wanted"]), str(row["left"]))
    out.print(table)
    for name, row in report["classes"].items():
        for reason, photos in row["reasons"].items():
            out.print(f"  {name}: {photos} {reason}")
    out.print("Flickr API calls, by run:")
    for line in run_lines(report["runs"]) or ["none"]:
        out.print(f"  {line}", highlight=False)
    quota = report["quota"]
    out.print(f"Quota: {quota['calls_last_hour']} of {quota['calls_per_hour']} calls "
              "used in the last hour")


@app.command("export")
def export_command(config: ConfigPath = Path("config.yaml")) -> None:
    """Rebuild every export (split, urls, attribution, card, split folders, archive, shards,
    summary) from the database alone, with no network."""
    from harvester.pipeline import export_only

    settings = _load(config)
    written = _guard(lambda: export_only(settings), f"harvester export -c {config}")
    for path in written:
        out.print(f"wrote {path}")


@app.command("verify")
def verify_command(config: ConfigPath = Path("config.yaml")) -> None:
    """Check the output folder against its database and dataset.tgz: every file present, with
    the size and sha256 recorded when it was written. Exit 1 if anything differs."""
    from harvester.pipeline import verify_only

    settings = _load(config)
    with _progress_sink() as sink:
        report = _guard(lambda: verify_only(settings, sink))
    for problem in report.problems:
        out.print(problem, highlight=False, markup=False)
    if not report.ok:
        _fail(EXIT_STOPPED, f"{len(report.problems)} differences in {settings.output_dir}. "
              f"`harvester export -c {config}` rewrites the export files from the database; "
              "a changed or missing image can be restored from the archive "
              "(tar -xzf dataset.tgz PATH).")
    out.print(f"verified: {report.checked} files in {settings.output_dir} are as recorded, "
              "and dataset.tgz holds what the database lists.")


@app.command()
def preview(
    config: ConfigPath = Path("config.yaml"),
    per_class: Annotated[
        int, typer.Option("--per-class", "-n", min=1, max=2000,
                          help="Photos to show per class, a random sample.")
    ] = 64,
) -> None:
    """A contact sheet per class and one HTML page of them all: look before you train.
    Works during a harvest too, on the photos kept so far."""
    from harvester.pipeline import preview_only

    settings = _load(config)
    with _progress_sink() as sink:
        written = _guard(lambda: preview_only(settings, per_class, sink))
    for path in written:
        out.print(f"wrote {path}")
    out.print(f"Open {written[-1].as_uri()} in a browser.", highlight=False)


@app.command()
def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the demo dataset and its config.")
    ] = Path("demo"),
) -> None:
    """Build a small dataset offline, against the built-in Flickr stand-in: no keys needed."""
    from harvester.demo import run_demo

    with _progress_sink() as sink:
        outcome = _guard(lambda: run_demo(output, sink), f"harvester demo -o {output}")
    _report(outcome)
    out.print(f"Look inside: sqlite3 {outcome.output_dir / 'harvest.db'} "
              "'select * from progress'")
    out.print(f"Or: harvester status -c {output / 'config.yaml'}")


def status_report(config: Config) -> dict[str, Any]:
    if not config.database_path.exists():
        raise queries.NoHarvest(
            f"no harvest in {config.output_dir} yet: start one with `harvester run`")
    db = queries.open_database(config.database_path)
    try:
        states = queries.state_counts(db)
        reasons = queries.reason_counts(db)
        calls = queries.api_call_counts(db)
        runs = queries.runs(db)
        last_hour = queries.calls_in_last_hour(db, time.time())
    finally:
        db.close()
    classes = {}
    for spec in config.classes:
        counts = {str(state): states.get(spec.name, {}).get(str(state), 0) for state in State}
        classes[spec.name] = {
            "wanted": spec.count,
            "states": counts,
            "in_dataset": counts["assigned"],
            "left": max(0, spec.count - counts["assigned"]),
            "reasons": reasons.get(spec.name, {}),
        }
    return {
        "output_dir": str(config.output_dir),
        "classes": classes,
        "api_calls": calls,  # all runs
        "runs": runs,
        "quota": {"calls_per_hour": config.flickr.calls_per_hour, "calls_last_hour": last_hour},
    }


def _harvest(config_path: Path, command: str) -> None:
    from harvester.pipeline import Credentials, MissingCredentials, harvest

    config = _load(config_path)
    try:
        credentials = Credentials.from_environment(os.environ)
    except MissingCredentials as error:
        _fail(EXIT_USAGE, str(error))
    with _progress_sink() as sink:
        outcome = _guard(
            lambda: harvest(config, credentials, command=command, sink=sink),
            f"harvester resume -c {config_path}",
        )
    _report(outcome)


def _report(outcome: Outcome) -> None:
    total = sum(outcome.in_dataset.values())
    per_class = ", ".join(f"{name} {outcome.in_dataset.get(name, 0)}" for name in outcome.wanted)
    out.print(f"Dataset ready in {outcome.output_dir}: {total} photos ({per_class}).")
    out.print(f"Archive: {outcome.output_dir / 'dataset.tgz'}; "
              f"report: {outcome.output_dir / 'summary.txt'}")
    calls = sum(outcome.api_calls.values())
    by_method = ", ".join(f"{method} {count}" for method, count in outcome.api_calls.items())
    out.print(f"Flickr API calls this run: {calls}" + (f" ({by_method})" if calls else ""))
    for name, missing in outcome.shortfalls.items():
        err.print(f"[yellow]shortfall:[/] {name} has {outcome.wanted[name] - missing} of "
                  f"{outcome.wanted[name]} photos: Flickr had no more.")


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as error:
        _fail(EXIT_USAGE, f"config error: {error}")


def _guard(work: Callable[[], T], continue_with: str | None = None) -> T:
    """Run `work`, turning what stops it into a message and an exit code.

    `continue_with` is the command that picks the work up again, for the message.
    """
    resume_hint = (
        f"Everything finished so far is saved; `{continue_with}` continues."
        if continue_with else ""
    )
    try:
        return work()
    except ConfigError as error:
        _fail(EXIT_USAGE, f"config error: {error}")
    except UsageError as error:  # no harvest there, another process on it, ...
        _fail(EXIT_USAGE, str(error))
    except Stopped as error:  # Flickr, the image host, a worker, a changed file
        _fail(EXIT_STOPPED, f"stopped: {error}\n{resume_hint}")
    except OSError as error:
        _fail(EXIT_STOPPED, f"stopped: {error}\n{resume_hint}")
    except KeyboardInterrupt:
        _fail(EXIT_INTERRUPTED, f"interrupted.\n{resume_hint}")


def _fail(code: int, message: str) -> NoReturn:
    err.print(message.rstrip(), markup=False, highlight=False)
    raise typer.Exit(code)


class _RichSink:
    """Progress bars on a terminal, one per stage."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def start(self, stage: str, total: int, done: int = 0) -> None:
        self._tasks[stage] = self._progress.add_task(stage, total=total, completed=done)

    def advance(self, stage: str, amount: int = 1) -> None:
        self._progress.advance(self._tasks[stage], amount)

    def finish(self, stage: str) -> None:
        task = self._tasks.pop(stage)
        self._progress.update(task, visible=False)
        self._progress.remove_task(task)


@contextmanager
def _progress_sink() -> Iterator[ProgressSink]:
    """Bars on a terminal; nothing at all in a pipe or CI log."""
    if not err.is_terminal:
        yield Silent()
        return
    with Progress(
        TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True,
    ) as progress:
        yield _RichSink(progress)


def main() -> None:
    try:
        # A Ctrl-C that came while the command was loading (blocked by __main__) is
        # raised here, and stops it like any other.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        app()
    except KeyboardInterrupt:
        # Ctrl-C outside a harvest (while loading, say): same clean stop.
        err.print("interrupted.")
        sys.exit(EXIT_INTERRUPTED)
