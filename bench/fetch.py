"""Benchmark: the CPU of one image fetch, by HTTP client and by how fetches run at once.

    .venv/bin/python bench/fetch.py                    (3,000 fetches a way, 5 rounds)
    .venv/bin/python bench/fetch.py --source-size 500 --fetches 2000

On a worker's threads, a fetch is over a quarter of a 240 px photo's CPU in a harvest
(see the README's Performance section). This measures it apart from the rest: it starts
the stand-in of bench/throughput.py (bench/standin_server.py, in a process of its own)
and fetches the same images from it, over kept-alive connections, each of these ways in
turn, `--rounds` times:
- harvester's fetch (`download._get`, streamed as `download.fetch_source` reads it) on
  64 threads at once, as a worker process runs them by default (128 downloads at once
  over 2 worker processes), and on one thread;
- requests' `Session.get(url).content`, urllib3's `HTTPConnectionPool.request` and the
  standard library's `http.client`, on one thread: what each layer under requests costs;
- aiohttp, 64 at once on one thread's event loop: the same concurrency as the 64
  threads, without threads.
It prints the median CPU ms per fetch (this process's, not the stand-in's) and fetches/s.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import standin

from harvester import download
from harvester.config import DownloadSpec

AT_ONCE = 64  # a worker process's threads with the default download.workers, on 2 cores


def harvester_fetch(urls: list[str], threads: int) -> None:
    session = download.make_session(DownloadSpec(workers=threads))
    jobs: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    for url in urls:
        jobs.put(url)
    for _ in range(threads):
        jobs.put(None)

    failed: list[BaseException] = []

    def work() -> None:
        try:
            while (url := jobs.get()) is not None:
                with download._get(session, url, 30) as response:
                    response.raise_for_status()
                    b"".join(response.iter_content(download.CHUNK))
        except BaseException as error:  # the round's figures would not count it: stop
            failed.append(error)

    running = [threading.Thread(target=work) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    if failed:
        raise RuntimeError(f"a fetch failed: {failed[0]!r}")


def requests_get(urls: list[str]) -> None:
    session = download.make_session(DownloadSpec())
    for url in urls:
        session.get(url, timeout=30).raise_for_status()


def urllib3_request(urls: list[str]) -> None:
    first = urlparse(urls[0])
    pool = urllib3.HTTPConnectionPool(first.hostname, first.port, maxsize=1)
    for url in urls:
        if pool.request("GET", urlparse(url).path).status != 200:
            raise RuntimeError(f"{url} was not served")


def standard_library(urls: list[str]) -> None:
    first = urlparse(urls[0])
    connection = http.client.HTTPConnection(str(first.hostname), first.port, timeout=30)
    for url in urls:
        connection.request("GET", urlparse(url).path)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} was not served")
    connection.close()


def aiohttp_fetch(urls: list[str], at_once: int) -> None:
    async def fetch_all() -> None:
        todo = iter(urls)
        connector = aiohttp.TCPConnector(limit=at_once)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def work() -> None:
                for url in todo:
                    async with session.get(url, raise_for_status=True) as response:
                        await response.read()

            await asyncio.gather(*(work() for _ in range(at_once)))

    asyncio.run(fetch_all())


WAYS: dict[str, Callable[[list[str]], None]] = {
    f"harvester's fetch, {AT_ONCE} threads": lambda urls: harvester_fetch(urls, AT_ONCE),
    "harvester's fetch, 1 thread": lambda urls: harvester_fetch(urls, 1),
    "requests Session.get, 1 thread": requests_get,
    "urllib3, 1 thread": urllib3_request,
    "http.client, 1 thread": standard_library,
    f"aiohttp, {AT_ONCE} at once on 1 thread": lambda urls: aiohttp_fetch(urls, AT_ONCE),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetches", type=int, default=3000, help="images fetched each way")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every way, in turns")
    parser.add_argument("--source-size", type=int, choices=(240, 500), default=240,
                        help="the stand-in's images")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="harvester-bench-") as scratch, \
            standin(args.source_size, args.fetches, Path(scratch)):
        urls = (Path(scratch) / "image_urls.txt").read_text().split()[:args.fetches]
        measured: dict[str, list[tuple[float, float]]] = {name: [] for name in WAYS}
        for _ in range(args.rounds):
            for name, way in WAYS.items():
                cpu, wall = time.process_time(), time.perf_counter()
                way(urls)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                measured[name].append((1000 * cpu / len(urls), len(urls) / wall))
    print(f"| way ({len(urls)} fetches of {args.source_size} px images, median of "
          f"{args.rounds}) | CPU ms/fetch | fetches/s |")
    print("|---|---|---|")
    for name, rounds in measured.items():
        print(f"| {name} | {statistics.median(cpu for cpu, _ in rounds):.3f} "
              f"| {statistics.median(rate for _, rate in rounds):.0f} |")


if __name__ == "__main__":
    main()
