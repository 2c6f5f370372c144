"""Crash safety: `harvester run` as a real process over real sockets, killed with SIGKILL
inside each stage, then resumed, must end with the dataset an uninterrupted run makes."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harvester.standin import StandIn, Universe
from tests.conftest import dataset, write_config

pytestmark = pytest.mark.slow
CLASSES = [{"name": "cat", "count": 60}, {"name": "dog", "count": 40}]
WORKERS = 4


@pytest.fixture(scope="module")
def stand_in():
    universe = Universe(seed=11, photos_per_tag={"cat": 300, "dog": 200})
    # Slow enough answers that every stage lasts long enough to be killed inside.
    with StandIn(universe, api_delay=0.15, image_delay=0.02) as server:
        yield server


def config_in(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(
        folder, classes=CLASSES,
        flickr={"per_page": 20, "retry_backoff": 0},
        download={"workers": WORKERS, "retry_backoff": 0},
        resize={"workers": 2},
        image={"longest_side": 500},  # larger renditions: resize lasts long enough to hit
    )


def harvester(command: str, config: Path, server: StandIn) -> subprocess.Popen:
    env = {**os.environ, "API_KEY": "k", "API_SECRET": "s", "FLICKR_API_URL": server.rest_url}
    return subprocess.Popen(
        [sys.executable, "-m", "harvester", command, "-c", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def count(db: Path, where: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute(f"SELECT count(*) FROM photos WHERE {where}").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is still being created
        return 0


KILL_SEED = 20261124


def kill_plan(seed: int) -> list[tuple[str, int, Callable[[int, Path], bool]]]:
    """Seeded random kill moments spread over every stage, in the order the stages run.

    Each is (stage, threshold, reached), `reached` a condition on the API calls the
    current process made and on the output folder.
    """
    rng = random.Random(seed)
    downloads = sorted(rng.sample(range(5, 95), 2))
    resizes = sorted(rng.sample(range(5, 90), 2))
    search_calls = rng.randint(1, 3)
    return [
        ("search", search_calls, lambda calls, out: calls >= search_calls),
        *[("download", n, _rows_at_least("source_path IS NOT NULL", n)) for n in downloads],
        *[("resize", n, _rows_at_least("state = 'resized'", n)) for n in resizes],
        ("assign", 1, _rows_at_least("state = 'assigned'", 1)),
        ("export", 1, lambda calls, out: (out / "train_test_split.json").exists()),
    ]


def _rows_at_least(where: str, n: int) -> Callable[[int, Path], bool]:
    return lambda calls, out: count(out / "harvest.db", where) >= n


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_dataset(
    stand_in, tmp_path
):
    reference = config_in(tmp_path / "reference")
    finished = harvester("run", reference, stand_in)
    assert finished.wait(timeout=120) == 0, finished.stderr.read()
    expected = dataset(reference.parent / "outputs")

    config = config_in(tmp_path / "killed")
    out = config.parent / "outputs"
    requests_before = stand_in.image_requests.copy()
    landed = []
    for stage, threshold, reached in kill_plan(KILL_SEED):
        calls_before = stand_in.api_calls.total()
        process = harvester("resume" if out.exists() else "run", config, stand_in)
        deadline = time.monotonic() + 60
        while not reached(stand_in.api_calls.total() - calls_before, out) and (
            process.poll() is None
        ):
            assert time.monotonic() < deadline, f"never reached {stage} {threshold}"
            time.sleep(0.002)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            landed.append(f"{stage}@{threshold}")
        process.wait(timeout=30)
    resumed = harvester("resume", config, stand_in)
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()

    assert dataset(out) == expected
    print(f"SIGKILL landed at: {', '.join(landed)}")
    assert len(landed) >= 6, f"kills landed only at {landed}"
    served = stand_in.image_requests - requests_before
    photos = sum(len(paths) for paths in json.loads(expected["train_test_split.json"]).values())
    # Each photo fetched once, but for those in flight when a kill landed.
    assert max(served.values()) <= 2
    assert served.total() <= photos + len(landed) * WORKERS * 4
    with sqlite3.connect(out / "harvest.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sigint_stops_cleanly_with_exit_130_and_the_resume_line(tmp_path):
    universe = Universe(seed=11, photos_per_tag={"cat": 300, "dog": 200})
    # Downloads slow enough (about 5 s in all) that the run is surely still going at the signal.
    with StandIn(universe, image_delay=0.2) as slow:
        config = config_in(tmp_path)
        process = harvester("run", config, slow)
        deadline = time.monotonic() + 60
        while count(config.parent / "outputs" / "harvest.db", "source_path IS NOT NULL") < 1:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.005)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
    stderr = process.stderr.read()
    assert "interrupted." in stderr and f"harvester resume -c {config}" in stderr
    assert "Traceback" not in stderr

