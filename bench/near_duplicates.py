"""Benchmark: the duplicate and near-duplicate check, per 10,000 photos and at 100,000.

Run by hand (never in the test suite):
    .venv/bin/python bench/near_duplicates.py --photos 10000
    .venv/bin/python bench/near_duplicates.py --photos 100000 --synthetic

Fills a database with resized photos and times one pass of the dedupe stage over them
(read every live photo's hashes, find near pairs through the block index, judge, record
the rejections). Hashes come from the stand-in's images, normalised as harvester does
(on every core), or with --synthetic from random 64-bit hashes; either way 1 photo in 50
gets a planted copy (the same pixels) and 1 in 50 a near copy (2 bits away).
"""

from __future__ import annotations

import argparse
import random
import time
from multiprocessing import Pool
from pathlib import Path
from tempfile import TemporaryDirectory

from harvester import dedupe
from harvester.config import ClassSpec, Config, ImageSpec, SplitSpec
from harvester.db import open_database
from harvester.images import Normalised, normalise
from harvester.standin import render


def stand_in_hashes(index: int) -> tuple[str, str]:
    result = normalise(render(str(50_000_000_000 + index), (index % 7) * 36, 320, 240), 240, 90)
    assert isinstance(result, Normalised)
    return result.pixels_sha256, result.phash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--distance", type=int, default=ImageSpec().near_duplicate_distance)
    parser.add_argument("--synthetic", action="store_true", help="random hashes, no images")
    args = parser.parse_args()

    rng = random.Random(1)
    if args.synthetic:
        hashes = [(f"pixels{index}", f"{rng.getrandbits(64):016x}")
                  for index in range(args.photos)]
    else:
        with Pool() as pool:
            hashes = pool.map(stand_in_hashes, range(args.photos), chunksize=100)
    for index in range(0, args.photos - 2, 50):
        pixels, phash = hashes[index]
        hashes[index + 1] = (pixels, phash)  # an exact copy
        near = int(phash, 16) ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64))
        hashes[index + 2] = (f"near{index}", f"{near:016x}")

    with TemporaryDirectory() as folder:
        config = Config(source=Path(folder) / "config.yaml", output_dir=Path(folder),
                        classes=(ClassSpec("cat", args.photos, ("cat",)),),
                        split=SplitSpec(1, "absolute", 1),
                        image=ImageSpec(near_duplicate_distance=args.distance))
        db = open_database(Path(folder) / "harvest.db")
        db["photos"].insert_all(
            {"photo_id": str(index), "class": "cat", "state": "resized", "found_order": index,
             "search_tags": "cat", "pixels_sha256": pixels, "phash": phash}
            for index, (pixels, phash) in enumerate(hashes)
        )
        started = time.perf_counter()
        rejected = dedupe.run(db, config)
        elapsed = time.perf_counter() - started
        reasons = dict(db.execute(
            "SELECT reason, count(*) FROM photos WHERE state = 'rejected' GROUP BY reason"))
    print(f"{args.photos} photos ({'synthetic' if args.synthetic else 'stand-in'} hashes), "
          f"distance {args.distance}: {elapsed:.2f} s, {rejected} rejected {reasons}; "
          f"{elapsed * 10_000 / args.photos:.2f} s per 10,000 photos")


if __name__ == "__main__":
    main()
