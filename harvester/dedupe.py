"""Stage: resized photos that repeat another are rejected, before any photo is split.

(And those whose bytes are a placeholder Flickr redirected a deleted photo to, served
without the redirect: `unavailable`.)

The same decoded pixels under another id are a `duplicate`; perceptual hashes within
`image.near_duplicate_distance` bits are a `near_duplicate` (a re-upload, re-encode or
resize). Within and across classes, of two such photos the one found first (search
order) stays and the other is rejected, recording the photo it repeats in
`duplicate_of`; its class then takes the next photo found in its place. Running before
the split means no pair can straddle train and test.

Each round recomputes the verdict from the photos alive, so it depends only on which
photos were found and in what order, never on the order downloads finished in.
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
    rows = list(db.query(
        "SELECT photo_id, state, pixels_sha256, phash FROM photos "
        "WHERE state IN ('resized', 'assigned') AND phash IS NOT NULL "
        # Assigned photos are in a split already: they always stay, so they come first.
        "ORDER BY state = 'assigned' DESC, found_order"
    ))
    verdicts = judge(
        [row["photo_id"] for row in rows],
        [row["pixels_sha256"] for row in rows],
        [int(row["phash"], 16) for row in rows],
        config.image.near_duplicate_distance,
        protected={index for index, row in enumerate(rows) if row["state"] == "assigned"},
    )
    with db.atomic():
        for verdict in verdicts:
            log.info("photo %s rejected: %s of %s", verdict.photo_id, verdict.reason,
                     verdict.duplicate_of)
            move(db, verdict.photo_id, State.RESIZED, State.REJECTED, reason=verdict.reason,
                 duplicate_of=verdict.duplicate_of)
    return len(verdicts)


def judge(
    photo_ids: list[str],
    pixels: list[str],
    hashes: list[int],
    distance: int,
    protected: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[Verdict]:
    """Which photos, given in order of precedence, repeat an earlier one that stays."""
    earlier = neighbours(hashes, distance)
    first_with_pixels: dict[str, int] = {}
    kept = np.zeros(len(photo_ids), dtype=bool)
    verdicts = []
    for index, photo_id in enumerate(photo_ids):
        same = first_with_pixels.setdefault(pixels[index], index)
        near = next((other for other in earlier.get(index, ()) if kept[other]), None)
        if index in protected or (same == index and near is None):
            kept[index] = True
        elif same != index and kept[same]:
            verdicts.append(Verdict(photo_id, "duplicate", photo_ids[same]))
        elif near is not None:
            verdicts.append(Verdict(photo_id, "near_duplicate", photo_ids[near]))
        else:  # the same pixels as a photo that was itself rejected: this one stays
            first_with_pixels[pixels[index]] = index
            kept[index] = True
    return verdicts


def neighbours(hashes: list[int], distance: int) -> dict[int, list[int]]:
    """For each position, the earlier positions whose hash is within `distance` bits.

    Not all pairs: two hashes within `distance` bits differ in at most `distance` of their
    8 blocks, so they agree exactly on some 8 - distance blocks. For each such choice of
    blocks, sorting the hashes by those blocks puts every candidate pair side by side.
    """
    if not 0 <= distance <= MAX_DISTANCE:
        raise ValueError(f"distance must be 0..{MAX_DISTANCE}")
    values = np.array(hashes, dtype=np.uint64)
    blocks = [(values >> np.uint64(8 * block)) & np.uint64(0xFF) for block in range(BLOCKS)]
    pairs: set[tuple[int, int]] = set()
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
                pairs.add((min(a, b), max(a, b)))
            step += 1
    earlier: dict[int, list[int]] = {}
    for a, b in sorted(pairs):
        earlier.setdefault(b, []).append(a)
    return earlier
