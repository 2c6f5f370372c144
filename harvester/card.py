"""The dataset card: README.md in the output folder, what a reader of the dataset needs to know.

Its YAML header is a Hugging Face dataset card's, so the folder can be pushed to the Hub
as it is. Everything in it comes from the database and the config, never the clock, so
the same harvest gives the same card (and archive) whenever it is exported.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlite_utils import Database

from harvester import db as queries
from harvester.config import Config
from harvester.layouts import METADATA_JSONL, SPLIT_TREE, SPLITS, WEBDATASET_DIR, label_indices

CARD_FILE = "README.md"


def card_text(db: Database, config: Config, license_counts: dict[str, int]) -> str:
    totals = queries.class_totals(db)
    labels = label_indices(config)
    in_dataset = sum((totals.get(name, {}).get("in_dataset") or 0) for name in labels)
    header: dict[str, Any] = {
        "pretty_name": f"Flickr photos of {_listing([s.name for s in config.classes])}",
        "license": "other",  # one license per photo: see attribution.csv
        "task_categories": ["image-classification"],
        "size_categories": [_size_category(in_dataset)],
    }
    if config.export.split_tree:
        header["configs"] = [{
            "config_name": "default",
            "data_files": [{"split": split, "path": f"{SPLIT_TREE}/{split}/**"}
                           for split in SPLITS],
        }]
    lines = [
        "---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
        f"# {header['pretty_name']}", "",
        f"{in_dataset} photos from Flickr in {len(labels)} classes, labelled by the tags their "
        "photographers gave them, resized to a longest side of "
        f"{config.image.longest_side} px and split into train and test. Built with harvester.",
        "", "## Classes", "",
        "| label | class | Flickr tags | train | test | photos | wanted |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for name, index in labels.items():
        spec = config.class_spec(name)
        counts = totals.get(name, {})
        tags = (" and " if spec.tag_mode == "all" else ", ").join(
            f"`{tag}`" for tag in spec.tags)
        lines.append(f"| {index} | {name} | {tags} | {counts.get('train') or 0} | "
                     f"{counts.get('test') or 0} | {counts.get('in_dataset') or 0} | "
                     f"{spec.count} |")
    lines += [
        "", "Labels are numbered in sorted class-name order, as torchvision's `ImageFolder` "
        "numbers them. In Hugging Face `datasets` the `label` column is the class name; "
        "`ds.cast_column(\"label\", ClassLabel(names="
        f"{json.dumps(list(labels))}))` gives these numbers.", "",
        "## Split", "", _split_sentence(config), "",
        "## Files", "", *_file_lines(config), "",
        "## Licenses", "",
        "Each photo keeps its photographer's license. Credit them as the license asks: "
        "`attribution.csv` and `ATTRIBUTION.md` give every photo's title, photographer, "
        "license and Flickr page.", "",
        "| license | photos |", "|---|---:|",
        *(f"| {name} | {photos} |" for name, photos in license_counts.items()),
        "", "## How the data was gathered", "",
        *_gathering_lines(db, config), "",
        "## Known limits", "",
        "- Labels are tags that photographers chose, not checked by anyone: some photos show "
        "something else, or the class only in part. Look before training "
        "(`harvester preview`).",
        "- Photos are what Flickr's search returned in its order "
        f"(`{config.flickr.sort}`), not a random sample of the world: expect Flickr's "
        "subjects, styles and regions.",
        "- Exact and near duplicates (perceptual hashes within "
        f"{config.image.near_duplicate_distance} bits) were removed, within and across "
        "classes; copies edited more than that (heavy crops, filters) can remain.",
        f"- Photos whose tags match more than one class were {_ambiguity(config)}.",
        "- Smaller photos were left out, never upscaled.",
    ]
    short = [(spec.name, totals.get(spec.name, {}).get("in_dataset") or 0, spec.count)
             for spec in config.classes
             if (totals.get(spec.name, {}).get("in_dataset") or 0) < spec.count]
    lines += [f"- {name} has {have} of the {wanted} photos wanted." for name, have, wanted in short]
    return "\n".join(lines) + "\n"


def _split_sentence(config: Config) -> str:
    split = config.split
    if split.type == "absolute":
        size = f"{int(split.test_size)} test photos per class"
    else:
        size = f"{split.test_size:.4g} of each class's photos (rounded down) for test"
    grouped = (" Each photographer's photos of a class are all on one side, so no "
               "photographer is in both train and test." if split.group_by == "owner" else "")
    return (f"{size}; the rest for train. Photos are drawn by a hash of the seed "
            f"({split.seed}) and the photo id, so the same photos always split the same way."
            f"{grouped}")


def _file_lines(config: Config) -> list[str]:
    lines = []
    if config.export.class_tree:
        lines.append("- `<class>/<photo_id>.jpg`: the images, by class; `train_test_split.json` "
                     "lists which are train and test.")
    if config.export.split_tree:
        lines += [
            f"- `{SPLIT_TREE}/train/<class>/<photo_id>.jpg`, `{SPLIT_TREE}/test/...`: the images "
            f"by split, with `{METADATA_JSONL}` in each split's folder.",
            "  - Hugging Face: `datasets.load_dataset(\"imagefolder\", "
            f"data_dir=\"{SPLIT_TREE}\")`, or `datasets.load_dataset(\".\")` in this folder.",
            f"  - torchvision: `ImageFolder(\"{SPLIT_TREE}/train\")` and "
            f"`ImageFolder(\"{SPLIT_TREE}/test\")`.",
        ]
    if config.export.webdataset_shard_size:
        lines.append(
            f"- `{WEBDATASET_DIR}/train-000000.tar`, ...: WebDataset shards of "
            f"{config.export.webdataset_shard_size} photos, each sample `<photo_id>.jpg`, "
            "`.cls` (the label) and `.json` (its metadata), in a fixed random order.")
    lines += [
        "- `urls_data.json`: each class's Flickr image URLs.",
        "- `attribution.csv`, `ATTRIBUTION.md`: who to credit, and under which license.",
    ]
    return lines


def _gathering_lines(db: Database, config: Config) -> list[str]:
    snapshot = queries.snapshot_time(db)
    definition = config.harvest_definition()
    when = ""
    if snapshot is not None:
        moment = datetime.fromtimestamp(snapshot, UTC).strftime("%Y-%m-%d %H:%M UTC")
        when = f" as it was on {moment} (photos uploaded up to then)"
        definition["flickr"]["max_upload_date"] = snapshot
    return [
        f"Searched on Flickr (`flickr.photos.search`, by tags){when}; each photo downloaded "
        "once, checked (undecodable, too small, oversized and placeholder images left out), "
        "turned upright into RGB JPEG without metadata, deduplicated, then split. The harvest's "
        "settings (its config; API keys are never part of it):",
        "", "```yaml", yaml.safe_dump(definition, sort_keys=False).rstrip(), "```",
    ]


def _ambiguity(config: Config) -> str:
    if config.ambiguous_photos == "first_class":
        return "kept in the first of those classes in the config"
    return "left out"


def _size_category(photos: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if photos < limit:
            return name
    return "1M<n<10M"


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
