"""The stand-in for a benchmark, in a process of its own: Flickr's API and its image host.

    python bench/standin_server.py --photos-per-class 2750 --classes 2 --source-size 500

The API is harvester's stand-in (harvester.standin). Its photos come in one rendition
only (`--source-size`: 240 or 500 px), with photographic grain so that their JPEGs are
as large as real Flickr ones, and they are all drawn before the server says it is ready:
the image host then only looks bytes up, through aiohttp, so that serving costs the
machine as little as it can and the tools measured get the CPU. Prints one JSON line
when ready (rest_url, image_urls file) and serves until stdin closes. With `--latency-ms`
each image is answered that long after it is asked for, without holding up the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from aiohttp import web

from harvester.standin import RENDITIONS, StandIn, Universe

SIZE_KEYS = {longest: key for key, (longest, _) in RENDITIONS.items()}
GRAIN = 20.0  # 500 px JPEGs of about 55 KB and 240 px ones of about 14 KB, as on Flickr


def universe_for(photos_per_class: int, classes: int, source_size: int) -> Universe:
    names = [f"class{index}" for index in range(classes)]
    return Universe(seed=5, photos_per_tag={name: photos_per_class for name in names},
                    renditions=(SIZE_KEYS[source_size],), grain=GRAIN)


def image_paths(universe: Universe, image_base_url: str) -> list[str]:
    """Every image path a search of the universe can hand out, at its one rendition.

    From the universe itself, not by paging a search: Flickr's (and the stand-in's) search
    stops at 4,000 results, which harvester gets past with upload-date windows.
    """
    extras = f"url_{universe.renditions[0]}"
    photo_ids = {photo_id for tag in universe.photos_per_tag
                 for photo_id in universe.photo_ids(tag)}
    return sorted(urlparse(universe.record(photo_id, image_base_url, {extras})[extras]).path
                  for photo_id in photo_ids)


_WORLD: Universe | None = None


def _draw(args: tuple[int, int, int, str]) -> tuple[str, bytes | None]:
    global _WORLD
    if _WORLD is None:
        _WORLD = universe_for(*args[:3])
    return args[3], _WORLD.image(args[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos-per-class", type=int, required=True)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--source-size", type=int, choices=(240, 500), default=500)
    parser.add_argument("--urls", type=Path, required=True, help="file to write image URLs to")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="wait this long before answering each image request, as a "
                             "distant image host does (the API answers at once)")
    args = parser.parse_args()

    universe = universe_for(args.photos_per_class, args.classes, args.source_size)
    loop = asyncio.new_event_loop()
    images: dict[str, bytes] = {}

    async def image(request: web.Request) -> web.Response:
        if args.latency_ms:
            await asyncio.sleep(args.latency_ms / 1000)
        body = images.get(request.path)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{tail:.*}", image)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    image_base_url = f"http://127.0.0.1:{port}"

    paths = image_paths(universe, image_base_url)
    work = [(args.photos_per_class, args.classes, args.source_size, path) for path in paths]
    with ProcessPoolExecutor() as pool:
        for path, data in pool.map(_draw, work, chunksize=64):
            if data is not None:
                images[path] = data
    args.urls.write_text("".join(f"{image_base_url}{path}\n" for path in paths))

    with StandIn(universe, image_base_url=image_base_url) as api:
        print(json.dumps({"rest_url": api.rest_url, "images": len(images),
                          "image_bytes": sum(map(len, images.values()))}), flush=True)
        # Serve until the benchmark closes our stdin.
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(loop.stop)),
                         daemon=True).start()
        loop.run_forever()
    loop.run_until_complete(runner.cleanup())


if __name__ == "__main__":
    main()
