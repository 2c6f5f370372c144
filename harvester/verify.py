"""Check an output folder against its database and its archive: `harvester verify`.

Each dataset image must be on disk with the size and sha256 recorded when it was written,
in every tree the layout has; each file of the last export as recorded; dataset.tgz must
hold exactly what the database says it holds, with the recorded bytes. Nothing is written.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from harvester import archive, layouts
from harvester import db as queries
from harvester.config import Config
from harvester.export import ARCHIVE_FILE, archive_members
from harvester.progress import ProgressSink


@dataclass
class Report:
    checked: int = 0  # files compared with their record
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(db: Database, config: Config, sink: ProgressSink) -> Report:
    report = Report()
    recorded = queries.artifacts(db)
    if not recorded:
        report.problems.append("nothing exported yet: run `harvester export` first")
        return report
    out = config.output_dir
    photos = list(queries.dataset_photos(db))
    sink.start("verify", total=len(photos) + len(recorded))
    for photo in photos:
        report.checked += 1
        _compare(report, out, photo["path"], photo["file_bytes"], photo["file_sha256"])
        if config.export.split_tree:
            linked = layouts.split_tree_path(photo)
            report.checked += 1
            if not _same_file(out / photo["path"], out / linked):
                _compare(report, out, linked, photo["file_bytes"], photo["file_sha256"])
        sink.advance("verify")
    for row in recorded:
        report.checked += 1
        _compare(report, out, row["path"], row["bytes"], row["sha256"])
        sink.advance("verify")
    sink.finish("verify")
    expected = {photo["path"] for photo in photos}
    if config.export.split_tree:
        expected |= {layouts.split_tree_path(photo) for photo in photos}
    expected |= {row["path"] for row in recorded}
    # Resized photos not yet split: a harvest stopped before the end has them. Not in the
    # dataset yet, but where they belong.
    expected |= {row["path"] for row in db.query(
        "SELECT path FROM photos WHERE state = 'resized'")}
    _unexpected(report, out, expected, config)
    if (out / ARCHIVE_FILE).exists():
        _check_archive(report, db, config, {row["path"]: row["sha256"] for row in recorded})
    return report


def _compare(report: Report, out: Path, relative: str, size: int | None,
             sha256: str | None) -> None:
    path = out / relative
    if not path.is_file():
        report.problems.append(f"missing: {relative}")
    elif sha256 is None:
        report.problems.append(f"unrecorded: {relative} (written before sizes and hashes "
                               "were recorded)")
    elif path.stat().st_size != size:
        report.problems.append(f"changed: {relative} is {path.stat().st_size} bytes, "
                               f"{size} were written")
    elif archive.sha256_of(path) != sha256:
        report.problems.append(f"changed: {relative} (sha256 differs from the one recorded)")


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def _unexpected(report: Report, out: Path, expected: set[str], config: Config) -> None:
    """Files in the folders harvester fills that no record accounts for."""
    folders = [spec.name for spec in config.classes] + [layouts.SPLIT_TREE,
                                                        layouts.WEBDATASET_DIR]
    for folder in folders:
        for path in sorted((out / folder).rglob("*")):
            relative = path.relative_to(out).as_posix()
            if path.is_file() and relative not in expected:
                report.problems.append(f"unexpected: {relative} (not in the dataset)")


def _check_archive(report: Report, db: Database, config: Config,
                   recorded: dict[str, str]) -> None:
    """dataset.tgz holds the members the database says, in order, with the recorded bytes."""
    planned = list(archive_members(db, config))
    try:
        with tarfile.open(config.output_dir / ARCHIVE_FILE) as tar:
            index = 0
            for info in tar:
                want = planned[index] if index < len(planned) else None
                index += 1
                if want is None or info.name.rstrip("/") != want.name.rstrip("/"):
                    report.problems.append(f"archive: {info.name} is not what the database "
                                           f"lists there ({want.name if want else 'nothing'})")
                    return
                if want.kind == "link":
                    if not info.islnk() or info.linkname != want.link_to:
                        report.problems.append(f"archive: {info.name} should link to "
                                               f"{want.link_to}")
                elif want.kind == "file":
                    handle = tar.extractfile(info)
                    digest = hashlib.file_digest(handle, "sha256").hexdigest() if handle else None
                    expected = want.sha256 or recorded.get(want.name)
                    if digest != expected:
                        report.problems.append(f"archive: {info.name} differs from the "
                                               "database's record")
            if index < len(planned):
                report.problems.append(f"archive: ends before {planned[index].name}")
    except (tarfile.TarError, OSError, EOFError) as error:
        report.problems.append(f"archive: {ARCHIVE_FILE} cannot be read ({error})")
