"""Stage: resized photos that repeat another are rejected, before any photo is split.

(And those whose bytes are a placeholder Flickr redirected a deleted photo to, served
without the redirect: `unavailable`.)

The same decoded pixels under another id are a `duplicate`; perceptual hashes within
`image.near_duplicate_distance` bits are a `near_duplicate` (a re-upload, re-encode or
resize). Within and across classes, a photo is judged against every photo found before
it (search order) that was resized, kept or itself rejected as a repeat, and records the
earliest it repeats in `duplicate_of`; its class then takes the next photo found in its
place. So a verdict depends only on which photos were found and in what order, never on
the order downloads finished in. Running before the split means no pair can straddle
train and test.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from harvester.config import Config
from harvester.states import State, move

BLOCKS = 8  # a 64-bit hash is cut into 8 blocks of 8 bits
MAX_DISTANCE = BLOCKS - 1  # at least one block must match exactly (pigeonhole)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    photo_id: str
    reason: str  # duplicate, near_duplicate
    duplicate_of: str


def run(db: Database, config: Config) -> int:
    """Reject the live photos that repeat an earlier one; returns how many were rejected."""
    return reject_placeholders(db) + reject_repeats(db, config)


def reject_placeholders(db: Database) -> int:
    """Photos whose downloaded bytes are a placeholder Flickr redirected another photo to."""
    gone = [row[0] for row in db.execute(
        "SELECT photo_id FROM photos WHERE state = 'resized' "
        "AND sha256 IN (SELECT sha256 FROM placeholders)")]
    with db.atomic():
        for photo_id in gone:
            move(db, photo_id, State.RESIZED, State.REJECTED, reason="unavailable")
    return len(gone)


def reject_repeats(db: Database, config: Config) -> int:
    if not db.execute("SELECT 1 FROM photos WHERE state = 'resized' LIMIT 1").fetchone():
        return 0  # nothing new to judge (a finished harvest's re-run reads no hashes)
    # Columns, not rows: a pass over a 100,000-photo harvest holds these lists alone.
    photo_ids: list[str] = []
    pixels: list[str] = []
    hashes: list[int] = []
    candidates: set[int] = set()
    for photo_id, state, pixels_sha256, phash in db.execute(
        "SELECT photo_id, state, pixels_sha256, phash FROM photos WHERE phash IS NOT NULL "
        "AND (state IN ('resized', 'assigned') "
        "     OR (state = 'rejected' AND reason IN ('duplicate', 'near_duplicate'))) "
        "ORDER BY found_order"
    ):
        if state == State.RESIZED:
            candidates.add(len(photo_ids))
        photo_ids.append(photo_id)
        pixels.append(pixels_sha256)
        hashes.append(int(phash, 16))
    verdicts = judge(photo_ids, pixels, hashes, config.image.near_duplicate_distance,
                     candidates=candidates)
    with db.atomic():
        for verdict in verdicts:
            log.info("photo %s rejected: %s of %s", verdict.photo_id, verdict.reason,
                     verdict.duplicate_of)
            move(db, verdict.photo_id, State.RESIZED, State.REJECTED, reason=verdict.reason,
                 duplicate_of=verdict.duplicate_of)
    return len(verdicts)


def judge(
    photo_ids: list[str], pixels: list[str], hashes: list[int], distance: int,
    candidates: set[int],
) -> list[Verdict]:
    """Which `candidates` repeat an earlier photo: photos given in search order, all that
    ever reached resized (kept, or rejected as repeats themselves).

    Judged against every earlier photo, not only those kept, so that a verdict depends on
    which photos were found and in what order, never on when each was resized.
    """
    first_with_pixels: dict[str, int] = {}
    values = np.array(hashes, dtype=np.uint64)
    unique, group_of = np.unique(values, return_inverse=True)
    first_in_group: dict[int, int] = {}
    for index, group in enumerate(group_of.tolist()):
        first_in_group.setdefault(group, index)
    near_groups = neighbours(unique.tolist(), distance)
    verdicts = []
    for index, photo_id in enumerate(photo_ids):
        same = first_with_pixels.setdefault(pixels[index], index)
        if index not in candidates:
            continue
        if same < index:
            verdicts.append(Verdict(photo_id, "duplicate", photo_ids[same]))
            continue
        group = int(group_of[index])
        earlier = [first_in_group[other] for other in (group, *near_groups.get(group, ()))
                   if first_in_group[other] < index]
        if earlier:
            verdicts.append(Verdict(photo_id, "near_duplicate", photo_ids[min(earlier)]))
    return verdicts


def neighbours(hashes: list[int], distance: int) -> dict[int, set[int]]:
    """For each position, the other positions whose hash is within `distance` bits.

    Not all pairs: two hashes within `distance` bits differ in at most `distance` of their
    8 blocks, so they agree exactly on some 8 - distance blocks. For each such choice of
    blocks, sorting the hashes by those blocks puts every candidate pair side by side.
    (Give distinct hashes: equal ones make groups whose pairs grow as their square.)
    """
    if not 0 <= distance <= MAX_DISTANCE:
        raise ValueError(f"distance must be 0..{MAX_DISTANCE}")
    values = np.array(hashes, dtype=np.uint64)
    blocks = [(values >> np.uint64(8 * block)) & np.uint64(0xFF) for block in range(BLOCKS)]
    near: dict[int, set[int]] = {}
    for chosen in itertools.combinations(range(BLOCKS), BLOCKS - distance):
        key = np.zeros(len(values), dtype=np.uint64)
        for block in chosen:
            key = (key << np.uint64(8)) | blocks[block]
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        step = 1
        while step < len(order):
            same = np.nonzero(ordered[step:] == ordered[:-step])[0]
            if not len(same):
                break
            first, second = order[same], order[same + step]
            close = np.bitwise_count(values[first] ^ values[second]) <= distance
            for a, b in zip(first[close].tolist(), second[close].tolist(), strict=True):
                if a != b:
                    near.setdefault(a, set()).add(b)
                    near.setdefault(b, set()).add(a)
            step += 1
    return near
