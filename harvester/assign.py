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
from harvester.states import Photo, State, dataset_window, move_all


def split_rank(seed: int, photo_id: str) -> str:
    return hashlib.sha256(f"{seed}:{photo_id}".encode()).hexdigest()


def planned_splits(photos: list[Photo], split: SplitSpec) -> dict[str, str]:
    """{photo_id: 'train' | 'test'} for one class's whole dataset."""
    test_count = split.test_count(len(photos))
    if split.group_by == "owner":
        return grouped_splits(photos, split.seed, test_count)
    ranked = sorted(photos, key=lambda photo: split_rank(split.seed, photo.photo_id))
    return {
        photo.photo_id: "test" if position < test_count else "train"
        for position, photo in enumerate(ranked)
    }


def grouped_splits(photos: list[Photo], seed: int, test_count: int) -> dict[str, str]:
    """Each photographer's photos all on one side; test as close to `test_count` as whole
    photographers allow (exact whenever the groups can add up to it).

    Photographers are ranked by sha256(seed:owner). Test gets the first combination of
    them, in rank order, whose photos add up to `test_count` (a subset sum), or else the
    one coming closest below it.
    """
    groups: dict[str, list[Photo]] = {}
    for photo in photos:
        # A photo without an owner is a photographer of its own.
        groups.setdefault(photo.owner or f"photo:{photo.photo_id}", []).append(photo)
    ranked = sorted(groups, key=lambda owner: split_rank(seed, owner))
    # A subset sum over a bitset: bit t of `reachable` is set once some owners' photos add
    # up to t; `added[t]` is the owner (rank position) that first reached t.
    limit = (1 << (test_count + 1)) - 1
    reachable, added = 1, {}
    for position, owner in enumerate(ranked):
        grown = (reachable << len(groups[owner])) & limit & ~reachable
        while grown:
            total = (grown & -grown).bit_length() - 1
            added[total] = position
            grown &= grown - 1
        reachable |= (reachable << len(groups[owner])) & limit
        if reachable >> test_count & 1:
            break
    total, test_owners = reachable.bit_length() - 1, set()
    while total:
        owner = ranked[added[total]]
        test_owners.add(owner)
        total -= len(groups[owner])
    return {
        photo.photo_id: "test" if owner in test_owners else "train"
        for owner, members in groups.items()
        for photo in members
    }


def run(db: Database, config: Config) -> int:
    """Assign every class whose dataset is final; returns how many photos were assigned."""
    assigned = 0
    for spec in config.classes:
        if not db.execute("SELECT 1 FROM photos WHERE class = ? AND state = 'resized' LIMIT 1",
                          [spec.name]).fetchone():
            continue  # split already, or nothing resized yet: no window to read
        window = dataset_window(db, spec.name, spec.count)
        if any(photo.state not in (State.RESIZED, State.ASSIGNED) for photo in window):
            continue
        if len(window) < spec.count and not class_exhausted(db, spec):
            continue
        plan = planned_splits(window, config.split)
        by_split: dict[str, list[str]] = {}
        for photo in window:
            if photo.state == State.RESIZED:
                by_split.setdefault(plan[photo.photo_id], []).append(photo.photo_id)
        with db.atomic():
            for split, photo_ids in by_split.items():
                assigned += move_all(db, photo_ids, State.RESIZED, State.ASSIGNED, split=split)
    return assigned
