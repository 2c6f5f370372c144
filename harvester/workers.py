"""The worker processes: each fetches photos and resizes them, on threads of its own.

A photo's work is a fetch (waiting on the network, then Python parsing HTTP) and a
decode, resize and encode (Pillow, which lets go of the GIL). One process per core,
each with its share of `download.workers` threads, keeps every core busy with both,
and no process's threads queue for another's GIL. Only a few of a process's threads
resize at once (`RESIZES_AT_ONCE`): the others wait on the network, or for their turn,
without taking the GIL from them. A fetched photo is resized from the bytes in memory;
its source file is written as well, for the `downloaded` state.

Jobs go out on a queue, and each photo's results come back down its worker's own pipe,
as data: the harvest's process records them (see `stream`). Workers never touch the
database. (A pipe written under a lock, not a second queue: a queue's feeder thread would
wake for every photo, and trade the worker's GIL back and forth with the threads doing the
work. A pipe per worker, not one for all: a lock shared between processes is held by a
thread waiting for its own process's GIL, while every thread of the others waits for it.)
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import requests

from harvester import download, forkserver, resize
from harvester.config import Config, DownloadSpec, ImageSpec
from harvester.download import Downloaded, DownloadFailed
from harvester.errors import Stopped
from harvester.helper import picklable
from harvester.resize import Rejected, Resized

# How long a stopping worker may take to finish the photo in hand before it is ended.
# Its files are written whole or not at all, so ending it loses nothing recorded.
STOP_GRACE_SECONDS = 5.0
# Jobs sent to the workers in one message, at most.
JOBS_PER_MESSAGE = 8
# Photos a worker process resizes at once, however many threads it has. Threads past
# these wait their turn without asking for the GIL: with every thread of 64 taking turns
# at it, a fast image host cost 5-11% more CPU a photo (500 px, 128 downloads at once).
RESIZES_AT_ONCE = 2
# How often a worker hands the memory its threads freed back to the system (see
# `_return_freed_memory`). Each time costs about 3 ms of CPU.
RETURN_MEMORY_SECONDS = 2.0
# How long the harvest's results thread lets results gather in the pipes after taking what
# was there. Woken for every photo (a message each), it and the harvest's loop, which it
# wakes, held the GIL 0.1 ms a photo; the pipes hold hundreds of results meanwhile, and
# the harvest records them in batches of half a second anyway.
GATHER_RESULTS_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class Job:
    """What a worker needs of a photo: small, as it is pickled to another process."""

    photo_id: str
    url: str | None  # None: the source was downloaded by an earlier run; resize it
    attempt: int  # the download attempt this is, counting earlier runs'
    source_path: str
    path: str  # the dataset image to write


@dataclass(frozen=True, slots=True)
class Crashed:
    """What escaped a worker's hands (a full disk): it stops the run."""

    photo_id: str
    error: BaseException


Result = Downloaded | DownloadFailed | Resized | Rejected | Crashed
Outcome = tuple[Result, ...]  # one photo's results, sent together


class WorkerFailed(Stopped):
    """A worker process died, or hit a bug: the run stops, and resume continues it."""


class Workers:
    """The worker processes, started with the first job and stopped by `stop` (or on exit)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.processes: list[BaseProcess] = []
        self.threads = 0  # per process
        self.context = forkserver.context()
        self.jobs: multiprocessing.Queue[list[Job] | None] | None = None
        self.results: list[Connection] = []  # the reading ends of the workers' pipes
        # Photos' outcomes read from the pipes by a thread of this process (see `_receive`).
        self.inbox: queue.SimpleQueue[list[Outcome]] = queue.SimpleQueue()
        self.receiver: threading.Thread | None = None
        self.receive_error: BaseException | None = None
        # Made once and held here as long as the workers live: an event's last reference
        # gone in this process removes it before a starting worker can open it.
        self.stopping = self.context.Event()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, jobs: list[Job]) -> None:
        """Hand `jobs` to the workers, a few to a message: one message per photo costs the
        harvest's process more than recording the photo."""
        if not jobs:
            return
        if not self.processes:
            self._start()
        assert self.jobs is not None
        # Few enough to a message that every thread gets some: the last photos of a round
        # are spread over all of them, not queued behind one.
        size = min(JOBS_PER_MESSAGE, math.ceil(len(jobs) / (len(self.processes) * self.threads)))
        for start in range(0, len(jobs), size):
            self.jobs.put(jobs[start:start + size])

    def collect(self, most: int, wait: float) -> list[Result]:
        """The results of up to `most` photos (a fetch and a resize each, or what went
        wrong), waiting up to `wait` seconds for them to come in."""
        if self.receiver is None and self.inbox.empty():
            return []  # no workers started: nothing to wait for
        outcomes: list[Outcome] = []
        deadline = time.monotonic() + wait
        try:
            # Until `most` are in or the time is up: one batch, one sync and one transaction.
            while len(outcomes) < most:
                left = deadline - time.monotonic()
                outcomes += self.inbox.get(timeout=left) if left > 0 else self.inbox.get_nowait()
        except queue.Empty:
            pass
        if self.receive_error is not None:
            raise WorkerFailed(f"the workers' results could not be read: {self.receive_error}")
        if not outcomes and wait:
            self._check_alive()
        return [result for outcome in outcomes for result in outcome]

    def stop(self) -> list[Result]:
        """End the workers once they finish the photo in hand; returns what they finished."""
        if not self.processes:
            return []
        assert self.jobs is not None
        self.stopping.set()
        for _ in range(len(self.processes) * self.threads):
            self.jobs.put(None)
        # A worker that died may have held the job queue's lock, which the others then
        # wait for in vain: they are ended at once.
        died = any(process.exitcode is not None for process in self.processes)
        deadline = time.monotonic() + (0 if died else STOP_GRACE_SECONDS)
        # The results thread takes their results meanwhile: none ends with results unsent.
        running = [process.sentinel for process in self.processes]
        while running and (left := deadline - time.monotonic()) > 0:
            for ended in multiprocessing.connection.wait(running, timeout=left):
                running.remove(ended)  # type: ignore[arg-type]
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join()
        assert self.receiver is not None
        self.receiver.join()  # once it has read what the workers sent last
        finished = self.collect(most=1 << 30, wait=0)
        # Jobs a worker never took (it was ended) stay unsent: their photos wait for resume.
        self.jobs.cancel_join_thread()
        self.jobs.close()
        for pipe in self.results:
            pipe.close()
        self.processes, self.jobs, self.results = [], None, []
        self.receiver = None
        return finished

    def _start(self) -> None:
        processes = self.config.resize.workers or os.cpu_count() or 1
        self.threads = math.ceil(self.config.download.workers / processes)
        self.stopping.clear()
        self.jobs = self.context.Queue()
        try:
            for number in range(processes):
                results, results_in = self.context.Pipe(duplex=False)
                process = self.context.Process(
                    target=serve, name=f"harvester-worker-{number}", daemon=True,
                    args=(self.jobs, results_in, self.stopping, self.config.output_dir,
                          self.config.download, self.config.image, self.threads,
                          os.getpid()))
                try:
                    process.start()
                except BaseException:
                    results.close()
                    raise
                finally:
                    # Only the worker holds its pipe's writing end now: once it has ended,
                    # the results thread reads to the end of the pipe.
                    results_in.close()
                self.processes.append(process)
                self.results.append(results)
        finally:
            # For the workers that did start, even if another could not: `stop` ends them.
            self.receiver = threading.Thread(target=self._receive, args=(list(self.results),),
                                             name="results", daemon=True)
            self.receiver.start()

    def _receive(self, pipes: list[Connection]) -> None:
        """Move the workers' results from their pipes to `inbox`, until every worker has
        ended and its pipe is read to its end.

        In a thread of its own because Ctrl-C raises KeyboardInterrupt in the main thread,
        wherever it is: between a message's length and its body, the rest of the message
        would be read as the next one's length, and the run would wait for it forever.
        """
        try:
            while pipes:
                # All that is in, in one go: the harvest's loop wakes once for it.
                arrived: list[Outcome] = []
                for pipe in multiprocessing.connection.wait(pipes):
                    try:
                        arrived.append(pipe.recv())  # type: ignore[union-attr]
                        while pipe.poll():  # type: ignore[union-attr]
                            arrived.append(pipe.recv())  # type: ignore[union-attr]
                    except EOFError:  # its worker has ended, and all it sent is in
                        pipes.remove(pipe)  # type: ignore[arg-type]
                if arrived:
                    self.inbox.put(arrived)
                    time.sleep(GATHER_RESULTS_SECONDS)
        except BaseException as error:  # never expected: the harvest stops and says so
            self.receive_error = error

    def _check_alive(self) -> None:
        dead = [process for process in self.processes if process.exitcode is not None]
        if dead and not self.stopping.is_set():
            raise WorkerFailed(
                f"a worker process ended unexpectedly (exit code {dead[0].exitcode}); "
                "the photos it held were not recorded and are fetched again on resume")


# The worker's side: these run in the worker processes.

def serve(jobs: multiprocessing.Queue[list[Job] | None], results: Connection,
          stopping: threading.Event, output_dir: Path,
          download_spec: DownloadSpec, image_spec: ImageSpec, threads: int,
          harvest_pid: int) -> None:
    """A worker process's life: `threads` threads taking jobs until each takes a None."""
    # Ctrl-C reaches the whole process group: the harvest decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with(harvest_pid)
    _return_freed_memory()
    session = download.make_session(download_spec, stopping)
    sending = threading.Lock()
    resizing = threading.BoundedSemaphore(RESIZES_AT_ONCE)

    def send(outcome: Outcome) -> None:
        with sending:  # whole messages: the threads share the pipe
            results.send(outcome)

    def work() -> None:
        while (taken := jobs.get()) is not None:
            for job in taken:
                if stopping.is_set():
                    break  # left as they are: resume takes them up
                try:
                    send(_do(job, session, resizing, output_dir, download_spec, image_spec))
                except download.CutShort:  # waiting to retry as the harvest stops
                    break
                except Exception as error:  # sent to the harvest, which stops
                    send((Crashed(job.photo_id, picklable(error, WorkerFailed)),))

    workers = [threading.Thread(target=work, name=f"work-{n}") for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


def _do(job: Job, session: requests.Session, resizing: threading.Semaphore, output_dir: Path,
        download_spec: DownloadSpec, image_spec: ImageSpec) -> Outcome:
    if job.url is None:
        try:
            source = (output_dir / job.source_path).read_bytes()
        except FileNotFoundError:
            return (Rejected(job.photo_id, "source_missing", f"{job.source_path} is gone"),)
        with resizing:
            return (resize.resize_source(output_dir, image_spec, job.photo_id, source,
                                         job.source_path, job.path),)
    fetched, source = download.fetch_source(session, output_dir, download_spec, job.photo_id,
                                            job.url, job.source_path, job.attempt)
    if source is None:
        return (fetched,)
    with resizing:
        return fetched, resize.resize_source(output_dir, image_spec, job.photo_id, source,
                                             job.source_path, job.path)


def _end_with(harvest_pid: int) -> None:
    """The worker ends itself once the harvest that started it is gone.

    A run killed with SIGKILL cannot stop its workers, and they would wait forever.
    """

    def watch() -> None:
        while True:
            time.sleep(1)
            try:
                os.kill(harvest_pid, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=watch, name="watch-harvest", daemon=True).start()


def _return_freed_memory() -> None:
    """Every few seconds, the memory the worker's threads have freed goes back to the system.

    glibc's malloc gives threads arenas of their own (up to 8 per core) and keeps what is
    freed in them for reuse, returning an arena's memory to the system only from its top,
    above the last piece still in use. With many download threads the arenas fill with
    freed holes below such pieces: in a 25,000-photo harvest with 64 threads a worker,
    nine tenths of the workers' arenas were free, and each worker held 121 MB; trimmed
    every 2 seconds, 55 MB. A 100,000-photo harvest with 128 downloads at once peaked at
    403 MB, and 264 MB trimmed (bench/scale.py). Other C libraries (musl, macOS) have no
    malloc_trim.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return

    def keep_returning() -> None:
        while True:
            time.sleep(RETURN_MEMORY_SECONDS)
            trim(0)

    threading.Thread(target=keep_returning, name="return-memory", daemon=True).start()

