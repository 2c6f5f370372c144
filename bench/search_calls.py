"""Benchmark: Flickr API calls spent to search past the 4,000-result cap.

Run by hand (never in the test suite):
    .venv/bin/python bench/search_calls.py                  # a whole harvest, 9,000 photos
    .venv/bin/python bench/search_calls.py --kills 3        # ... SIGKILLed 3 times in search
    .venv/bin/python bench/search_calls.py --sweep          # search only: every sort and size

The whole harvest runs `harvester run` (then `resume` after each kill) against the
offline stand-in over loopback, with paging drift on, and prints: API calls by method,
search calls per 1,000 photos found (the floor is 2 at 500 a page), the photos in the
dataset and how many distinct, and how many search calls were made twice (at most one
per kill: the call in flight when it landed). The sweep runs only the search stage
in-process, for every sort, several tag sizes and upload-date skews.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from harvester.standin import StandIn, Universe

# The stand-in's uploads run from 2005 to 2024; a fixed range makes runs comparable.
UPLOADED = {"min_upload_date": "2005-01-01", "max_upload_date": "2024-12-31"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=9000, help="photos wanted in the class")
    parser.add_argument("--tag-size", type=int, default=12_000, help="photos the tag has")
    parser.add_argument("--drift", type=int, default=20, help="paging drift, in places")
    parser.add_argument("--kills", type=int, default=0, help="SIGKILLs during the search")
    parser.add_argument("--sort", default="relevance")
    parser.add_argument("--sweep", action="store_true", help="search only, every sort")
    args = parser.parse_args()
    if args.sweep:
        sweep(args.photos)
    else:
        whole_harvest(args)


def whole_harvest(args: argparse.Namespace) -> None:
    universe = Universe(seed=4, photos_per_tag={"cat": args.tag_size}, drift=args.drift)
    with tempfile.TemporaryDirectory() as folder, StandIn(universe) as server:
        config = Path(folder) / "config.yaml"
        config.write_text(yaml.safe_dump({
            "classes": [{"name": "cat", "count": args.photos}],
            "train_test_split": {"seed": 1, "type": "proportional", "test_size": 0.1},
            "flickr": {"sort": args.sort, **UPLOADED},
            "image": {"longest_side": 100},  # the 100px rendition: the search is measured
        }))
        env = {**os.environ, "API_KEY": "bench", "API_SECRET": "bench",
               "FLICKR_API_URL": server.rest_url}
        command = ["harvester", "run", "-c", str(config)]
        started = time.perf_counter()
        for kill in range(args.kills):
            # Spread the kills over the search: after 2, 5, 8... calls.
            target = 2 + 3 * kill
            process = subprocess.Popen([sys.executable, "-m", *command], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while len(server.api_log) < target and process.poll() is None:
                time.sleep(0.001)
            process.send_signal(signal.SIGKILL)
            process.wait()
            command[1] = "resume"
        result = subprocess.run([sys.executable, "-m", *command], env=env,
                                capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"harvester failed ({result.returncode}):\n{result.stderr}")
        out = Path(folder) / "outputs"
        split = json.loads((out / "train_test_split.json").read_text())
        photos = split["train"] + split["test"]
        with sqlite3.connect(out / "harvest.db") as db:
            found = db.execute("SELECT count(*) FROM photos").fetchone()[0]
            windows = db.execute("SELECT count(*) FROM search_windows").fetchone()[0]
        searches = [json.dumps(params, sort_keys=True) for params in server.api_log
                    if params["method"] == "flickr.photos.search"]
        print(json.dumps({
            "photos_wanted": args.photos,
            "tag_size": args.tag_size,
            "sort": args.sort,
            "drift": args.drift,
            "kills": args.kills,
            "seconds": round(elapsed, 1),
            "api_calls": dict(server.api_calls),
            "photos_found": found,
            "search_windows": windows,
            "search_calls_per_1000_found": round(1000 * len(searches) / found, 2),
            "floor_per_1000": 2.0,
            "search_calls_repeated": len(searches) - len(set(searches)),
            "dataset_photos": len(photos),
            "dataset_distinct": len(set(photos)),
        }, indent=2))


def sweep(photos: int) -> None:
    """Search calls per 1,000 found, per sort, tag size and upload skew (search stage only)."""
    from harvester import search
    from harvester.config import FLICKR_SORTS, load_config
    from harvester.db import open_database
    from harvester.flickr import FlickrClient
    from harvester.progress import Silent

    print(f"{'sort':22} {'tag size':>8} {'skew':>4} {'found':>6} {'calls':>5} {'per 1000':>8}")
    for sort in FLICKR_SORTS:
        for tag_size in (12_000, 100_000):
            for skew in (0.0, 3.0):
                with tempfile.TemporaryDirectory() as folder:
                    path = Path(folder) / "config.yaml"
                    path.write_text(yaml.safe_dump({
                        "classes": [{"name": "cat", "count": photos}],
                        "train_test_split": {"test_size": 10},
                        "flickr": {"sort": sort, **UPLOADED},
                    }))
                    config = load_config(path)
                    db = open_database(None)
                    universe = Universe(seed=1, photos_per_tag={"cat": tag_size},
                                        recent_bias=skew)
                    with StandIn(universe) as server:
                        client = FlickrClient("k", "s", config.flickr, rest_url=server.rest_url)
                        search.fill(db, client, config, Silent())
                    found = db.execute("SELECT count(*) FROM photos").fetchone()[0]
                    calls = server.api_calls["flickr.photos.search"]
                    print(f"{sort:22} {tag_size:>8} {skew:>4} {found:>6} {calls:>5} "
                          f"{1000 * calls / found:>8.2f}")


if __name__ == "__main__":
    main()
