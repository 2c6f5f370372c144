"""Benchmark: a whole `harvester run` against the offline stand-in, timed.

Run by hand (never in the test suite):
    .venv/bin/python bench/harvest_speed.py --photos 200 --classes 2

Prints wall time, photos per second, Flickr API calls, image requests and the
harvester process's peak memory. The stand-in runs in this process and draws
every image on request, so on a small machine it competes with harvester for CPU:
the figures are a floor for what harvester does against real Flickr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from harvester.standin import StandIn, Universe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200, help="photos per class")
    parser.add_argument("--classes", type=int, default=2, help="number of classes")
    parser.add_argument("--workers", type=int, default=8, help="download workers")
    parser.add_argument("--longest-side", type=int, default=240)
    args = parser.parse_args()

    names = [f"class{index}" for index in range(args.classes)]
    universe = Universe(seed=5, photos_per_tag={name: args.photos * 3 for name in names})
    with tempfile.TemporaryDirectory() as folder, StandIn(universe) as server:
        config = Path(folder) / "config.yaml"
        config.write_text(yaml.safe_dump({
            "classes": [{"name": name, "count": args.photos} for name in names],
            "train_test_split": {"seed": 1, "type": "proportional", "test_size": 0.1},
            "download": {"workers": args.workers},
            "image": {"longest_side": args.longest_side},
        }))
        env = {**os.environ, "API_KEY": "bench", "API_SECRET": "bench",
               "FLICKR_API_URL": server.rest_url}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "harvester", "run", "-c", str(config)],
            env=env, capture_output=True, text=True,
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"harvester failed ({result.returncode}):\n{result.stderr}")
        split = json.loads((Path(folder) / "outputs" / "train_test_split.json").read_text())
        photos = len(split["train"]) + len(split["test"])
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps({
            "photos": photos,
            "seconds": round(elapsed, 2),
            "photos_per_second": round(photos / elapsed, 1),
            "api_calls": dict(server.api_calls),
            "image_requests": server.image_requests.total(),
            "peak_rss_mib": round(peak_mib, 1),
        }, indent=2))


if __name__ == "__main__":
    main()
