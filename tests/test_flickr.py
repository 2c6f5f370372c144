import json
from urllib.parse import parse_qsl

import pytest
import responses

from harvester.config import ClassSpec, FlickrSpec
from harvester.db import open_database, start_run
from harvester.flickr import (
    FlickrClient,
    FlickrRefused,
    FlickrUnavailable,
    parse_licenses,
    parse_search_page,
    pick_rendition,
)
from harvester.quota import Quota
from tests.conftest import REST_URL, fixture_response, form

FAST = FlickrSpec(retries=5, retry_backoff=0)
SUNSET = ClassSpec("sunset", 10, ("sunset",))
ALL_TIME = (0, 2_000_000_000)


def client(db=None) -> FlickrClient:
    """A client; with `db`, one that logs its calls there as a harvest does."""
    quota = Quota(db, start_run(db, "run", {}), calls_per_hour=3600) if db is not None else None
    return FlickrClient("key", "secret", FAST, rest_url=REST_URL, quota=quota)


def search_sunset(flickr: FlickrClient, page: int = 1):
    return flickr.search(SUNSET, ALL_TIME, page, 240)


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


def test_the_photo_page_is_recorded_for_attribution():
    first = parse_search_page(fixture_response("search_botany_per100_p1.json"), 240).photos[0]
    assert first.page_url == "https://www.flickr.com/photos/66243612@N06/53669978526"


def test_flickr_license_names_and_urls_are_read_from_getinfo():
    licenses = parse_licenses(fixture_response("licenses_getInfo.json"))
    by_id = {license.license_id: license for license in licenses}
    assert len(by_id) == 17 and set(by_id) == {str(number) for number in range(17)}
    assert by_id["4"].name == "CC BY 2.0"
    assert by_id["4"].url == "https://creativecommons.org/licenses/by/2.0/"
    assert by_id["9"].name == "Public Domain Dedication (CC0)"


def test_a_page_that_does_not_say_how_many_pages_there_are_leaves_that_unknown():
    body = {"photos": {"photo": [{"id": "1"}]}, "stat": "ok"}
    page = parse_search_page(body, 240)
    assert (page.page, page.pages, page.total) == (None, None, 0)


@responses.activate
def test_search_sends_the_documented_parameters():
    responses.post(REST_URL, json={"stat": "ok", **fixture_response("search_sunset_per10_p1.json")})
    page = search_sunset(client())
    assert len(page.photos) == 10
    body = responses.calls[0].request.body
    body = body.decode() if isinstance(body, bytes) else body
    params = dict(parse_qsl(body))
    assert params["method"] == "flickr.photos.search"
    assert params["tags"] == "sunset" and params["per_page"] == "500"
    assert params["media"] == "photos" and params["format"] == "json"
    assert params["content_types"] == "0"  # photos only: no screenshots
    assert (params["min_upload_date"], params["max_upload_date"]) == ("0", "2000000000")
    assert {"url_s", "url_m", "license", "owner_name", "date_upload", "tags"} <= set(
        params["extras"].split(","))
    # The key travels in the OAuth header, never in the body.
    assert "key" not in body and "secret" not in body


@responses.activate
def test_search_filters_reach_flickr_as_configured():
    responses.post(REST_URL, json={"stat": "ok", **fixture_response("search_sunset_per10_p1.json")})
    spec = FlickrSpec(license=(4, 9), sort="date-posted-desc", safe_search=2,
                      content_types=(0, 2), per_page=250, retry_backoff=0)
    cats = ClassSpec("cat", 10, ("cat", "kitten", "-cartoon"), tag_mode="all")
    FlickrClient("key", "secret", spec, rest_url=REST_URL).search(cats, (100, 200), 3, 240)
    params = form(responses.calls[0].request)
    assert (params["license"], params["sort"], params["safe_search"], params["content_types"],
            params["per_page"], params["page"], params["tags"], params["tag_mode"]) == (
        "4,9", "date-posted-desc", "2", "0,2", "250", "3", "cat,kitten,-cartoon", "all")
    assert (params["min_upload_date"], params["max_upload_date"]) == ("100", "200")


@responses.activate
def test_transient_errors_are_retried_until_flickr_answers():
    good = {"stat": "ok", **fixture_response("search_sunset_per10_p1.json")}
    responses.post(REST_URL, json={"stat": "fail", "code": 105, "message": "unavailable"})
    responses.post(REST_URL, status=502, body="bad gateway")
    responses.post(REST_URL, body="<html>busy</html>")
    responses.post(REST_URL, status=429, body="slow down")
    responses.post(REST_URL, json=good)
    db = open_database(None)
    page = search_sunset(client(db))
    assert len(page.photos) == 10
    assert len(responses.calls) == 5
    # Every try is a call against the quota, and logged as one.
    assert [(row["method"], row["failed"]) for row in db.query(
        "SELECT method, failed FROM api_calls ORDER BY call_id")] == [
        ("flickr.photos.search", 1)] * 4 + [("flickr.photos.search", 0)]


@responses.activate
def test_flickr_down_for_every_retry_stops_with_a_clear_error():
    responses.post(REST_URL, json={"stat": "fail", "code": 105, "message": "unavailable"})
    with pytest.raises(FlickrUnavailable, match="failed 6 times; last error: Error: 105"):
        search_sunset(client())
    assert len(responses.calls) == 6  # the first try and five retries, as the seed did


@responses.activate
def test_a_bad_key_fails_at_once_and_says_what_to_fix():
    responses.post(REST_URL, json={"stat": "fail", "code": 100, "message": "Invalid API Key"})
    with pytest.raises(FlickrRefused, match="check API_KEY and API_SECRET"):
        search_sunset(client())
    assert len(responses.calls) == 1


@responses.activate
def test_a_wrong_endpoint_fails_at_once_and_names_flickr_api_url():
    responses.post(REST_URL, status=404, body="not found")
    with pytest.raises(FlickrRefused, match=r"HTTP 404 .* check FLICKR_API_URL"):
        search_sunset(client())
    assert len(responses.calls) == 1


@pytest.mark.parametrize("body", [
    '{"stat": "fail", "message": "no code"}', "[1, 2]", '"just a string"', "null",
])
@responses.activate
def test_answers_of_unexpected_shapes_are_retried_then_reported(body):
    responses.post(REST_URL, body=body)
    with pytest.raises(FlickrUnavailable, match="failed 6 times"):
        search_sunset(client())
    assert len(responses.calls) == 6


@responses.activate
def test_a_page_of_the_wrong_shape_is_retried_then_reported():
    responses.post(REST_URL, body=json.dumps({"stat": "ok", "photos": "none"}))
    with pytest.raises(FlickrUnavailable, match="no photos list"):
        search_sunset(client())
    assert len(responses.calls) == 6
