"""The worker processes: what their fork server loads for them."""

from __future__ import annotations

import errno
import gc
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from harvester import cli, forkserver, workers
from harvester.__main__ import main as harvester_command
from harvester.config import DownloadSpec, ImageSpec
from harvester.resize import Resized
from tests.images import jpeg


def modules_a_first_photo_loads(output_dir: Path) -> list[str]:
    """In a worker: resize one photo, and name the modules that loaded for it."""
    before = set(sys.modules)
    job = workers.Job("1", None, 1, ".sources/cat/1.jpg", "cat/1.jpg")
    (result,) = workers._do(job, None, threading.Semaphore(), output_dir,  # type: ignore[arg-type]
                            DownloadSpec(), ImageSpec())
    assert isinstance(result, Resized), result
    return sorted(set(sys.modules) - before)


# A source whose last step is large (Pillow's filter), and one whose last step is small,
# OpenCV's, which a worker loads when it first needs it (see harvester/images.py).
@pytest.mark.parametrize(("size", "loads"), [((800, 600), []), ((500, 375), ["cv2"])])
def test_the_fork_server_has_loaded_what_a_workers_first_photo_needs(tmp_path, size, loads):
    # Else each worker loads it at its first photo, at the start of every run (scipy,
    # for imagehash's pHash, is a quarter of a second).
    (tmp_path / ".sources" / "cat").mkdir(parents=True)
    (tmp_path / ".sources" / "cat" / "1.jpg").write_bytes(jpeg(*size))
    with ProcessPoolExecutor(1, mp_context=forkserver.context()) as pool:
        loaded = pool.submit(modules_a_first_photo_loads, tmp_path).result()
    # OpenCV's own modules, and numpy's old name for its core, which OpenCV imports.
    assert sorted({name.split(".")[0] for name in loaded if not name.startswith("numpy.core")}
                  ) == loads
    assert (tmp_path / "cat" / "1.jpg").exists()


@pytest.mark.parametrize(("arguments", "starts"), [
    (["run"], True),
    (["resume", "-c", "cats.yaml"], True),
    (["demo", "-o", "demo"], True),
    (["status", "-c", "run.yaml"], False),
    (["export"], False),
    (["run", "--help"], False),
])
def test_the_command_starts_the_fork_server_before_the_cli_only_to_harvest(
        monkeypatch, arguments, starts):
    started = []
    monkeypatch.setattr(forkserver, "start", lambda: started.append("fork server"))
    monkeypatch.setattr(cli, "main", lambda: started.append("cli"))
    monkeypatch.setattr(sys, "argv", ["harvester", *arguments])
    # The command hides pandas from sqlite-utils; put back after the test, for the tests'
    # Hugging Face datasets, which need it.
    monkeypatch.setitem(sys.modules, "pandas", sys.modules.get("pandas"))
    # And sets OpenBLAS's threads for the processes it starts: unset again after the test.
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    # The command's last act (it spares the ending process a garbage collection) would
    # keep this test process's objects from ever being collected.
    monkeypatch.setattr(gc, "freeze", lambda: started.append("freeze"))
    harvester_command()
    assert started == (["fork server", "cli", "freeze"] if starts else ["cli", "freeze"])


def test_stopping_returns_every_result_and_ends_the_results_thread(make_config):
    config = make_config(resize={"workers": 2})
    pool = workers.Workers(config)
    pool.submit([workers.Job(str(number), None, 1, f".sources/cat/{number}.jpg",
                             f"cat/{number}.jpg") for number in range(40)])
    finished = pool.collect(most=40, wait=30)
    finished += pool.stop()
    assert sorted(int(result.photo_id) for result in finished) == list(range(40))
    assert {result.reason for result in finished} == {"source_missing"}
    assert pool.receiver is None and pool.processes == []


def test_the_results_thread_ends_by_itself_when_every_worker_is_gone(make_config):
    # It reads until the end of the pipe, which comes once no worker holds it: a stop
    # needs no timeout to notice.
    pool = workers.Workers(make_config(resize={"workers": 2}))
    pool.submit([workers.Job("1", None, 1, ".sources/cat/1.jpg", "cat/1.jpg")])
    for process in pool.processes:
        process.kill()
    assert pool.receiver is not None
    pool.receiver.join(timeout=30)
    assert not pool.receiver.is_alive()
    with pytest.raises(workers.WorkerFailed, match="ended unexpectedly"):
        pool.collect(most=1, wait=0.1)
    pool.stop()


def test_a_worker_that_cannot_start_stops_the_run_and_the_one_started_ends(
        make_config, monkeypatch):
    pool = workers.Workers(make_config(resize={"workers": 2}))
    process_class = pool.context.Process
    start = process_class.start
    started = []

    def start_only_one(process):
        if started:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        started.append(process)
        start(process)

    monkeypatch.setattr(process_class, "start", start_only_one)
    with pytest.raises(OSError, match="temporarily unavailable"):
        pool.submit([workers.Job("1", None, 1, ".sources/cat/1.jpg", "cat/1.jpg")])
    assert pool.processes == started
    assert pool.stop() == []
    assert started[0].exitcode is not None and pool.processes == []
