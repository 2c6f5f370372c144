"""Shared fixtures: configs written as users write them, and a stand-in Flickr.

Flickr's REST API is mocked with `responses`: it is called from the test's own process.
Images are fetched by the harvest's worker processes, which `responses` cannot reach:
they are served from 127.0.0.1 by `ImageHost`, whose answers come from the test.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import responses
import yaml
from typer.testing import CliRunner

from harvester.cli import app
from harvester.config import Config, load_config
from harvester.pipeline import Credentials
from harvester.standin import IMAGE_PATH, Universe

FIXTURES = Path(__file__).parent / "fixtures" / "flickr"
REST_URL = "https://api.flickr.com/services/rest/"
CREDENTIALS = Credentials("test-key", "test-secret", REST_URL)


def fixture_response(name: str) -> dict[str, Any]:
    """The recorded body of a real Flickr answer in tests/fixtures/flickr."""
    return json.loads((FIXTURES / name).read_text())["response"]


def form(request: Any) -> dict[str, str]:
    """The form fields of a mocked POST (flickrapi sends bytes)."""
    body = request.body or ""
    return dict(parse_qsl(body.decode() if isinstance(body, bytes) else body))


ImageAnswer = tuple[int, dict[str, str], bytes]  # status, headers, body


class ImageHost:
    """One loopback HTTP server for the whole session; each test's answers under a prefix.

    `serve(answer)` gives a base URL: a GET of base + path is answered by `answer(path)`,
    in a thread of the test's process, so tests' hooks and counters work as they would
    in-process. A MockFlickr's answers are held weakly, so it and its universe are not
    kept for the rest of the session.
    """

    def __init__(self) -> None:
        self.answers: dict[str, Callable[[], Callable[[str], ImageAnswer] | None]] = {}
        self.numbers = itertools.count()
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Flickr's servers do
            # Headers and body go out in two writes: without this, the body of a kept-alive
            # connection's answer waits for the client's delayed ACK (40 ms) of the headers.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                _, prefix, path = self.path.split("/", 2)
                answer = host.answers.get(prefix, lambda: None)()
                status, headers, body = answer("/" + path) if answer else (404, {}, b"")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A worker that hangs up mid-answer (a run stopping) is expected here.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, answer: Callable[[str], ImageAnswer]) -> str:
        prefix = f"t{next(self.numbers)}"
        self.answers[prefix] = (weakref.WeakMethod(answer) if hasattr(answer, "__self__")
                                else lambda: answer)
        return f"http://127.0.0.1:{self.server.server_address[1]}/{prefix}"


_image_host: ImageHost | None = None


def image_host() -> ImageHost:
    global _image_host
    if _image_host is None:
        _image_host = ImageHost()
    return _image_host


def write_config(folder: Path, **sections: Any) -> Path:
    """A config.yaml in `folder` with fast test settings; `sections` replace top-level keys."""
    document: dict[str, Any] = {
        "output_dir": "outputs",
        "classes": [{"name": "cat", "count": 20}, {"name": "dog", "count": 10}],
        "train_test_split": {"seed": 42, "type": "absolute", "test_size": 3},
        "flickr": {"per_page": 25, "retry_backoff": 0},
        "download": {"workers": 4, "retry_backoff": 0, "retries": 1},
        "resize": {"workers": 1},
    }
    document.update(sections)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@contextmanager
def watchdog(seconds: int, what: str) -> Iterator[None]:
    """Fail with TimeoutError("`what`") if the block runs longer than `seconds`: a test
    for a hang ends, rather than hanging the suite."""

    def hung(*args: Any) -> None:
        raise TimeoutError(what)

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    def make(**sections: Any) -> Config:
        return load_config(write_config(tmp_path, **sections))

    return make


class MockFlickr:
    """Flickr's REST API (under `responses`) and image host (on `ImageHost`), answered by a
    stand-in Universe.

    Tests queue API faults and mark photos whose images fail, then read the counters.
    """

    def __init__(self, universe: Universe, mock: responses.RequestsMock) -> None:
        self.universe = universe
        self.api_calls: Counter[str] = Counter()
        self.image_requests: Counter[str] = Counter()
        self.api_faults: list[tuple[int, Any]] = []  # (status, body) answered before the universe
        self.image_faults: dict[str, tuple[int, bytes]] = {}  # photo id -> (status, body)
        self.api_log: list[dict[str, str]] = []  # every call's parameters, in order
        self.answers: list[dict[str, Any]] = []  # every search answer the universe gave
        self.on_api_call: Callable[[dict[str, str]], None] | None = None
        self.on_image_request: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        mock.add_callback(responses.POST, REST_URL, callback=self._api)
        self.image_base_url = image_host().serve(self._image)
        mock.add_passthru(self.image_base_url)  # a real server: this process may ask it too

    def fail_api(self, times: int, code: int | None = 105, status: int = 200) -> None:
        body = {"stat": "fail", "code": code, "message": "Service currently unavailable"}
        self.api_faults += [(status, body if code is not None else "error")] * times

    def _api(self, request: Any) -> tuple[int, dict[str, str], str]:
        params = form(request)
        with self._lock:
            self.api_log.append({key: value for key, value in params.items()
                                 if key not in ("format", "nojsoncallback")})
        if self.on_api_call:
            self.on_api_call(params)
        with self._lock:
            self.api_calls[params.get("method", "")] += 1
            fault = self.api_faults.pop(0) if self.api_faults else None
        if fault:
            status, body = fault
            return status, {}, body if isinstance(body, str) else json.dumps(body)
        answer = self.universe.respond(params, self.image_base_url)
        if params.get("method") == "flickr.photos.search":
            self.answers.append(answer)
        return 200, {}, json.dumps(answer)

    def _image(self, path: str) -> ImageAnswer:
        match = IMAGE_PATH.match(path)
        photo_id = match["id"] if match else path
        # The hook runs under the lock: requests answered at once (the workers' threads)
        # each see their own count, so a hook waiting for the 8th request sees exactly one.
        with self._lock:
            self.image_requests[photo_id] += 1
            if self.on_image_request:
                self.on_image_request(photo_id)
        if photo_id in self.image_faults:
            status, body = self.image_faults[photo_id]
            return status, {"Content-Type": "image/jpeg"}, body
        data = self.universe.image(path)
        if data is None:
            return 404, {}, b"Not Found"
        return 200, {"Content-Type": "image/jpeg"}, data


def dataset(output_dir: Path) -> dict[str, bytes]:
    """What a user gets: the split file and every image in it, byte for byte."""
    files = {"train_test_split.json": (output_dir / "train_test_split.json").read_bytes()}
    split = json.loads(files["train_test_split.json"])
    for path in split["train"] + split["test"]:
        files[path] = (output_dir / path).read_bytes()
    return files


KEYS = {"API_KEY": "test-key", "API_SECRET": "test-secret", "FLICKR_API_URL": REST_URL}


@pytest.fixture
def cli():
    """`harvester ...` as a user types it, with Flickr credentials pointing at the mock."""
    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None):
        return runner.invoke(app, list(args), env=KEYS if env is None else env)

    return invoke


@pytest.fixture
def universe() -> Universe:
    return Universe(seed=7, photos_per_tag={"cat": 400, "dog": 60, "puppy": 40})


@pytest.fixture
def flickr(universe: Universe) -> Iterator[MockFlickr]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield MockFlickr(universe, mock)
