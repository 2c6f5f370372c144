"""The dataset laid out as ML tools load it, without glue code.

- `splits/{train,test}/<class>/<id>.jpg` with `splits/<split>/metadata.jsonl`: Hugging Face
  `load_dataset("imagefolder", data_dir="splits")` gives a train and a test split, and
  torchvision's `ImageFolder("splits/train")` reads each split. The files are hard links to
  the class tree's (no disk space), copies where the file system has no hard links.
- `webdataset/{train,test}-000000.tar`: WebDataset shards of `<photo_id>.jpg`, `.cls`, `.json`.

Labels: torchvision numbers classes in sorted name order, and so does `.cls`; Hugging Face
gets the class name, which a ClassLabel of the sorted names turns into the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from harvester import archive
from harvester import db as queries
from harvester.archive import Member
from harvester.config import Config
from harvester.progress import ProgressSink

SPLIT_TREE = "splits"
WEBDATASET_DIR = "webdataset"
METADATA_JSONL = "metadata.jsonl"
SPLITS = ("train", "test")
METADATA_FIELDS = ("file_name", "label", "split", "photo_id", "owner", "owner_name", "license",
                   "license_name", "license_url", "title", "page_url")


def label_indices(config: Config) -> dict[str, int]:
    """Class name -> label index: sorted name order, as torchvision's ImageFolder numbers them."""
    return {name: index for index, name in enumerate(sorted(s.name for s in config.classes))}


def metadata_row(photo: dict[str, Any]) -> dict[str, Any]:
    """A photo's line of metadata.jsonl; `file_name` is relative to its split's folder."""
    row = {field: photo.get(field) for field in METADATA_FIELDS}
    row.update(file_name=photo["path"], label=photo["class"])
    return row


def split_tree_path(photo: dict[str, Any]) -> str:
    return f"{SPLIT_TREE}/{photo['split']}/{photo['path']}"


def write_split_tree(db: Database, config: Config, sink: ProgressSink) -> list[str]:
    """Lay out splits/; returns the metadata files written, relative to the output folder."""
    out = config.output_dir
    with _replacing_folder(out / SPLIT_TREE) as tree:
        for split in SPLITS:
            for name in label_indices(config):
                # Every class in both splits, so both number the classes alike.
                (tree / split / name).mkdir(parents=True, exist_ok=True)
        sink.start("split folders", total=queries.dataset_size(db))
        jsonl = {split: (tree / split / METADATA_JSONL).open("w", encoding="utf-8")
                 for split in SPLITS}
        try:
            for photo in queries.dataset_photos(db):
                _link_or_copy(out / photo["path"], tree / photo["split"] / photo["path"])
                jsonl[photo["split"]].write(_json_line(metadata_row(photo)))
                sink.advance("split folders")
        finally:
            for handle in jsonl.values():
                handle.close()
        sink.finish("split folders")
    return [f"{SPLIT_TREE}/{split}/{METADATA_JSONL}" for split in SPLITS]


def split_tree_members(
    db: Database, config: Config, linked_to_class_tree: bool
) -> Iterator[Member]:
    """The split tree as archive members: hard links to the class tree's members, or files.

    Every class's folder is in both splits, photos or not, as on disk: so both splits
    number the classes alike once extracted.
    """
    out = config.output_dir
    yield Member(f"{SPLIT_TREE}/", "dir")
    for split in sorted(SPLITS):
        yield Member(f"{SPLIT_TREE}/{split}/", "dir")
        for name in label_indices(config):
            yield Member(f"{SPLIT_TREE}/{split}/{name}/", "dir")
    # In split_tree_path order, sorted by the database (not in memory).
    for photo in queries.dataset_photos(db, by_split=True):
        name = split_tree_path(photo)
        if linked_to_class_tree:
            yield Member(name, "link", link_to=photo["path"])
        else:
            yield Member(name, "file", source=out / photo["path"], sha256=photo["file_sha256"])


def split_tree_member_count(config: Config, photos: int) -> int:
    """How many members `split_tree_members` gives for a dataset of `photos`."""
    return 1 + len(SPLITS) * (1 + len(config.classes)) + photos


def write_webdataset(
    db: Database, config: Config, sink: ProgressSink
) -> list[str]:
    """Write the train and test shard sets; returns the shards, relative to the output folder.

    Samples are in a fixed random order (from the split's seed), not class by class, so a
    loader's shuffle buffer mixes classes from the first shard on.
    """
    out = config.output_dir
    size = config.export.webdataset_shard_size
    labels = label_indices(config)
    shards = []
    with _replacing_folder(out / WEBDATASET_DIR) as folder:
        for split in SPLITS:
            photos = sorted(
                (photo for photo in queries.dataset_photos(db) if photo["split"] == split),
                key=lambda photo: _shard_rank(config.split.seed, photo["photo_id"]),
            )
            sink.start(f"{split} shards", total=len(photos))
            for number, start in enumerate(range(0, len(photos), size)):
                name = f"{split}-{number:06d}.tar"
                chunk = photos[start:start + size]
                archive.write(folder / name, _samples(out, chunk, labels), compressed=False)
                shards.append(f"{WEBDATASET_DIR}/{name}")
                sink.advance(f"{split} shards", len(chunk))
            sink.finish(f"{split} shards")
    return shards


def remove_folder(path: Path) -> None:
    """A layout the config no longer asks for: gone, so nothing stale is mistaken for data."""
    shutil.rmtree(path, ignore_errors=True)


def _samples(out: Path, photos: list[dict[str, Any]], labels: dict[str, int]) -> Iterator[Member]:
    for photo in photos:
        # WebDataset groups a sample's files by the name before the first dot: photo ids
        # are digits, so keys have no dots whatever the class is called.
        key = photo["photo_id"]
        metadata = metadata_row(photo) | {"label_index": labels[photo["class"]]}
        yield Member(f"{key}.jpg", "file", source=out / photo["path"],
                     sha256=photo["file_sha256"])
        yield Member(f"{key}.cls", "file", data=f"{labels[photo['class']]}\n".encode())
        yield Member(f"{key}.json", "file", data=_json_line(metadata).encode())


def _shard_rank(seed: int, photo_id: str) -> str:
    return hashlib.sha256(f"{seed}:shards:{photo_id}".encode()).hexdigest()


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)  # no hard links here (FAT, some network drives)


@contextmanager
def _replacing_folder(path: Path) -> Iterator[Path]:
    """Build a folder beside `path` and swap it in whole: no half-written layout is left."""
    building = path.with_name(f".{path.name}.new")
    retired = path.with_name(f".{path.name}.old")
    for leftover in (building, retired):  # of an export that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        yield building
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    if path.exists():
        path.rename(retired)
    building.rename(path)
    shutil.rmtree(retired, ignore_errors=True)


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n"
