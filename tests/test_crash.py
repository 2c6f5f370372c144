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
from typing import Any

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
    with StandIn(universe, api_delay=0.15, image_delay=0.1) as server:
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


def harvester(command: str, config: Path, server: StandIn, **popen: Any) -> subprocess.Popen:
    env = {**os.environ, "API_KEY": "k", "API_SECRET": "s", "FLICKR_API_URL": server.rest_url}
    return subprocess.Popen(
        [sys.executable, "-m", "harvester", command, "-c", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
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
DOWNLOADED = "source_path IS NOT NULL"
RESIZED = "state IN ('resized', 'assigned')"


def kill_plan(seed: int) -> list[tuple[str, int, Callable[[int, Path, dict], bool]]]:
    """Seeded random kill moments spread over the whole harvest, in the order they come.

    Each is (stage, n, reached): `reached(calls, out, start)` is true once the current
    process has made `calls` API calls, or once n photos of the harvest are downloaded
    (resized) - search, download and resize stream together, so these are moments of the
    harvest, not of one stage - or once the current process has assigned a class. Results
    are recorded in batches, so a kill lands at the first batch past its moment: the
    snapshot printed for each kill says where it really landed.
    """
    rng = random.Random(seed)
    search_calls = rng.randint(1, 3)
    downloads = sorted(rng.sample(range(5, 50), 2))
    resizes = sorted(rng.sample(range(downloads[-1] + 5, 90), 2))
    return [
        ("search", search_calls, lambda calls, out, start: calls >= search_calls),
        *[("download", n, _reached(DOWNLOADED, n)) for n in downloads],
        *[("resize", n, _reached(RESIZED, n)) for n in resizes],
        ("assign", 1, _more("state = 'assigned'", 1)),
        ("export", 1, lambda calls, out, start: (out / "train_test_split.json").exists()),
    ]


def _reached(where: str, n: int) -> Callable[[int, Path, dict], bool]:
    return lambda calls, out, start: count(out / "harvest.db", where) >= n


def _more(where: str, n: int) -> Callable[[int, Path, dict], bool]:
    return lambda calls, out, start: count(out / "harvest.db", where) >= start[where] + n


def snapshot(out: Path) -> dict[str, int]:
    return {where: count(out / "harvest.db", where)
            for where in (DOWNLOADED, RESIZED, "state = 'assigned'")}


def descendants(pid: int) -> set[int]:
    """Every living process below `pid` (the worker processes sit below a forkserver)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


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
    landed, orphans = [], set()
    for stage, n, reached in kill_plan(KILL_SEED):
        start, calls_before = snapshot(out), stand_in.api_calls.total()
        process = harvester("resume" if out.exists() else "run", config, stand_in)
        deadline = time.monotonic() + 60
        while not reached(stand_in.api_calls.total() - calls_before, out, start) and (
            process.poll() is None
        ):
            assert time.monotonic() < deadline, f"never reached {stage} {n}"
            time.sleep(0.002)
        children = descendants(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            landed.append(f"{stage}+{n} at {tuple(snapshot(out).values())}")
        process.wait(timeout=30)
        orphans |= children
    resumed = harvester("resume", config, stand_in)
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()

    assert dataset(out) == expected
    print("SIGKILL landed at (downloaded, resized, assigned):\n  " + "\n  ".join(landed))
    assert len(landed) >= 6, f"kills landed only at {landed}"
    served = stand_in.image_requests - requests_before
    photos = sum(len(paths) for paths in json.loads(expected["train_test_split.json"]).values())
    # Each photo fetched once, but for those in flight when a kill landed.
    assert max(served.values()) <= 2
    assert served.total() <= photos + len(landed) * WORKERS * 4
    with sqlite3.connect(out / "harvest.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # A killed run's worker processes end by themselves; none is left behind.
    deadline = time.monotonic() + 10
    while any(map(alive, orphans)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in orphans if alive(pid)]


def test_sigint_stops_cleanly_with_exit_130_and_the_resume_line(tmp_path):
    universe = Universe(seed=11, photos_per_tag={"cat": 300, "dog": 200})
    # Downloads slow enough (about 5 s in all) that the run is surely still going at the signal.
    with StandIn(universe, image_delay=0.2) as slow:
        config = config_in(tmp_path)
        # A session of its own, so that Ctrl-C can be sent as a terminal sends it: to the
        # whole process group, the workers too.
        process = harvester("run", config, slow, start_new_session=True)
        deadline = time.monotonic() + 60
        while count(config.parent / "outputs" / "harvest.db", "source_path IS NOT NULL") < 1:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 130
    stderr = process.stderr.read()
    assert "interrupted." in stderr and f"harvester resume -c {config}" in stderr
    assert "Traceback" not in stderr


def test_ctrl_c_while_the_command_loads_stops_it_with_exit_130_not_a_traceback(tmp_path):
    config = config_in(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "harvester", "status", "-c", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    # The signal is sent while the CLI's modules load (about half a second), which is when
    # the command holds Ctrl-C back; before that, Python itself is still starting.
    deadline = time.monotonic() + 30
    while not sigint_blocked(process.pid):
        assert process.poll() is None and time.monotonic() < deadline, "SIGINT never held back"
        time.sleep(0.001)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=30) == 130
    stderr = process.stderr.read()
    assert "interrupted." in stderr and "Traceback" not in stderr


def sigint_blocked(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:"))
    return bool(int(mask, 16) & (1 << (signal.SIGINT - 1)))


def test_a_search_killed_mid_window_repeats_no_call_but_the_one_in_flight(tmp_path):
    """A tag past the 4,000 cap, so search walks upload-date windows; SIGKILL twice in it."""
    universe = Universe(seed=5, photos_per_tag={"cat": 9000})
    folder = tmp_path / "killed"
    folder.mkdir()
    config = write_config(
        folder, classes=[{"name": "cat", "count": 300}],
        flickr={"per_page": 20, "retry_backoff": 0,
                "min_upload_date": "2005-01-01", "max_upload_date": "2024-12-31"},
        download={"workers": WORKERS, "retry_backoff": 0}, resize={"workers": 1},
    )
    with StandIn(universe, api_delay=0.1) as server:
        for calls in random.Random(KILL_SEED).sample(range(3, 8), 2):
            before = len(server.api_log)
            process = harvester("resume" if (folder / "outputs").exists() else "run", config,
                                server)
            deadline = time.monotonic() + 60
            while len(server.api_log) - before < calls and process.poll() is None:
                assert time.monotonic() < deadline, "search never got that far"
                time.sleep(0.002)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finished = harvester("resume", config, server)
        assert finished.wait(timeout=120) == 0, finished.stderr.read()
        searches = [json.dumps(params, sort_keys=True) for params in server.api_log
                    if params["method"] == "flickr.photos.search"]
    windows = {(params["min_upload_date"], params["max_upload_date"])
               for params in map(json.loads, searches)}
    assert len(windows) > 1  # the search did walk windows
    repeated = len(searches) - len(set(searches))
    assert repeated <= 2  # at most the call in flight at each of the two kills
    split = json.loads((folder / "outputs" / "train_test_split.json").read_text())
    photos = split["train"] + split["test"]
    assert len(photos) == len(set(photos)) == 300
