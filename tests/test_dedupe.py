"""Duplicates and near duplicates: found by an index, not all pairs; the first found stays."""

import itertools
import random

import pytest

from harvester import dedupe
from harvester.config import load_config
from harvester.db import open_database
from harvester.states import record_found
from tests.conftest import write_config


@pytest.mark.parametrize("distance", range(8))
def test_the_index_finds_exactly_the_pairs_an_all_pairs_loop_would(distance):
    rng = random.Random(distance)
    hashes = [rng.getrandbits(64) for _ in range(300)]
    for index in range(0, 300, 3):  # plant neighbours 0..8 bits away
        flips = rng.sample(range(64), rng.randrange(9))
        hashes[index + 1] = hashes[index] ^ sum(1 << bit for bit in flips)
    expected = {(a, b) for a, b in itertools.combinations(range(300), 2)
                if bin(hashes[a] ^ hashes[b]).count("1") <= distance}
    found = {(a, b) for a, near in dedupe.neighbours(hashes, distance).items()
             for b in near if a < b}
    assert found == expected and expected


def test_exact_duplicates_go_by_pixels_and_near_ones_by_hash_and_the_first_stays():
    ids = ["a", "b", "c", "d", "e"]
    pixels = ["p1", "p2", "p1", "p3", "p4"]
    hashes = [0x0F0F, 0xF0F0_0000_0000, 0x0F0F, 0x0F0F ^ 0b111, 0xFFFF_FFFF_0000_0000]
    verdicts = dedupe.judge(ids, pixels, hashes, distance=4, candidates=set(range(5)))
    assert [(v.photo_id, v.reason, v.duplicate_of) for v in verdicts] == [
        ("c", "duplicate", "a"), ("d", "near_duplicate", "a")]
    # Photos already in a split (not candidates) stay, and still count as earlier.
    assert [v.photo_id for v in dedupe.judge(ids, pixels, hashes, 4, candidates={3})] == ["d"]


def resized_in_turn(config, pictures: dict[int, tuple[str, str]], order: list[int]):
    """Photos 1..n found in that order, resized in `order`, dedupe after each; rejections."""
    db = open_database(None)
    record_found(db, [{"photo_id": str(n), "class_": "cat", "found_order": n,
                       "search_tags": "cat", "url": "u"} for n in pictures])
    for n in order:
        pixels, phash = pictures[n]
        db.execute("UPDATE photos SET state = 'resized', pixels_sha256 = ?, phash = ? "
                   "WHERE photo_id = ?", [pixels, phash, str(n)])
        dedupe.run(db, config)
    return db.execute("SELECT photo_id, reason FROM photos WHERE state = 'rejected' "
                      "ORDER BY photo_id").fetchall()


def test_which_copy_stays_depends_on_search_order_not_on_when_it_was_resized(tmp_path):
    config = load_config(write_config(tmp_path, classes=[{"name": "cat", "count": 5}]))
    same = {n: ("same", "00000000000000ff") for n in range(1, 6)}

    def rejected(order: list[int]) -> list[tuple]:
        return resized_in_turn(config, same, order)

    # Photo 1, found first, stays; whichever copy was resized first.
    assert rejected([1, 2, 3, 4, 5]) == rejected([5, 3, 1, 4, 2]) == [
        ("2", "duplicate"), ("3", "duplicate"), ("4", "duplicate"), ("5", "duplicate")]


def test_a_chain_of_near_duplicates_ends_the_same_whatever_was_resized_first(tmp_path):
    """1 ~ 2 and 2 ~ 3, but 1 is far from 3: 2 goes, and so does 3 (near 2), in any order."""
    config = load_config(write_config(tmp_path, classes=[{"name": "cat", "count": 5}]))
    chain = {1: ("a", f"{0:016x}"), 2: ("b", f"{0x3F:016x}"), 3: ("c", f"{0xFC0:016x}")}
    outcomes = {tuple(resized_in_turn(config, chain, list(order)))
                for order in itertools.permutations([1, 2, 3])}
    assert outcomes == {(("2", "near_duplicate"), ("3", "near_duplicate"))}


def test_many_identical_hashes_stay_fast():
    rng = random.Random(1)
    hashes = [0xABCDEF] * 3000 + [rng.getrandbits(64) for _ in range(3000)]
    pixels = [f"p{index}" for index in range(6000)]
    verdicts = dedupe.judge([str(i) for i in range(6000)], pixels, hashes, 6,
                            candidates=set(range(6000)))
    assert len(verdicts) == 2999  # the first of the 3,000 stays
