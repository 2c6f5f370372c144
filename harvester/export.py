"""The dataset's files, each one a query over the database. Needs no network."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from harvester import archive, layouts
from harvester import db as queries
from harvester.archive import Member
from harvester.card import CARD_FILE, card_text
from harvester.config import Config
from harvester.files import remove_partial_files, write_atomically
from harvester.helper import Helper
from harvester.progress import ProgressSink, Silent

SPLIT_FILE = "train_test_split.json"
URLS_FILE = "urls_data.json"
SUMMARY_FILE = "summary.txt"
ATTRIBUTION_CSV = "attribution.csv"
ATTRIBUTION_MD = "ATTRIBUTION.md"
ARCHIVE_FILE = "dataset.tgz"
# Written before the archive, and packed into it. Not summary.txt: it reports on the
# harvest (its runs, the archive's own sha256), which would change the archive's bytes.
DOCUMENTS = (SPLIT_FILE, URLS_FILE, ATTRIBUTION_CSV, ATTRIBUTION_MD, CARD_FILE)
ALL_RIGHTS_RESERVED = "0"
ATTRIBUTION_COLUMNS = ("path", "photo_id", "title", "owner", "owner_name", "license",
                       "license_name", "license_url", "page_url")
# From this many photos, the documents and split folders are written by a helper process
# while this one builds the archive (0.3 and 0.6 s at 5,000 photos); a smaller dataset's
# are written here sooner than a helper could start and import the export (0.1 s, and
# 0.4 s more where the fork server is not running yet, as in `harvester export`).
HELPER_MIN_PHOTOS = 2000


def run(db: Database, config: Config, sink: ProgressSink | None = None,
        force: bool = True) -> list[Path]:
    """Write every artifact into the output folder and record them; returns their paths.

    Unless `force`, a dataset exported before and unchanged since (same rows, figures and
    config, every export file still there at its size) is left as it is: only summary.txt,
    which lists the runs, is written again. A finished harvest's re-run is then quick.
    """
    sink = sink or Silent()
    out = config.output_dir
    # What a killed export left half written here (the archive, a document). Under the
    # output folder's lock: nothing else writes here meanwhile.
    remove_partial_files(out)
    remove_rejected_images(db, config)
    fingerprint = inputs_fingerprint(db, config)
    if not force and fingerprint == queries.export_fingerprint(db) and _still_there(db, out):
        kept = [row for row in queries.artifacts(db) if row["path"] != SUMMARY_FILE]
        write_atomically(out / SUMMARY_FILE, summary_text(db, config, kept).encode())
        kept.append(_artifact(out, SUMMARY_FILE))
        queries.record_export(db, kept, fingerprint)
        return [out / row["path"] for row in kept]
    if queries.dataset_size(db) >= HELPER_MIN_PHOTOS:
        # Written by a helper process while this one builds the archive, which packs them last.
        with Helper(write_beside_archive, config) as beside:
            archive_sha256 = write_archive(db, config, out / ARCHIVE_FILE, sink,
                                           beside_written=beside.result)
        written = beside.result()
    else:
        written = write_beside_archive(config, db, sink)
        archive_sha256 = write_archive(db, config, out / ARCHIVE_FILE, sink)
    written.append(ARCHIVE_FILE)
    if config.export.webdataset_shard_size:
        written += layouts.write_webdataset(db, config, sink)
    else:
        layouts.remove_folder(out / layouts.WEBDATASET_DIR)
    # The archive hashed as it was written (67 MB at 5,000 photos): not read again.
    recorded = [_artifact(out, name, archive_sha256 if name == ARCHIVE_FILE else None)
                for name in written]
    write_atomically(out / SUMMARY_FILE, summary_text(db, config, recorded).encode())
    recorded.append(_artifact(out, SUMMARY_FILE))
    queries.record_export(db, recorded, fingerprint)
    return [out / row["path"] for row in recorded]


def write_beside_archive(config: Config, db: Database | None = None,
                         sink: ProgressSink | None = None) -> list[str]:
    """The documents, and the split folders of the layout; returns the files the archive
    packs of them. Without `db`, in a helper process: opens the database read-only."""
    own = db is None
    db = queries.open_for_reading(config.database_path) if db is None else db
    try:
        out = config.output_dir
        # One document at a time, each written before the next is made: a 100,000-photo
        # dataset's documents are tens of MB together.
        documents: dict[str, Callable[[], bytes]] = {
            SPLIT_FILE: lambda: _json(split_document(db)),
            URLS_FILE: lambda: _json(urls_document(db, config)),
            ATTRIBUTION_CSV: lambda: attribution_csv(attribution_rows(db)).encode(),
            ATTRIBUTION_MD: lambda: attribution_markdown(attribution_rows(db), config).encode(),
            CARD_FILE: lambda: card_text(db, config, license_counts(db)).encode(),
        }
        for name, make in documents.items():
            write_atomically(out / name, make())
        written = list(documents)
        if config.export.split_tree:
            written += layouts.write_split_tree(db, config, sink or Silent())
        else:
            layouts.remove_folder(out / layouts.SPLIT_TREE)
        return written
    finally:
        if own:
            db.close()


def inputs_fingerprint(db: Database, config: Config) -> str:
    """A digest of everything the exports are made of (not of summary.txt, which is always
    written): the dataset's rows as exported, the harvest's figures, and the config."""
    digest = hashlib.sha256()
    digest.update(json.dumps([config.harvest_definition(), repr(config.export),
                              queries.class_totals(db), queries.reason_counts(db),
                              queries.snapshot_time(db)], sort_keys=True, default=str).encode())
    for row in queries.dataset_photos(db):
        digest.update(repr(tuple(row.values())).encode())
    return digest.hexdigest()


def _still_there(db: Database, out: Path) -> bool:
    """Whether every recorded export file is on disk at its recorded size."""
    recorded = queries.artifacts(db)
    return bool(recorded) and all(
        (out / row["path"]).is_file() and (out / row["path"]).stat().st_size == row["bytes"]
        for row in recorded if row["path"] != SUMMARY_FILE)


def remove_rejected_images(db: Database, config: Config) -> None:
    """Delete the images of photos rejected after they were resized (repeats, placeholders).

    Their rows keep what was learned of them (hashes, the photo they repeat); the class
    folders keep only the photos of the dataset and those still on their way.
    """
    for row in db.query("SELECT path FROM photos WHERE state = 'rejected' AND path IS NOT NULL"):
        (config.output_dir / row["path"]).unlink(missing_ok=True)


def attribution_rows(db: Database) -> Iterator[dict[str, Any]]:
    """What crediting each dataset photo takes, as its license asks: by path, streamed."""
    for photo in queries.dataset_photos(db):
        yield {column: photo[column] for column in ATTRIBUTION_COLUMNS}


def attribution_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, ATTRIBUTION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def attribution_markdown(rows: Iterable[dict[str, Any]], config: Config) -> str:
    lines = [
        "# Attribution",
        "",
        "The photos of this dataset are from Flickr. Each is credited here with its title,",
        "its photographer, its license, and a link to its page on Flickr.",
    ]
    # Classes in the config's order; each row is kept as its line, not as the row.
    by_class: dict[str, list[str]] = {}
    for row in rows:
        title = _markdown_text(row["title"] or "Untitled")
        owner = _markdown_text(row["owner_name"] or row["owner"] or "unknown")
        license_name = row["license_name"] or f"license {row['license']}"
        licensed = (f"[{_markdown_text(license_name)}]({row['license_url']})"
                    if row["license_url"] else _markdown_text(license_name))
        by_class.setdefault(row["path"].split("/", 1)[0], []).append(
            f"- `{row['path']}`: [{title}]({row['page_url']}) by {owner}, {licensed}")
    for spec in config.classes:
        lines += ["", f"## {spec.name}", "", *by_class.get(spec.name, [])]
    return "\n".join(lines) + "\n"


def _markdown_text(text: str) -> str:
    # Titles are anyone's words: escape what Markdown would read as markup.
    return "".join(f"\\{char}" if char in "\\`*_[]()<>#|!" else char
                   for char in " ".join(text.split()))


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


def summary_text(
    db: Database, config: Config, artifacts: list[dict[str, Any]] | None = None
) -> str:
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
    lines += ["", "Licenses of the dataset's photos:"]
    licenses = license_counts(db)
    lines += [f"  {name}  {photos}" for name, photos in licenses.items()] or ["  none"]
    reserved = db.execute(
        "SELECT count(*) FROM photos WHERE state = 'assigned' AND license = ?",
        [ALL_RIGHTS_RESERVED]).fetchone()[0]
    if reserved:
        lines.append(f"note: {reserved} photos are All Rights Reserved: their owners have not "
                     "licensed them for reuse. Set flickr.license (e.g. [4, 5, 9, 10]) to leave "
                     "them out.")
    if artifacts:
        lines += ["", "Files of this export (bytes, sha256; `harvester verify` checks them):"]
        lines += [f"  {row['path']}  {row['bytes']}  {row['sha256']}" for row in artifacts]
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


def license_counts(db: Database) -> dict[str, int]:
    """Dataset photos per license name, most first."""
    return {
        row["name"]: row["photos"]
        for row in db.query(
            "SELECT coalesce(l.name, 'license ' || p.license, 'unknown') AS name, "
            "count(*) AS photos FROM photos p LEFT JOIN licenses l ON l.license_id = p.license "
            "WHERE p.state = 'assigned' GROUP BY name ORDER BY photos DESC, name"
        )
    }


def write_archive(db: Database, config: Config, target: Path, sink: ProgressSink,
                  beside_written: Callable[[], object] = lambda: None) -> str:
    """dataset.tgz: the image trees of the layout and the documents, byte-reproducible.
    Returns its sha256.

    `beside_written` returns once the documents and split folders are written (by a helper):
    the archive packs them last.
    """
    digest = hashlib.sha256()
    # Streamed, not listed (a member is a few hundred bytes, and a 100,000-photo dataset
    # has twice that many of them), so counted by the database.
    sink.start("archive", total=archive_member_count(db, config))
    with archive.tar_writer(target, compressed=True, digest=digest) as tar:
        for member in image_members(db, config):
            archive.add(tar, member)
            sink.advance("archive")
        beside_written()
        for member in document_members(config):
            archive.add(tar, member)
            sink.advance("archive")
    sink.finish("archive")
    return digest.hexdigest()


def archive_members(db: Database, config: Config) -> Iterator[Member]:
    """What dataset.tgz holds, in order: the class tree, the split tree, the documents.

    With both trees, the split tree's images are hard links to the class tree's: stored once.
    """
    yield from image_members(db, config)
    yield from document_members(config)


def image_members(db: Database, config: Config) -> Iterator[Member]:
    """The archive's image trees, made of the database and the class tree's files alone."""
    out = config.output_dir
    if config.export.class_tree:
        for name in sorted(spec.name for spec in config.classes):
            yield Member(f"{name}/", "dir")
        for photo in queries.dataset_photos(db):
            yield Member(photo["path"], "file", source=out / photo["path"],
                         sha256=photo["file_sha256"])
    if config.export.split_tree:
        yield from layouts.split_tree_members(db, config, config.export.class_tree)


def document_members(config: Config) -> Iterator[Member]:
    """The archive's files written by `write_beside_archive`."""
    out = config.output_dir
    if config.export.split_tree:
        for split in layouts.SPLITS:
            name = f"{layouts.SPLIT_TREE}/{split}/{layouts.METADATA_JSONL}"
            yield Member(name, "file", source=out / name)
    for name in DOCUMENTS:
        yield Member(name, "file", source=out / name)


def archive_member_count(db: Database, config: Config) -> int:
    """How many members `archive_members` gives, from counts rather than by listing them."""
    photos = queries.dataset_size(db)
    count = len(DOCUMENTS)
    if config.export.class_tree:
        count += len(config.classes) + photos
    if config.export.split_tree:
        count += layouts.split_tree_member_count(config, photos) + len(layouts.SPLITS)
    return count


def _artifact(out: Path, name: str, sha256: str | None = None) -> dict[str, Any]:
    path = out / name
    return {"path": name, "bytes": path.stat().st_size,
            "sha256": sha256 or archive.sha256_of(path)}


def _json(document: Any) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
