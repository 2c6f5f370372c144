"""Benchmark: harvester at scale. `harvester status` on 1,000,000 photos; a 100,000-photo
harvest's peak memory; a re-run of that finished harvest; and the same harvest killed
halfway, then resumed.

    .venv/bin/python bench/scale.py                       # all of it
    .venv/bin/python bench/scale.py --photos 0            # status only
    .venv/bin/python bench/scale.py --status-rows 0       # the harvests only
    .venv/bin/python bench/scale.py --status-rows 0 --no-resume --download-workers 32

status: a database of `--status-rows` synthetic photos over 4 classes (most in the
dataset, some failed or rejected for a handful of reasons, some still on their way),
with 20 runs and 3,000 API calls logged; `harvester status` is timed `--repeat` times
as a whole process, start-up included.

harvest: the stand-in (bench/standin_server.py, 240 px sources) serves `--photos`
photos over 2 classes; `harvester run` makes the dataset while its processes' memory is
sampled (bench/throughput.py's `watch`), then runs again on the finished harvest. The
harvest's `download.workers` is the config's default, or `--download-workers`.

resume: the same harvest into a new output folder, killed with SIGKILL once half its
photos are resized, as a crash or an OOM kill would; then `harvester resume`. It reports
how soon the resume records its first photo (its start-up, on a database half done) and
how long it takes to finish.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from harvester.db import open_database

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from throughput import watch  # noqa: E402

STATUS_CLASSES = ("cat", "dog", "bird", "fish")
REASONS = {"failed": ("http_404", "timeout"),
           "rejected": ("duplicate", "near_duplicate", "corrupt", "too_small", "ambiguous")}


def synthetic_harvest(folder: Path, rows: int) -> Path:
    """A config and a harvest database of `rows` photos, written in bulk."""
    per_class = rows // len(STATUS_CLASSES)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": "outputs",
        "classes": [{"name": name, "count": per_class * 9 // 10} for name in STATUS_CLASSES],
        "train_test_split": {"seed": 1, "type": "proportional", "test_size": 0.1},
    }))
    db = open_database(folder / "outputs" / "harvest.db")
    rng = random.Random(1)
    with db.atomic():
        for _ in range(20):
            db.execute("INSERT INTO runs (command, config, outcome) VALUES ('run', '{}', "
                       "'stopped')")
        db.conn.executemany(
            "INSERT INTO api_calls (run_id, method, made_at) VALUES (?, ?, ?)",
            [(1 + n % 20, "flickr.photos.search", time.time() - n) for n in range(3000)])

        def photo(order: int) -> tuple[object, ...]:
            name = STATUS_CLASSES[order % len(STATUS_CLASSES)]
            draw = rng.random()
            state = ("assigned" if draw < 0.85 else "failed" if draw < 0.88
                     else "rejected" if draw < 0.95 else "found")
            reason = rng.choice(REASONS[state]) if state in REASONS else None
            split = ("test" if rng.random() < 0.1 else "train") if state == "assigned" else None
            photo_id = str(50_000_000_000 + order)
            return (photo_id, name, state, split, order, name,
                    f"https://live.staticflickr.com/65535/{photo_id}_abc_m.jpg",
                    f"{name}/{photo_id}.jpg" if state == "assigned" else None, reason)

        for start in range(0, rows, 50_000):
            db.conn.executemany(
                "INSERT INTO photos (photo_id, class, state, split, found_order, search_tags, "
                "url, path, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [photo(order) for order in range(start, min(rows, start + 50_000))])
    db.close()
    return config


def time_status(config: Path, repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "harvester", "status", "-c", str(config)],
                                capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        if result.returncode != 0:
            sys.exit(f"status failed:\n{result.stderr}")
    return seconds


def photos_done(database: Path) -> int:
    """Photos resized so far (those later assigned too), read while the harvest writes."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM photos "
                              "WHERE state IN ('resized', 'assigned')").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def killed_and_resumed(folder: Path, settings: dict[str, object], env: dict[str, str],
                       photos: int) -> dict[str, object]:
    """A harvest killed (SIGKILL) once half of `photos` are resized, then resumed."""
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    database = folder / "outputs" / "harvest.db"
    harvest = subprocess.Popen([sys.executable, "-m", "harvester", "run", "-c", str(config)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree = psutil.Process(harvest.pid)
    while (done := photos_done(database)) < photos // 2:
        if harvest.poll() is not None:
            sys.exit(f"the harvest to kill ended first ({harvest.returncode})")
        time.sleep(0.2)
    workers = tree.children(recursive=True)
    harvest.kill()
    harvest.wait()
    psutil.wait_procs(workers, timeout=30)  # they end themselves once the harvest is gone
    done = photos_done(database)
    started = time.perf_counter()
    resume = subprocess.Popen([sys.executable, "-m", "harvester", "resume", "-c", str(config)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    first_photo = None
    while resume.poll() is None:
        if first_photo is None and photos_done(database) > done:
            first_photo = time.perf_counter() - started
        time.sleep(0.02 if first_photo is None else 0.5)
    seconds = time.perf_counter() - started
    assert resume.stderr is not None
    if resume.returncode != 0:
        sys.exit(f"the resume failed:\n{resume.stderr.read()[-3000:]}")
    return {"killed_with_photos_resized": done,
            "resume_first_photo_seconds": None if first_photo is None else round(first_photo, 2),
            "resume_seconds": round(seconds, 1)}


def harvest_at_scale(photos: int, download_workers: int | None = None,
                     resume: bool = True) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="harvester-scale-") as scratch:
        folder = Path(scratch)
        server = subprocess.Popen(
            [sys.executable, str(HERE / "standin_server.py"),
             "--photos-per-class", str(photos * 12 // 10 // 2), "--classes", "2",
             "--source-size", "240", "--urls", str(folder / "urls.txt")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdin is not None
        ready = json.loads(server.stdout.readline())
        try:
            config = folder / "config.yaml"
            settings: dict[str, object] = {
                "output_dir": "outputs",
                "classes": [{"name": f"class{n}", "count": photos // 2} for n in range(2)],
                "train_test_split": {"seed": 1, "type": "proportional", "test_size": 0.1},
            }
            if download_workers is not None:
                settings["download"] = {"workers": download_workers}
            config.write_text(yaml.safe_dump(settings))
            env = {**os.environ, "API_KEY": "bench", "API_SECRET": "bench",
                   "FLICKR_API_URL": ready["rest_url"]}
            command = [sys.executable, "-m", "harvester", "run", "-c", str(config)]
            first, seconds, cpu, peak, peak_main, _ = watch(command, env=env)
            if first.returncode != 0:
                sys.exit(f"harvester failed:\n{first.stderr[-3000:]}")
            print(first.stdout[-2000:], file=sys.stderr)
            split = json.loads((folder / "outputs" / "train_test_split.json").read_text())
            kept = len(split["train"]) + len(split["test"])
            again, rerun_seconds, _, _, _, _ = watch(command, env=env)
            if again.returncode != 0:
                sys.exit(f"the re-run failed:\n{again.stderr[-3000:]}")
            if resume:
                (folder / "killed").mkdir()
                resumed = killed_and_resumed(folder / "killed", settings, env, photos)
        finally:
            server.stdin.close()
            server.wait(timeout=60)
    return {"photos_wanted": photos, "download_workers": download_workers or "default",
            "photos_in_dataset": kept, "seconds": round(seconds, 1),
            "photos_per_second": round(kept / seconds),
            "cpu_ms_per_photo": round(1000 * cpu / kept, 2),
            "peak_mb_pss_all_processes": round(peak / 2**20),
            "peak_mb_pss_main_process": round(peak_main / 2**20),
            "rerun_seconds": round(rerun_seconds, 2), **(resumed if resume else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--status-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="times status is timed")
    parser.add_argument("--photos", type=int, default=100_000, help="photos harvested")
    parser.add_argument("--download-workers", type=int,
                        help="the harvest's download.workers (default: the config's default)")
    parser.add_argument("--no-resume", action="store_true",
                        help="skip the harvest killed halfway and resumed")
    args = parser.parse_args()
    report: dict[str, object] = {}
    if args.status_rows:
        with tempfile.TemporaryDirectory(prefix="harvester-status-") as scratch:
            config = synthetic_harvest(Path(scratch), args.status_rows)
            seconds = time_status(config, args.repeat)
        report["status"] = {"photos": args.status_rows,
                            "median_seconds": round(statistics.median(seconds), 2),
                            "max_seconds": round(max(seconds), 2)}
        print(json.dumps(report["status"]), file=sys.stderr)
    if args.photos:
        report["harvest"] = harvest_at_scale(args.photos, args.download_workers,
                                             resume=not args.no_resume)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
