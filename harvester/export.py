"""The dataset's files, each one a query over the database. Needs no network."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from harvester import db as queries
from harvester.config import Config
from harvester.files import replacing, write_atomically
from harvester.progress import ProgressSink, Silent

SPLIT_FILE = "train_test_split.json"
URLS_FILE = "urls_data.json"
SUMMARY_FILE = "summary.txt"
ARCHIVE_FILE = "dataset.tgz"


def run(db: Database, config: Config, sink: ProgressSink | None = None) -> list[Path]:
    """Write every artifact into the output folder; returns their paths."""
    out = config.output_dir
    write_atomically(out / SPLIT_FILE, _json(split_document(db)))
    write_atomically(out / URLS_FILE, _json(urls_document(db, config)))
    write_atomically(out / SUMMARY_FILE, summary_text(db, config).encode())
    write_archive(db, config, out / ARCHIVE_FILE, sink or Silent())
    return [out / name for name in (SPLIT_FILE, URLS_FILE, SUMMARY_FILE, ARCHIVE_FILE)]


def split_document(db: Database) -> dict[str, list[str]]:
    document: dict[str, list[str]] = {"train": [], "test": []}
    for row in db.query(
        "SELECT split, path FROM photos WHERE state = 'assigned' ORDER BY path"
    ):
        document[row["split"]].append(row["path"])
    return document


def urls_document(db: Database, config: Config) -> dict[str, list[str]]:
    document: dict[str, list[str]] = {spec.name: [] for spec in config.classes}
    for row in db.query(
        "SELECT class, url FROM photos WHERE state = 'assigned' ORDER BY class, path"
    ):
        document.setdefault(row["class"], []).append(row["url"])
    return document


def summary_text(db: Database, config: Config) -> str:
    totals = queries.class_totals(db)
    reasons = queries.reason_counts(db)
    columns = ("found", "downloaded", "failed", "rejected", "in_dataset", "train", "test")
    header = ("class", *columns, "wanted", "short")
    rows: list[tuple[Any, ...]] = []
    for spec in config.classes:
        counts = totals.get(spec.name, {})
        values = [counts.get(column) or 0 for column in columns]
        rows.append((spec.name, *values, spec.count, max(0, spec.count - values[4])))
    sums = tuple(sum(row[index] for row in rows) for index in range(1, len(header)))
    rows.append(("total", *sums))
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: tuple[Any, ...]) -> str:
        first, *rest = (str(cell) for cell in cells)
        return "  ".join(
            [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        )

    lines = ["harvester summary", "", line(header), *(line(row) for row in rows), ""]
    short = [(row[0], row[5], row[8]) for row in rows[:-1] if row[9]]
    for name, have, wanted in short:
        if queries.class_exhausted(db, config.class_spec(name)):
            lines.append(f"shortfall: {name} has {have} of {wanted} photos: Flickr had no more.")
        else:
            lines.append(f"not finished: {name} has {have} of {wanted} photos; "
                         "`harvester resume` continues the harvest.")
    if short:
        lines.append("")
    lines.append("Failed and rejected photos, by reason:")
    if not any(reasons.values()):
        lines.append("  none")
    for name, by_reason in reasons.items():
        for reason, photos in by_reason.items():
            lines.append(f"  {name}  {reason}  {photos}")
    lines += ["", "Flickr API calls, by run:"]
    lines += [f"  {line}" for line in run_lines(queries.runs(db))] or ["  none"]
    return "\n".join(lines) + "\n"


def run_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One line per run: when, how it ended, and its Flickr API calls by method."""
    lines = []
    for run in runs:
        # No outcome: the run still going (the last), or one killed before it could say.
        ended = run["outcome"] or ("running" if run is runs[-1] else "killed")
        calls = ", ".join(f"{method} {count}" for method, count in run["api_calls"].items())
        lines.append(f"run {run['run_id']} ({run['command']}, "
                     f"{run['started_at'][:19].replace('T', ' ')}, {ended}): {calls or 'no calls'}")
    return lines


def write_archive(db: Database, config: Config, target: Path, sink: ProgressSink) -> None:
    """A gzipped tar of the class folders and metadata files, byte-reproducible.

    Relative member names, sorted; no timestamps, owners or modes from the machine.
    """
    out = config.output_dir
    paths = [row["path"] for row in db.query(
        "SELECT path FROM photos WHERE state = 'assigned' ORDER BY path"
    )]
    sink.start("archive", total=len(paths))
    with replacing(target) as handle, gzip.GzipFile(
        filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=6
    ) as zipped, tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted({spec.name for spec in config.classes}):
            tar.addfile(_member(name, directory=True))
        for relative in paths:
            data = (out / relative).read_bytes()
            tar.addfile(_member(relative, size=len(data)), io.BytesIO(data))
            sink.advance("archive")
        for name in (SPLIT_FILE, URLS_FILE, SUMMARY_FILE):
            data = (out / name).read_bytes()
            tar.addfile(_member(name, size=len(data)), io.BytesIO(data))
    sink.finish("archive")


def _member(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    return info


def _json(document: Any) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
