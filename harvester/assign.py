"""Stage: resized -> assigned. The deterministic train/test split.

A class is split once its dataset is final (every photo of its window resized).
Photos are ranked by sha256(seed:photo_id) and the first ones go to test: the
split depends only on which photos are in the dataset and the seed, never on
the order they arrived in or how often the harvest was interrupted.
"""

from __future__ import annotations

import hashlib

from sqlite_utils import Database

from harvester.config import Config, SplitSpec
from harvester.db import class_exhausted
from harvester.states import Photo, State, dataset_window, move


def split_rank(seed: int, photo_id: str) -> str:
    return hashlib.sha256(f"{seed}:{photo_id}".encode()).hexdigest()


def planned_splits(photos: list[Photo], split: SplitSpec) -> dict[str, str]:
    """{photo_id: 'train' | 'test'} for one class's whole dataset."""
    ranked = sorted(photos, key=lambda photo: split_rank(split.seed, photo.photo_id))
    test_count = split.test_count(len(ranked))
    return {
        photo.photo_id: "test" if position < test_count else "train"
        for position, photo in enumerate(ranked)
    }


def run(db: Database, config: Config) -> int:
    """Assign every class whose dataset is final; returns how many photos were assigned."""
    assigned = 0
    for spec in config.classes:
        window = dataset_window(db, spec.name, spec.count)
        if any(photo.state not in (State.RESIZED, State.ASSIGNED) for photo in window):
            continue
        if len(window) < spec.count and not class_exhausted(db, spec):
            continue
        plan = planned_splits(window, config.split)
        with db.atomic():
            for photo in window:
                if photo.state == State.RESIZED:
                    assigned += move(db, photo.photo_id, State.RESIZED, State.ASSIGNED,
                                     split=plan[photo.photo_id])
    return assigned
