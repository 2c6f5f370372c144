"""An offline Flickr stand-in: the part of the REST API harvester uses, and the images.

`Universe` is a deterministic photo world per tag (pure: params in, Flickr-shaped
JSON out; image path in, JPEG bytes out). `StandIn` serves it over HTTP on
127.0.0.1 and counts what it served, for the demo, benchmarks and tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

from PIL import Image, ImageDraw

RESULT_CAP = 4000  # Flickr serves the first 4,000 results of any query, then repeats
# Rendition key -> (longest side, URL file suffix), as Flickr names them.
RENDITIONS = {"s": (240, "_m"), "n": (320, "_n"), "m": (500, ""), "z": (640, "_z"),
              "l": (1024, "_b")}
SUFFIX_TO_SIZE = {suffix: key for key, (_, suffix) in RENDITIONS.items()}
IMAGE_PATH = re.compile(
    r"^/(?P<server>\d+)/(?P<id>\d+)_(?P<secret>[0-9a-f]+)(?P<suffix>_[a-z])?\.jpg$"
)
LICENSES = [
    (0, "All Rights Reserved", "https://www.flickrhelp.com/hc/en-us/articles/"
     "10710266545556-Using-Flickr-images-shared-by-other-members"),
    (1, "CC BY-NC-SA 2.0", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    (2, "CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0/"),
    (3, "CC BY-NC-ND 2.0", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    (4, "CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    (5, "CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/"),
    (6, "CC BY-ND 2.0", "https://creativecommons.org/licenses/by-nd/2.0/"),
    (7, "No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    (8, "United States Government Work", "https://www.usa.gov/government-copyright"),
    (9, "Public Domain Dedication (CC0)", "https://creativecommons.org/publicdomain/zero/1.0/"),
    (10, "Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/"),
]
UPLOAD_RANGE = (1_104_537_600, 1_735_689_600)  # 2005 .. 2025


def fail(code: int, message: str) -> dict[str, Any]:
    return {"stat": "fail", "code": code, "message": message}


class Universe:
    """Every tag has its own photos; the same seed always makes the same world."""

    def __init__(self, seed: int = 0, photos_per_tag: Mapping[str, int] | None = None,
                 default_photos: int = 1000) -> None:
        self.seed = seed
        self.photos_per_tag = dict(photos_per_tag or {})
        self.default_photos = default_photos
        self._tag_by_photo: dict[str, str] = {}  # the tag each photo was made for
        self._lock = threading.Lock()

    def respond(self, params: Mapping[str, str], image_base_url: str) -> dict[str, Any]:
        method = params.get("method", "")
        if method == "flickr.photos.search":
            return self.search(params, image_base_url)
        if method == "flickr.photos.licenses.getInfo":
            return {"licenses": {"license": [
                {"id": id_, "name": name, "url": url} for id_, name, url in LICENSES
            ]}, "stat": "ok"}
        return fail(112, f'Method "{method}" not found')

    def search(self, params: Mapping[str, str], image_base_url: str) -> dict[str, Any]:
        tags = [tag.strip() for tag in params.get("tags", "").split(",") if tag.strip()]
        if not tags:
            return fail(3, "Parameterless searches have been disabled. "
                           "Please use flickr.photos.getRecent instead.")
        per_page = min(max(_int(params.get("per_page"), 100), 1), 500)
        page = max(_int(params.get("page"), 1), 1)
        matches = self._matches(tuple(tags), params.get("tag_mode", "any"),
                                params.get("license", ""), params.get("sort", "relevance"))
        total = len(matches)
        reachable = min(total, RESULT_CAP)
        pages = math.ceil(total / per_page) if total else 0
        start = (page - 1) * per_page
        if reachable and start >= reachable:
            # Past the cap Flickr repeats earlier results while `total` keeps its promise.
            start %= reachable
        window = matches[start:min(start + per_page, reachable)] if start < reachable else []
        return {"photos": {
            "page": page, "pages": pages, "perpage": per_page, "total": total,
            "photo": [self._record(photo_id, image_base_url) for photo_id in window],
        }, "stat": "ok"}

    def image(self, path: str) -> bytes | None:
        match = IMAGE_PATH.match(path)
        if not match or match["id"] not in self._tag_by_photo:
            return None
        facts = self._facts(match["id"])
        if match["secret"] != facts["secret"]:
            return None
        size_key = SUFFIX_TO_SIZE.get(match["suffix"] or "")
        if size_key is None:
            return None
        width, height = _scaled(facts["width"], facts["height"], RENDITIONS[size_key][0])
        return render(match["id"], facts["tag"], width, height)

    def photo_ids(self, tag: str) -> list[str]:
        return list(self._tag_photos(tag))

    @lru_cache(maxsize=64)  # noqa: B019 - a universe lives as long as its server
    def _tag_photos(self, tag: str) -> tuple[str, ...]:
        count = self.photos_per_tag.get(tag, self.default_photos)
        ids = tuple(_photo_id(self.seed, tag, index) for index in range(count))
        with self._lock:
            for photo_id in ids:
                self._tag_by_photo.setdefault(photo_id, tag)
        return ids

    @lru_cache(maxsize=256)  # noqa: B019
    def _matches(self, tags: tuple[str, ...], mode: str, licenses: str, sort: str) -> list[str]:
        per_tag = [set(self._tag_photos(tag)) for tag in tags]
        ids = set.intersection(*per_tag) if mode == "all" else set.union(*per_tag)
        wanted = {value.strip() for value in licenses.split(",") if value.strip()}
        if wanted:
            ids = {photo_id for photo_id in ids if self._facts(photo_id)["license"] in wanted}
        if sort.startswith("date-"):
            return sorted(ids, key=lambda i: (self._facts(i)["dateupload"], i),
                          reverse=sort.endswith("desc"))
        return sorted(ids, key=lambda i: hashlib.sha256(f"{sort}:{i}".encode()).digest())

    @lru_cache(maxsize=200_000)  # noqa: B019
    def _facts(self, photo_id: str) -> dict[str, Any]:
        rng = random.Random(f"{self.seed}:{photo_id}")
        landscape = rng.random() < 0.7
        long_side = rng.choice((1024, 1600, 2048, 3000))
        short_side = int(long_side * rng.choice((0.5625, 0.667, 0.75, 1.0)))
        owner_number = rng.randrange(200)
        return {
            "secret": f"{rng.getrandbits(40):010x}",
            "server": str(rng.choice((65535, 7372, 4110))),
            "width": long_side if landscape else short_side,
            "height": short_side if landscape else long_side,
            "license": str(rng.choice((0, 1, 2, 4, 4, 5, 9, 10))),
            "owner": f"{10_000_000 + owner_number}@N0{owner_number % 8}",
            "ownername": f"photographer {owner_number}",
            "dateupload": rng.randrange(*UPLOAD_RANGE),
            "tag": self._tag_by_photo.get(photo_id, ""),
            "title": f"photo {photo_id[-4:]}",
        }

    def _record(self, photo_id: str, image_base_url: str) -> dict[str, Any]:
        facts = self._facts(photo_id)
        record: dict[str, Any] = {
            "id": photo_id, "owner": facts["owner"], "secret": facts["secret"],
            "server": facts["server"], "farm": 66, "title": facts["title"],
            "ispublic": 1, "isfriend": 0, "isfamily": 0, "license": facts["license"],
            # Flickr's own mix of string and number types, as in the real samples.
            "dateupload": str(facts["dateupload"]), "ownername": facts["ownername"],
            "tags": facts["tag"], "media": "photo", "media_status": "ready",
        }
        for key, (longest, suffix) in RENDITIONS.items():
            width, height = _scaled(facts["width"], facts["height"], longest)
            record[f"url_{key}"] = (
                f"{image_base_url}/{facts['server']}/{photo_id}_{facts['secret']}{suffix}.jpg"
            )
            record[f"height_{key}"] = height
            record[f"width_{key}"] = str(width) if key in ("m", "z") else width
        return record


def render(photo_id: str, tag: str, width: int, height: int) -> bytes:
    """A photo-like JPEG: a soft field in the tag's hue with shapes unique to the photo."""
    rng = random.Random(photo_id)
    hue = int(hashlib.sha256(tag.encode()).hexdigest()[:2], 16)
    base = Image.new("HSV", (8, 6))
    base.putdata([
        ((hue + rng.randrange(-12, 13)) % 256, rng.randrange(90, 230), rng.randrange(60, 240))
        for _ in range(48)
    ])
    image = base.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randrange(3, 7)):
        x, y = rng.randrange(width), rng.randrange(height)
        radius = rng.randrange(max(2, min(width, height) // 12), max(3, min(width, height) // 4))
        shade = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=shade)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


class StandIn:
    """Serves a Universe on 127.0.0.1 (a free port) until closed. Counts what it served."""

    def __init__(self, universe: Universe, api_delay: float = 0.0,
                 image_delay: float = 0.0) -> None:
        self.universe = universe
        self.api_delay = api_delay  # seconds before each answer: a slow Flickr
        self.image_delay = image_delay
        self.api_calls: Counter[str] = Counter()
        self.image_requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def rest_url(self) -> str:
        return f"{self.base_url}/services/rest/"

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, counter: Counter[str], key: str) -> None:
        with self._lock:
            counter[key] += 1


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a killed harvest) is expected, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(stand_in: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Flickr's servers do

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/services/rest/":
                self._api(dict(parse_qsl(url.query)))
                return
            match = IMAGE_PATH.match(url.path)
            stand_in.count(stand_in.image_requests, match["id"] if match else url.path)
            time.sleep(stand_in.image_delay)
            data = stand_in.universe.image(url.path)
            if data is None:
                self._send(404, b"Not Found", "text/plain")
            else:
                self._send(200, data, "image/jpeg")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            params = dict(parse_qsl(self.rfile.read(length).decode()))
            self._api(params)

        def _api(self, params: dict[str, str]) -> None:
            stand_in.count(stand_in.api_calls, params.get("method", ""))
            time.sleep(stand_in.api_delay)
            body = stand_in.universe.respond(params, stand_in.base_url)
            self._send(200, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests and the demo read the counters instead

    return Handler


def _photo_id(seed: int, tag: str, index: int) -> str:
    digest = hashlib.sha256(f"{seed}:{tag}:{index}".encode()).digest()
    # 11 digits, like today's Flickr ids.
    return str(50_000_000_000 + int.from_bytes(digest[:6], "big") % 4_000_000_000)


def _scaled(width: int, height: int, longest: int) -> tuple[int, int]:
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
