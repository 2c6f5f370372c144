import json
from urllib.parse import parse_qsl

import pytest
import responses

from harvester.config import FlickrSpec
from harvester.flickr import (
    FlickrClient,
    FlickrRefused,
    FlickrUnavailable,
    parse_search_page,
    pick_rendition,
)
from tests.conftest import REST_URL, fixture_response, form

FAST = FlickrSpec(retries=5, retry_backoff=0)


def client(calls: list | None = None) -> FlickrClient:
    record = (lambda method, failed: calls.append((method, failed))) if calls is not None else None
    return FlickrClient("key", "secret", FAST, rest_url=REST_URL, on_call=record)


def test_a_real_search_page_becomes_plain_records():
    page = parse_search_page(fixture_response("search_botany_per100_p1.json"), 240)
    assert (page.page, page.pages, page.total) == (1, 4175, 417456)
    assert len(page.photos) == 100 and page.malformed == 0
    first = page.photos[0]
    assert first.photo_id == "53669978526"
    assert first.owner == "66243612@N06" and first.owner_name == "Ben_Senior"
    assert first.license == "0" and first.title == "Pink"
    assert first.date_upload == 1713752579
    # The 240px rendition is the `url_s` extra.
    assert first.url == "https://live.staticflickr.com/65535/53669978526_5f6c3888bb_m.jpg"
    assert max(first.url_width, first.url_height) == 240


def test_the_smallest_rendition_reaching_the_longest_side_is_chosen():
    record = {"url_s": "s.jpg", "width_s": "240", "height_s": 180,
              "url_m": "m.jpg", "width_m": 500, "height_m": "375",
              "url_l": "l.jpg", "width_l": 1024, "height_l": 768}
    assert pick_rendition(record, 240) == ("s.jpg", 240, 180)
    assert pick_rendition(record, 241) == ("m.jpg", 500, 375)
    assert pick_rendition(record, 1024) == ("l.jpg", 1024, 768)
    assert pick_rendition(record, 2000) is None
    # A missing size falls through to the next larger one.
    del record["url_m"]
    assert pick_rendition(record, 300) == ("l.jpg", 1024, 768)


def test_malformed_photo_records_are_skipped_and_counted():
    usable = {"url_s": "a.jpg", "width_s": 240, "height_s": 100}
    body = {"photos": {"page": "1", "pages": "1", "total": "3", "photo": [
        {"id": "1", **usable}, {"id": 2, **usable}, {"title": "no id"}, "not a record",
        # Ids become file names: anything but digits could escape the output folder.
        {"id": "../../../escaped", **usable}, {"id": "12\x0034", **usable},
        {"id": "", **usable}, {"id": True, **usable}, {"id": "١٢٣", **usable}]}, "stat": "ok"}
    page = parse_search_page(body, 240)
    assert [photo.photo_id for photo in page.photos] == ["1", "2"]
    assert page.malformed == 7 and page.total == 3


def test_a_page_that_does_not_say_how_many_pages_there_are_leaves_that_unknown():
    body = {"photos": {"photo": [{"id": "1"}]}, "stat": "ok"}
    page = parse_search_page(body, 240)
    assert (page.page, page.pages, page.total) == (None, None, 0)


@responses.activate
def test_search_sends_the_documented_parameters():
    responses.post(REST_URL, json={"stat": "ok", **fixture_response("search_sunset_per10_p1.json")})
    page = client().search("sunset", 1, 240)
    assert len(page.photos) == 10
    body = responses.calls[0].request.body
    body = body.decode() if isinstance(body, bytes) else body
    params = dict(parse_qsl(body))
    assert params["method"] == "flickr.photos.search"
    assert params["tags"] == "sunset" and params["per_page"] == "500"
    assert params["media"] == "photos" and params["format"] == "json"
    assert {"url_s", "url_m", "license", "owner_name", "date_upload", "tags"} <= set(
        params["extras"].split(","))
    # The key travels in the OAuth header, never in the body.
    assert "key" not in body and "secret" not in body


@responses.activate
def test_search_filters_reach_flickr_as_configured():
    responses.post(REST_URL, json={"stat": "ok", **fixture_response("search_sunset_per10_p1.json")})
    spec = FlickrSpec(licenses=(4, 9), sort="date-posted-desc", safe_search=2, content_type=6,
                      per_page=250, retry_backoff=0)
    FlickrClient("key", "secret", spec, rest_url=REST_URL).search("sunset", 3, 240)
    params = form(responses.calls[0].request)
    assert (params["license"], params["sort"], params["safe_search"], params["content_type"],
            params["per_page"], params["page"], params["tag_mode"]) == (
        "4,9", "date-posted-desc", "2", "6", "250", "3", "any")


@responses.activate
def test_transient_errors_are_retried_until_flickr_answers():
    good = {"stat": "ok", **fixture_response("search_sunset_per10_p1.json")}
    responses.post(REST_URL, json={"stat": "fail", "code": 105, "message": "unavailable"})
    responses.post(REST_URL, status=502, body="bad gateway")
    responses.post(REST_URL, body="<html>busy</html>")
    responses.post(REST_URL, status=429, body="slow down")
    responses.post(REST_URL, json=good)
    calls: list = []
    page = client(calls).search("sunset", 1, 240)
    assert len(page.photos) == 10
    assert len(responses.calls) == 5
    assert calls == [("flickr.photos.search", True)] * 4 + [("flickr.photos.search", False)]


@responses.activate
def test_flickr_down_for_every_retry_stops_with_a_clear_error():
    responses.post(REST_URL, json={"stat": "fail", "code": 105, "message": "unavailable"})
    with pytest.raises(FlickrUnavailable, match="failed 6 times; last error: Error: 105"):
        client().search("sunset", 1, 240)
    assert len(responses.calls) == 6  # the first try and five retries, as the seed did


@responses.activate
def test_a_bad_key_fails_at_once_and_says_what_to_fix():
    responses.post(REST_URL, json={"stat": "fail", "code": 100, "message": "Invalid API Key"})
    with pytest.raises(FlickrRefused, match="check API_KEY and API_SECRET"):
        client().search("sunset", 1, 240)
    assert len(responses.calls) == 1


@responses.activate
def test_a_wrong_endpoint_fails_at_once_and_names_flickr_api_url():
    responses.post(REST_URL, status=404, body="not found")
    with pytest.raises(FlickrRefused, match=r"HTTP 404 .* check FLICKR_API_URL"):
        client().search("sunset", 1, 240)
    assert len(responses.calls) == 1


@pytest.mark.parametrize("body", [
    '{"stat": "fail", "message": "no code"}', "[1, 2]", '"just a string"', "null",
])
@responses.activate
def test_answers_of_unexpected_shapes_are_retried_then_reported(body):
    responses.post(REST_URL, body=body)
    with pytest.raises(FlickrUnavailable, match="failed 6 times"):
        client().search("sunset", 1, 240)
    assert len(responses.calls) == 6


@responses.activate
def test_a_page_of_the_wrong_shape_is_retried_then_reported():
    responses.post(REST_URL, body=json.dumps({"stat": "ok", "photos": "none"}))
    with pytest.raises(FlickrUnavailable, match="no photos list"):
        client().search("sunset", 1, 240)
    assert len(responses.calls) == 6
