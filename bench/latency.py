"""Benchmark: how many downloads at once keep the machine busy when images take a while,
and how many worker processes they run in.

    .venv/bin/python bench/latency.py                          (100 ms; 32, 64, 128, 256)
    .venv/bin/python bench/latency.py --latency-ms 0 100 200 --workers 32 128
    .venv/bin/python bench/latency.py --latency-ms 0 100 --workers 128 --processes 1 0

A photo's fetch mostly waits on its image host: Flickr's answers in tens to hundreds of
milliseconds, the stand-in of bench/throughput.py at once. For each latency it starts the
stand-in (bench/standin_server.py) holding every image answer back that long, then runs
`harvester run` end to end (search, download, resize, export) with each `download.workers`
in turn (and the config's default, if not among them), and each `resize.workers` given
(`--processes`: 1 is one process whose threads do everything, 0 one process per core),
`--runs` times each, taking turns. It prints the median photos/s, CPU ms per photo and
peak memory of each: with too few downloads at once, the photos/s fall as the latency
grows, and the CPU sits idle.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import Measured, run_harvester, standin

from harvester.config import DownloadSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=5000, help="photos per harvest")
    parser.add_argument("--runs", type=int, default=1, help="harvests per setting")
    parser.add_argument("--source-size", type=int, choices=(240, 500), default=240,
                        help="the stand-in's images (240 px: the least CPU a photo)")
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[100.0],
                        help="how long the image host takes to answer, each in turn")
    parser.add_argument("--workers", type=int, nargs="+", default=[32, 64, 128, 256],
                        help="download.workers settings to run, besides the default")
    parser.add_argument("--processes", type=int, nargs="+", default=[0],
                        help="resize.workers settings to run (worker processes; 0: one per "
                             "core, the default)")
    args = parser.parse_args()

    default = DownloadSpec().workers
    downloads = args.workers if default in args.workers else [*args.workers, default]
    settings = [(workers, processes) for workers in downloads for processes in args.processes]
    print("| latency | download.workers | worker processes | photos/s | CPU ms/photo "
          "| peak MB (PSS) |")
    print("|---|---|---|---|---|---|")
    for latency in args.latency_ms:
        with tempfile.TemporaryDirectory(prefix="harvester-latency-") as scratch, \
                standin(args.source_size, args.photos, Path(scratch), latency) as rest_url:
            measured: dict[tuple[int, int], list[Measured]] = {key: [] for key in settings}
            # The settings take turns, run by run: the machine's drift falls on all alike.
            for run in range(args.runs):
                for workers, processes in settings:
                    folder = Path(scratch) / f"harvest-{workers}-{processes}-{run}"
                    folder.mkdir()
                    measured[workers, processes].append(
                        run_harvester(folder, rest_url, args.photos, workers, processes))
            for (workers, processes), runs in measured.items():
                label = f"{workers} (default)" if workers == default else str(workers)
                process_label = f"{processes}" if processes else f"{os.cpu_count()} (one per core)"
                print(f"| {latency:g} ms | {label} | {process_label} "
                      f"| {statistics.median(m.per_second for m in runs):.0f} "
                      f"| {statistics.median(m.cpu_ms_per_photo for m in runs):.2f} "
                      f"| {statistics.median(m.peak_memory for m in runs) / 2**20:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
