"""An offline Flickr stand-in: the part of the REST API harvester uses, and the images.

`Universe` is a deterministic photo world per tag (pure: params in, Flickr-shaped
JSON out; image path in, JPEG bytes out). `StandIn` serves it over HTTP on
127.0.0.1, injects the faults real Flickr has when asked to, and counts what it
served, for `harvester demo`, benchmarks and tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import re
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RESULT_CAP = 4000  # Flickr serves the first 4,000 results of any query, then repeats
# Rendition key -> (longest side, URL file suffix), as Flickr names them.
RENDITIONS = {"t": (100, "_t"), "s": (240, "_m"), "n": (320, "_n"), "m": (500, ""),
              "z": (640, "_z"), "l": (1024, "_b"), "o": (0, "_o")}  # 0: the original's own size
SUFFIX_TO_SIZE = {suffix: key for key, (_, suffix) in RENDITIONS.items()}
IMAGE_PATH = re.compile(
    r"^/(?P<server>\d+)/(?P<id>\d+)_(?P<secret>[0-9a-f]+)(?P<suffix>_[a-z])?\.jpg$"
)
PLACEHOLDER_PATH = "/images/photo_unavailable.png"
CONSUMER_KEY = re.compile(r'oauth_consumer_key="([^"]*)"')
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
    (11, "CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    (12, "CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    (13, "CC BY-ND 4.0", "https://creativecommons.org/licenses/by-nd/4.0/"),
    (14, "CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/"),
    (15, "CC BY-NC-SA 4.0", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    (16, "CC BY-NC-ND 4.0", "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
]
# Flickr's content_types: 0 photo, 1 screenshot, 2 other, 3 virtual photo (none here).
CONTENT_TYPES = (0, 1, 2, 3)
# Parameters of an API call that are transport and signature, not the question asked.
UNLOGGED = ("api_sig", "api_key", "format", "nojsoncallback")
# Files Flickr hands out that a dataset must fix or refuse, served as image faults.
# cached_placeholder: the placeholder of a deleted photo, served with 200 and no redirect.
INTEGRITY_FAULTS = ("duplicate", "near_duplicate", "cmyk", "rotated", "alpha_png", "bomb",
                    "cached_placeholder")
HUE_SERVER = 1000  # a photo's `server` is HUE_SERVER + the hue its image is drawn in
UPLOAD_RANGE = (1_104_537_600, 1_735_689_600)  # 2005 .. 2025


def fail(code: int, message: str) -> dict[str, Any]:
    return {"stat": "fail", "code": code, "message": message}


class Universe:
    """Every tag has its own photos; the same seed always makes the same world.

    `overlap` is the share of each tag's photos that also carry the next tag of
    `photos_per_tag` (the last wraps to the first): photos a harvest finds for two
    classes. `api_key`, when set, is the only key accepted (others get code 100).

    `renditions` are the sizes its photos come in (keys of RENDITIONS; all of them by
    default): Flickr lacks some for some photos, and a benchmark offers one size only
    to choose the source size harvester downloads. `grain` adds photographic grain of
    that strength (0-255) to every image, so that its JPEG is as large as a real photo's
    (the plain pictures compress far better than photos do).

    `drift` makes paging drift as Flickr's does while photos are uploaded and deleted
    between calls: each search shifts its page back by 0..drift results (drawn by call
    number, so the same calls drift the same way) and adds as many to `total`, so
    consecutive pages repeat or skip a few photos. `recent_bias` crowds upload dates
    towards the end of UPLOAD_RANGE, as far more photos went up in later years: 0 spreads
    them evenly, 2 puts seven in eight in the later half.
    """

    def __init__(self, seed: int = 0, photos_per_tag: Mapping[str, int] | None = None,
                 default_photos: int = 1000, overlap: float = 0.0,
                 api_key: str | None = None, drift: int = 0, recent_bias: float = 0.0,
                 renditions: tuple[str, ...] = tuple(RENDITIONS), grain: float = 0.0) -> None:
        if drift < 0 or recent_bias < 0 or grain < 0:
            raise ValueError("drift, recent_bias and grain cannot be negative")
        if not renditions or set(renditions) - set(RENDITIONS):
            raise ValueError(f"renditions must be some of {', '.join(RENDITIONS)}")
        self.seed = seed
        # Flickr's tags are case-insensitive.
        self.photos_per_tag = {tag.lower(): n for tag, n in (photos_per_tag or {}).items()}
        self.default_photos = default_photos
        self.overlap = overlap
        self.api_key = api_key
        self.drift = drift
        self.recent_bias = recent_bias
        self.renditions = renditions
        self.grain = grain
        self._tags_of: dict[str, list[str]] = {}  # photo id -> its tags, its own first
        self._searches = 0  # search calls answered so far: what each one's drift is drawn by
        self._lock = threading.Lock()
        for tag in self.photos_per_tag:  # every record then lists all its tags from the start
            self._tag_photos(tag)

    def respond(self, params: Mapping[str, str], image_base_url: str,
                api_key: str | None = None) -> dict[str, Any]:
        if self.api_key is not None and api_key != self.api_key:
            return fail(100, "Invalid API Key (Key has invalid format)")
        method = params.get("method", "")
        if method == "flickr.photos.search":
            return self.search(params, image_base_url)
        if method == "flickr.photos.licenses.getInfo":
            return {"licenses": {"license": [
                {"id": id_, "name": name, "url": url} for id_, name, url in LICENSES
            ]}, "stat": "ok"}
        return fail(112, f'Method "{method}" not found')

    def search(self, params: Mapping[str, str], image_base_url: str) -> dict[str, Any]:
        named = [tag.strip().lower() for tag in params.get("tags", "").split(",")]
        tags = tuple(tag for tag in named if tag and not tag.startswith("-"))
        # "-cartoon": no photo carrying that tag, whichever of the wanted tags it has.
        excluded = tuple(sorted({tag[1:].strip() for tag in named
                                 if tag.startswith("-") and tag[1:].strip()}))
        if not tags:  # exclusions alone are no question to Flickr either
            return fail(3, "Parameterless searches have been disabled. "
                           "Please use flickr.photos.getRecent instead.")
        per_page = min(max(_int(params.get("per_page"), 100), 1), 500)
        page = max(_int(params.get("page"), 1), 1)
        kinds = {value.strip() for value in params.get("content_types", "").split(",")}
        content_types = tuple(kind for kind in CONTENT_TYPES if str(kind) in kinds)
        matches = self._matches(
            tags, params.get("tag_mode", "any"), params.get("license", ""),
            params.get("sort", "date-posted-desc"),
            _timestamp(params.get("min_upload_date")), _timestamp(params.get("max_upload_date")),
            excluded, content_types,
        )
        total = len(matches)
        offset = self._drift_offset()
        if not total:
            offset = 0  # an empty result stays empty: nothing to shift
        reachable = min(total, RESULT_CAP)
        pages = math.ceil((total + offset) / per_page) if total else 0
        start = max((page - 1) * per_page - offset, 0)
        if total > RESULT_CAP and start >= reachable:
            # Past the cap Flickr repeats earlier results while `total` keeps its promise.
            start %= reachable
        window = matches[start:min(start + per_page, reachable)]  # past the end: nothing
        extras = {extra.strip() for extra in params.get("extras", "").split(",")}
        return {"photos": {
            "page": page, "pages": pages, "perpage": per_page, "total": total + offset,
            "photo": [self.record(photo_id, image_base_url, extras) for photo_id in window],
        }, "stat": "ok"}

    def image(self, path: str) -> bytes | None:
        """The JPEG an image URL from a search answer points to, or None for a 404."""
        match = IMAGE_PATH.match(path)
        if not match:
            return None
        # The secret depends on the seed and the id alone, and the hue rides in the server
        # number: a restarted stand-in serves the same image whatever was searched before.
        facts = self._facts(match["id"])
        size_key = SUFFIX_TO_SIZE.get(match["suffix"] or "")
        hue = int(match["server"]) - HUE_SERVER
        if (match["secret"] != facts["secret"] or size_key not in self.renditions
                or not 0 <= hue < 256):
            return None
        width, height = _scaled(facts["width"], facts["height"], RENDITIONS[size_key][0])
        return render(match["id"], hue, width, height, self.grain)

    def troubled_image(self, path: str, fault: str) -> tuple[bytes, str] | None:
        """The image at `path` as one of Flickr's troublesome files (INTEGRITY_FAULTS):
        its bytes and content type, or None when the path names no image."""
        data = self.image(path)
        match = IMAGE_PATH.match(path)
        if data is None or match is None:
            return None
        with Image.open(io.BytesIO(data)) as image:
            picture = image.convert("RGB")
        hue = int(match["server"]) - HUE_SERVER
        if fault in ("duplicate", "near_duplicate"):
            # Every such photo of a class shows its class's one twin picture, at 4:3.
            longest = max(picture.size)
            twin = render(f"twin:{hue}", hue, longest, longest * 3 // 4)
            if fault == "duplicate":  # the same pixels, other bytes: a comment of its own
                return twin.replace(b"\xff\xd9", b"\xff\xfe\x00\x0e" + match["id"][:12]
                                    .encode().ljust(12) + b"\xff\xd9"), "image/jpeg"
            # Trimmed by 1% a side, scaled back and re-encoded harder, as a re-upload
            # would be: a pHash 0-4 bits from the twin's.
            image = Image.open(io.BytesIO(twin))
            trim = max(1, longest // 100)
            trimmed = image.crop((trim, trim, image.width - trim, image.height - trim))
            return _encoded(trimmed.resize(image.size), "JPEG", quality=60), "image/jpeg"
        if fault == "cmyk":
            return _encoded(picture.convert("CMYK"), "JPEG", quality=90), "image/jpeg"
        if fault == "rotated":
            # Stored on its side, with the EXIF orientation (6) that stands it upright.
            exif = Image.Exif()
            exif[0x0112] = 6
            return _encoded(picture.transpose(Image.Transpose.ROTATE_90), "JPEG",
                            exif=exif.tobytes()), "image/jpeg"
        if fault == "alpha_png":
            rgba = picture.convert("RGBA")
            rgba.putalpha(200)
            return _encoded(rgba, "PNG"), "image/png"
        if fault == "bomb":
            # 120 million pixels: above Pillow's limit, below twice it (where it only warns).
            return _png_header(12_000, 10_000), "image/png"
        if fault == "cached_placeholder":
            return placeholder(), "image/png"
        raise ValueError(f"unknown fault {fault!r}")

    def _drift_offset(self) -> int:
        """How many results this search call's page slid back by: 0..drift, by call number."""
        with self._lock:
            self._searches += 1
            call = self._searches
        if not self.drift:
            return 0
        return random.Random(f"{self.seed}:drift:{call}").randint(0, self.drift)

    def photo_ids(self, tag: str) -> list[str]:
        return list(self._tag_photos(tag))

    def _own_photos(self, tag: str) -> tuple[str, ...]:
        count = self.photos_per_tag.get(tag, self.default_photos)
        return tuple(_photo_id(self.seed, tag, index) for index in range(count))

    @lru_cache(maxsize=64)  # noqa: B019 - a universe lives as long as its server
    def _tag_photos(self, tag: str) -> tuple[str, ...]:
        own = self._own_photos(tag)
        borrowed: tuple[str, ...] = ()
        names = list(self.photos_per_tag)
        if self.overlap and tag in names and len(names) > 1:
            previous = names[names.index(tag) - 1]
            borrowed = tuple(photo_id for photo_id in self._own_photos(previous)
                             if _fraction(f"overlap:{photo_id}") < self.overlap)
        with self._lock:
            for photo_id in own:
                self._tags_of.setdefault(photo_id, [tag])
            for photo_id in borrowed:
                tags = self._tags_of.setdefault(photo_id, [previous])
                if tag not in tags:
                    tags.append(tag)
        return own + borrowed

    @lru_cache(maxsize=256)  # noqa: B019
    def _matches(self, tags: tuple[str, ...], mode: str, licenses: str, sort: str,
                 uploaded_from: int | None, uploaded_to: int | None,
                 excluded: tuple[str, ...] = (), content_types: tuple[int, ...] = ()) -> list[str]:
        """The ids a search finds, in its order; no `content_types` means every type."""
        per_tag = [set(self._tag_photos(tag)) for tag in tags]
        ids = set.intersection(*per_tag) if mode == "all" else set.union(*per_tag)
        for tag in excluded:
            # All the photos carrying the tag, borrowed ones included, worked out if need be.
            ids -= set(self._tag_photos(tag))
        wanted = {value.strip() for value in licenses.split(",") if value.strip()}
        ids = {
            photo_id for photo_id in ids
            if (not wanted or self._facts(photo_id)["license"] in wanted)
            and (not content_types or self._facts(photo_id)["content_type"] in content_types)
            and (uploaded_from is None or self._facts(photo_id)["dateupload"] >= uploaded_from)
            and (uploaded_to is None or self._facts(photo_id)["dateupload"] <= uploaded_to)
        }
        descending = sort.endswith("-desc")
        if sort.startswith("date-"):
            return sorted(ids, key=lambda i: (self._facts(i)["dateupload"], i),
                          reverse=descending)
        # Interestingness and relevance: an order of their own, the -asc one reversed.
        measure = sort.removesuffix("-desc").removesuffix("-asc")
        return sorted(ids, key=lambda i: hashlib.sha256(f"{measure}:{i}".encode()).digest(),
                      reverse=measure != "relevance" and not descending)

    @lru_cache(maxsize=200_000)  # noqa: B019
    def _facts(self, photo_id: str) -> dict[str, Any]:
        rng = random.Random(f"{self.seed}:{photo_id}")
        landscape = rng.random() < 0.7
        long_side = rng.choice((1024, 1600, 2048, 3000))
        short_side = int(long_side * rng.choice((0.5625, 0.667, 0.75, 1.0)))
        owner_number = rng.randrange(200)
        return {
            "secret": f"{rng.getrandbits(40):010x}",
            "width": long_side if landscape else short_side,
            "height": short_side if landscape else long_side,
            "license": str(rng.choice((0, 1, 2, 4, 4, 5, 9, 10))),
            "owner": f"{10_000_000 + owner_number}@N0{owner_number % 8}",
            "ownername": f"photographer {owner_number}",
            "dateupload": self._skewed(rng.randrange(*UPLOAD_RANGE)),
            "title": f"photo {photo_id[-4:]}",
            # Apart from the draws above, so that adding it changed no photo of any world.
            "content_type": _content_type(_fraction(f"{self.seed}:content:{photo_id}")),
        }

    def _skewed(self, uploaded: int) -> int:
        """An upload time drawn evenly over UPLOAD_RANGE, moved later as recent_bias says."""
        if not self.recent_bias:
            return uploaded
        low, high = UPLOAD_RANGE
        share = ((uploaded - low) / (high - low)) ** (1 / (1 + self.recent_bias))
        return min(low + int(share * (high - low)), high - 1)

    def _hue(self, tag: str) -> int:
        names = list(self.photos_per_tag)
        if tag in names:  # classes of one universe spread evenly round the colour wheel
            return names.index(tag) * 256 // len(names)
        return hashlib.sha256(tag.encode()).digest()[0]

    def record(self, photo_id: str, image_base_url: str, extras: set[str]) -> dict[str, Any]:
        """A search result as Flickr shapes it, with the `extras` asked for and no others."""
        facts = self._facts(photo_id)
        tags = self._tags_of.get(photo_id, [""])
        server = str(HUE_SERVER + self._hue(tags[0]))
        record: dict[str, Any] = {
            "id": photo_id, "owner": facts["owner"], "secret": facts["secret"],
            "server": server, "farm": 66, "title": facts["title"],
            "ispublic": 1, "isfriend": 0, "isfamily": 0,
        }
        # Flickr's own mix of string and number types, as in the real samples.
        optional = {
            "license": {"license": facts["license"]},
            "date_upload": {"dateupload": str(facts["dateupload"])},
            "owner_name": {"ownername": facts["ownername"]},
            "tags": {"tags": " ".join(tags)},
            "media": {"media": "photo", "media_status": "ready"},
        }
        for extra, fields in optional.items():
            if extra in extras:
                record.update(fields)
        for key, (longest, suffix) in RENDITIONS.items():
            if f"url_{key}" not in extras or key not in self.renditions:
                continue
            width, height = _scaled(facts["width"], facts["height"], longest)
            record[f"url_{key}"] = (
                f"{image_base_url}/{server}/{photo_id}_{facts['secret']}{suffix}.jpg"
            )
            record[f"height_{key}"] = height
            record[f"width_{key}"] = str(width) if key in ("m", "z") else width
        return record


def render(photo_id: str, hue: int, width: int, height: int, grain: float = 0.0) -> bytes:
    """A photo-like JPEG: a soft field in the class's hue, with shapes unique to the photo,
    and `grain` of that strength over it."""
    rng = random.Random(photo_id)
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
    if grain:
        image = _grainy(image, grain, rng.randrange(width * height))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _grainy(image: Image.Image, grain: float, offset: int) -> Image.Image:
    """The image with film grain: a fixed noise field, shifted by `offset` per photo."""
    noise = np.roll(_noise(image.width, image.height, grain), offset)
    pixels = np.asarray(image, dtype=np.int16) + noise.reshape(image.height, image.width, 1)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(0.6))


@lru_cache(maxsize=32)
def _noise(width: int, height: int, grain: float) -> np.ndarray:
    return np.random.default_rng(0).normal(0, grain, width * height).astype(np.int16)


@lru_cache(maxsize=1)
def placeholder() -> bytes:
    """Flickr's grey 'This photo is no longer available' image, more or less."""
    image = Image.new("RGB", (500, 374), (222, 222, 222))
    ImageDraw.Draw(image).text((150, 180), "This photo is no longer available", fill=(90, 90, 90))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@dataclass(frozen=True)
class Faults:
    """What breaks, and how often. Off by default.

    API errors strike calls at random (seeded); image faults strike photos, the same
    photos every time, as a deleted photo stays deleted.
    """

    api_error_rate: float = 0.0
    # Flickr's error codes, HTTP errors, and reset: the connection closed without an answer.
    api_errors: tuple[str, ...] = ("105", "201", "http500", "http429", "reset")
    image_fault_rate: float = 0.0
    # flaky: 503 to the first request; reset: the first answer breaks off mid-body.
    image_faults: tuple[str, ...] = (
        "404", "unavailable", "truncated", "not_image", "flaky", "reset",
    )  # or any of INTEGRITY_FAULTS
    slow_rate: float = 0.0  # share of answers (API or image) held back by slow_seconds
    slow_seconds: float = 0.0
    seed: int = 0

    def image_fault(self, photo_id: str) -> str | None:
        if _fraction(f"{self.seed}:fault:{photo_id}") >= self.image_fault_rate:
            return None
        return self.image_faults[int(_fraction(f"{self.seed}:kind:{photo_id}")
                                     * len(self.image_faults))]


class StandIn:
    """Serves a Universe on 127.0.0.1 until closed. Counts what it served."""

    def __init__(self, universe: Universe, api_delay: float = 0.0, image_delay: float = 0.0,
                 faults: Faults | None = None, port: int = 0,
                 image_base_url: str | None = None) -> None:
        self.universe = universe
        # Where search answers send image requests: here, unless another host serves them.
        self._image_base_url = image_base_url
        self.api_delay = api_delay  # seconds before each answer: a slow Flickr
        self.image_delay = image_delay
        self.faults = faults or Faults()
        self.api_calls: Counter[str] = Counter()
        # Every API call's parameters in arrival order, without the signature and transport
        # ones: for tests that check what a harvest asked, e.g. that a resume repeats no call.
        self.api_log: list[dict[str, str]] = []
        self.image_requests: Counter[str] = Counter()
        self.faults_served: Counter[str] = Counter()
        # Apart: API calls come one at a time, so their faults repeat run after run, while
        # which of the concurrent image answers are slow may vary.
        self._api_rng = random.Random(self.faults.seed)
        self._slow_rng = random.Random(self.faults.seed + 1)
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def image_base_url(self) -> str:
        return self._image_base_url or self.base_url

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

    def log_call(self, params: Mapping[str, str]) -> None:
        with self._lock:
            self.api_calls[params.get("method", "")] += 1
            self.api_log.append({key: value for key, value in params.items()
                                 if not key.startswith("oauth_") and key not in UNLOGGED})

    def api_fault(self) -> str | None:
        with self._lock:
            if self._api_rng.random() >= self.faults.api_error_rate:
                return None
            fault = self._api_rng.choice(self.faults.api_errors)
            self.faults_served[f"api {fault}"] += 1
            return fault

    def delay(self, fixed: float) -> None:
        """Wait `fixed` seconds, plus slow_seconds for the share of answers that are slow."""
        with self._lock:
            slow = self._slow_rng.random() < self.faults.slow_rate
            if slow:
                self.faults_served["slow"] += 1
        time.sleep(fixed + (self.faults.slow_seconds if slow else 0.0))


class _QuietServer(ThreadingHTTPServer):
    # Connections waiting to be accepted, at most (socketserver's default is 5). A harvest
    # opens one per download at once, together: with the queue full, Linux drops a new
    # connection's handshake and the client waits seconds to try it again.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a killed harvest) is expected, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(stand_in: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Flickr's servers do
        # Headers and body go out in two writes: without this, the body of a kept-alive
        # connection's answer waits for the client's delayed ACK (40 ms) of the headers.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/services/rest/":
                self._api(dict(parse_qsl(url.query)))
            elif url.path == PLACEHOLDER_PATH:
                self._send(200, placeholder(), "image/png")
            else:
                self._image(url.path)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._api(dict(parse_qsl(self.rfile.read(length).decode())))

        def _api(self, params: dict[str, str]) -> None:
            stand_in.log_call(params)
            stand_in.delay(stand_in.api_delay)
            fault = stand_in.api_fault()
            if fault == "reset":
                # Hang up without a word: the client sees the connection drop.
                self.close_connection = True
                return
            if fault in ("http500", "http429"):
                self._send(int(fault[4:]), b"<html>Flickr is having a moment</html>",
                           "text/html")
                return
            if fault:
                body: dict[str, Any] = fail(int(fault), "Service currently unavailable")
            else:
                key = CONSUMER_KEY.search(self.headers.get("Authorization", ""))
                api_key = key.group(1) if key else params.get("api_key")
                body = stand_in.universe.respond(params, stand_in.image_base_url, api_key)
            self._send(200, json.dumps(body).encode(), "application/json")

        def _image(self, path: str) -> None:
            match = IMAGE_PATH.match(path)
            photo_id = match["id"] if match else path
            stand_in.count(stand_in.image_requests, photo_id)
            stand_in.delay(stand_in.image_delay)
            data = stand_in.universe.image(path)
            fault = stand_in.faults.image_fault(photo_id) if data else None
            if fault in ("flaky", "reset") and stand_in.image_requests[photo_id] > 1:
                fault = None  # these pass: the next request for the photo works
            if fault:
                stand_in.count(stand_in.faults_served, f"image {fault}")
            if data is None or fault == "404":
                self._send(404, b"Not Found", "text/plain")
            elif fault == "unavailable":
                # What Flickr does for a deleted photo: a redirect to a placeholder, then 200.
                self.send_response(302)
                self.send_header("Location", stand_in.base_url + PLACEHOLDER_PATH)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif fault == "truncated":
                self._send(200, data[: len(data) // 2], "image/jpeg")
            elif fault == "not_image":
                self._send(200, b"<html><body>Service Unavailable</body></html>", "image/jpeg")
            elif fault == "flaky":
                self._send(503, b"Service Unavailable", "text/plain")
            elif fault in INTEGRITY_FAULTS:
                troubled = stand_in.universe.troubled_image(path, fault)
                assert troubled is not None  # data exists, so the path names an image
                self._send(200, *troubled)
            elif fault == "reset":
                # Promise the whole image, send half, hang up: a connection lost mid-body.
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
            else:
                self._send(200, data, "image/jpeg")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests and the demo read the counters instead

    return Handler


def _encoded(image: Image.Image, format: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` RGB pixels and holds a few bytes of them."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def _photo_id(seed: int, tag: str, index: int) -> str:
    digest = hashlib.sha256(f"{seed}:{tag}:{index}".encode()).digest()
    # 11 digits, like today's Flickr ids.
    return str(50_000_000_000 + int.from_bytes(digest[:6], "big") % 4_000_000_000)


def _fraction(key: str) -> float:
    """A stable number in [0, 1) for a key."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def _content_type(fraction: float) -> int:
    """Mostly photos, some screenshots, some other images."""
    return 0 if fraction < 0.9 else 1 if fraction < 0.95 else 2


def _timestamp(value: str | None) -> int | None:
    """Flickr takes upload dates as unix timestamps or MySQL datetimes."""
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())


def _scaled(width: int, height: int, longest: int) -> tuple[int, int]:
    if not longest:
        return width, height
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
