"""Image downloads honour the environment's proxy and CA bundle settings, as requests does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import responses

from harvester import download
from harvester.config import DownloadSpec
from tests.images import jpeg

IMAGE_URL = "http://images.invalid/1000/1_abc_m.jpg"  # .invalid never resolves


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP proxy answering every GET with a JPEG: its URL, and the request
    targets it was asked for."""
    asked: list[str] = []
    body = jpeg()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)  # a proxy is asked for the absolute URL
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


def fetch(tmp_path):
    spec = DownloadSpec(retries=0)
    session = download.make_session(spec)
    outcome, _ = download.fetch_source(session, tmp_path, spec, "1", IMAGE_URL,
                                       ".sources/cat/1.jpg", attempt=1)
    return outcome


@pytest.mark.parametrize("no_proxy", [None, "localhost,example.com"])
def test_downloads_go_through_the_proxy_the_environment_names(
        tmp_path, monkeypatch, proxy, no_proxy):
    proxy_url, asked = proxy
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", proxy_url)
    if no_proxy:  # with NO_PROXY, each URL is judged against it: not this one
        monkeypatch.setenv("no_proxy", no_proxy)

    outcome = fetch(tmp_path)

    assert isinstance(outcome, download.Downloaded), outcome
    assert asked == [IMAGE_URL]
    assert (tmp_path / ".sources/cat/1.jpg").read_bytes() == jpeg()


def test_a_host_no_proxy_names_is_reached_directly(tmp_path, monkeypatch, proxy):
    proxy_url, asked = proxy
    monkeypatch.setenv("http_proxy", proxy_url)
    monkeypatch.setenv("no_proxy", "images.invalid")

    outcome = fetch(tmp_path)

    # Straight to images.invalid, which has no address: a failure that may pass.
    assert isinstance(outcome, download.DownloadFailed)
    assert (outcome.reason, outcome.transient) == ("connection_error", True)
    assert asked == []


@pytest.mark.parametrize("no_proxy", [None, "localhost"])
@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_ca_bundle_the_environment_names_checks_image_hosts(
        tmp_path, monkeypatch, variable, no_proxy):
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    bundle = tmp_path / "corporate-ca.pem"
    monkeypatch.setenv(variable, str(bundle))
    if no_proxy:
        monkeypatch.setenv("no_proxy", no_proxy)

    assert download.make_session(DownloadSpec()).verify == str(bundle)


@responses.activate
def test_each_download_sends_the_session_headers_and_only_its_own_url_credentials(tmp_path):
    # Every download's request is a copy of one prepared GET: a URL's user and password
    # must go with that download alone.
    body = jpeg()
    urls = {"1": "http://user:secret@images.invalid/1_a_m.jpg",
            "2": "http://images.invalid/2_b_m.jpg"}
    for url in urls.values():
        responses.get(url, body=body, content_type="image/jpeg")
    spec = DownloadSpec(retries=0)
    session = download.make_session(spec)

    for photo_id, url in urls.items():
        outcome, _ = download.fetch_source(session, tmp_path, spec, photo_id, url,
                                           f".sources/cat/{photo_id}.jpg", attempt=1)
        assert isinstance(outcome, download.Downloaded), outcome

    first, second = (call.request for call in responses.calls)
    assert first.headers["Authorization"] == "Basic dXNlcjpzZWNyZXQ="  # user:secret
    assert "Authorization" not in second.headers
    assert (first.url, second.url) == (urls["1"], urls["2"])
    assert {first.headers["User-Agent"], second.headers["User-Agent"]} == {
        session.headers["User-Agent"]}
