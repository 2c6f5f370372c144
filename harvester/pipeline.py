"""The stages in order: run, resume, export. Raises only for what stops a run."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from harvester import assign, dedupe, download, export, files, preview, stream, workers
from harvester import db as queries
from harvester.config import Config, ConfigError
from harvester.db import NoHarvest
from harvester.errors import UsageError
from harvester.files import Locked, exclusive
from harvester.flickr import DEFAULT_REST_URL, FlickrClient
from harvester.progress import ProgressSink, Silent
from harvester.quota import Quota
from harvester.verify import Report, verify

LOCK_FILE = "harvest.lock"


class HarvestBusy(UsageError):
    """Another harvester process is working on this output folder."""


class MissingCredentials(UsageError):
    """API_KEY or API_SECRET is not set."""


@dataclass(frozen=True)
class Credentials:
    api_key: str
    api_secret: str
    rest_url: str

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Credentials:
        missing = [name for name in ("API_KEY", "API_SECRET") if not environ.get(name)]
        if missing:
            raise MissingCredentials(
                f"{' and '.join(missing)} not set: export your Flickr API key and secret "
                "(https://www.flickr.com/services/apps/create/) and run again"
            )
        return cls(environ["API_KEY"], environ["API_SECRET"],
                   environ.get("FLICKR_API_URL") or DEFAULT_REST_URL)


@dataclass(frozen=True)
class Outcome:
    output_dir: Path
    wanted: dict[str, int]
    in_dataset: dict[str, int]
    api_calls: dict[str, int]  # this run's, by method

    @property
    def shortfalls(self) -> dict[str, int]:
        return {
            name: wanted - self.in_dataset.get(name, 0)
            for name, wanted in self.wanted.items()
            if self.in_dataset.get(name, 0) < wanted
        }


def harvest(
    config: Config,
    credentials: Credentials,
    *,
    command: str = "run",
    sink: ProgressSink | None = None,
) -> Outcome:
    """Search, download, resize, assign and export, continuing any harvest already there.

    `command` is "run" (start or continue) or "resume" (continue only).
    """
    if command == "resume" and not config.database_path.exists():
        raise NoHarvest(
            f"no harvest to resume in {config.output_dir}: start one with `harvester run`"
        )
    with only_run(config):
        return harvest_locked(config, credentials, command, sink or Silent())


def harvest_locked(
    config: Config,
    credentials: Credentials,
    command: str,
    sink: ProgressSink,
) -> Outcome:
    """`harvest` for a caller already holding the output folder's lock (see `only_run`)."""
    db = queries.open_database(config.database_path)
    try:
        check_same_harvest(db, config)
        remove_partial_files(config)
        run_id = queries.start_run(db, command, config.harvest_definition())
        try:
            client = FlickrClient(
                credentials.api_key,
                credentials.api_secret,
                config.flickr,
                rest_url=credentials.rest_url,
                quota=Quota(db, run_id, config.flickr.calls_per_hour),
            )
            complete_stages(db, config, client, sink)
            outcome = _outcome(db, config, run_id)
            # Ended before the export, so the summary it writes tells how this run ended.
            queries.finish_run(db, run_id, "shortfall" if outcome.shortfalls else "complete")
            export.run(db, config, sink, force=False)
        except KeyboardInterrupt:
            queries.abandon_open_transaction(db)
            queries.finish_run(db, run_id, "interrupted")
            raise
        except BaseException:
            queries.abandon_open_transaction(db)
            queries.finish_run(db, run_id, "stopped")
            raise
        return outcome
    finally:
        db.close()


def remove_partial_files(config: Config) -> None:
    """Temporary files a killed run's workers left behind, in the folders they write to.

    Under the output folder's lock, before any worker starts: nothing else writes there.
    """
    for spec in config.classes:
        for folder in (config.output_dir / spec.name,
                       config.output_dir / download.SOURCES_DIR / spec.name):
            files.remove_partial_files(folder)


def complete_stages(
    db: Database,
    config: Config,
    client: FlickrClient,
    sink: ProgressSink,
) -> None:
    # Search, download and resize stream together (see stream). Dedupe then judges what was
    # resized; a photo it rejects, or a download that may work later, makes another round,
    # until no stage has anything to do.
    # One watch over the image host for the whole run, so a dead host is noticed however
    # few photos each round tries; one set of workers, started with the run's first photo.
    host = download.HostWatch(config.download)
    with workers.Workers(config) as pool:
        while (stream.Stream(db, config, client, sink, host, pool).run()
               + dedupe.run(db, config)):
            pass
    assign.run(db, config)


def export_only(config: Config) -> list[Path]:
    """Rebuild every artifact from the database alone."""
    _require_harvest(config)
    with only_run(config):
        db = queries.open_database(config.database_path)
        try:
            # The exports describe the harvest by its config: it must be the harvest's own.
            check_same_harvest(db, config)
            return export.run(db, config)
        finally:
            db.close()


def verify_only(config: Config, sink: ProgressSink | None = None) -> Report:
    """Check the output folder against the database and the archive; writes nothing."""
    _require_harvest(config)
    with only_run(config):
        db = queries.open_database(config.database_path)
        try:
            check_same_harvest(db, config)
            return verify(db, config, sink or Silent())
        finally:
            db.close()


def preview_only(config: Config, per_class: int, sink: ProgressSink | None = None) -> list[Path]:
    """Contact sheets and a page of the photos kept so far; safe while a harvest runs."""
    _require_harvest(config)
    db = queries.open_database(config.database_path)
    try:
        check_same_harvest(db, config)
        return preview.write_preview(db, config, per_class, sink or Silent())
    finally:
        db.close()


def _require_harvest(config: Config) -> None:
    if not config.database_path.exists():
        raise NoHarvest(f"no harvest in {config.output_dir}: start one with `harvester run`")


@contextmanager
def only_run(config: Config) -> Iterator[None]:
    """One harvester at a time per output folder: two would fetch everything twice."""
    try:
        with exclusive(config.output_dir / LOCK_FILE):
            yield
    except Locked:
        raise HarvestBusy(
            f"another harvester is already working on {config.output_dir}; "
            "wait for it to finish, or stop it and run `harvester resume`"
        ) from None


def check_same_harvest(db: Database, config: Config) -> None:
    """Refuse to continue a harvest under a config that would change its dataset."""
    started_with = queries.harvest_definition(db)
    now = json.loads(json.dumps(config.harvest_definition(), sort_keys=True))
    if started_with is None or started_with == now:
        return
    changed = sorted(key for key in now.keys() | started_with.keys()
                     if now.get(key) != started_with.get(key))
    raise ConfigError(
        ", ".join(changed),
        f"differs from the harvest already in {config.output_dir}; "
        "set a new output_dir to start another harvest, or restore the config it was started with",
    )


def _outcome(db: Database, config: Config, run_id: int) -> Outcome:
    totals = queries.class_totals(db)
    return Outcome(
        output_dir=config.output_dir,
        wanted={spec.name: spec.count for spec in config.classes},
        in_dataset={name: row["in_dataset"] or 0 for name, row in totals.items()},
        api_calls=queries.api_call_counts(db, run_id),
    )
