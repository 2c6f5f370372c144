import json
from pathlib import Path

import pytest
import responses

from harvester import search
from harvester.config import load_config
from harvester.db import class_exhausted, open_database
from harvester.flickr import FlickrClient, FlickrUnavailable
from harvester.progress import Silent
from harvester.standin import Universe
from tests.conftest import REST_URL, MockFlickr, fixture_response, form, write_config


def botany_config(tmp_path: Path, count: int):
    return load_config(write_config(
        tmp_path,
        classes=[{"name": "botany", "count": count}],
        flickr={"per_page": 100, "retry_backoff": 0, "retries": 1},
    ))


def serve_botany_pages() -> None:
    """Pages 1 and 2 of a real search; Flickr's paging drift repeats 3 photos across them."""
    pages = {
        "1": fixture_response("search_botany_per100_p1.json"),
        "2": fixture_response("search_botany_per100_p2.json"),
    }

    def answer(request):
        page = form(request)["page"]
        if page not in pages:
            return 200, {}, '{"stat": "fail", "code": 105, "message": "unavailable"}'
        return 200, {}, json.dumps({"stat": "ok", **pages[page]})

    responses.add_callback(responses.POST, REST_URL, callback=answer)


def pages_requested() -> list[str]:
    return [form(call.request)["page"] for call in responses.calls]


def search_botany(tmp_path: Path, count: int, times: int = 1):
    """Search the recorded botany pages `times` over for a class of `count`; the database."""
    serve_botany_pages()
    config = botany_config(tmp_path, count=count)
    db = open_database(None)
    client = FlickrClient("k", "s", config.flickr, rest_url=REST_URL)
    for _ in range(times):
        search.fill(db, client, config, Silent())
    return db


@responses.activate
def test_search_pages_until_the_class_has_enough_and_dedupes_drift(tmp_path: Path):
    db = search_botany(tmp_path, count=150)
    assert pages_requested() == ["1", "2"]
    ids = [row["photo_id"] for row in db.query("SELECT photo_id FROM photos")]
    assert len(ids) == len(set(ids)) == 197  # 200 records, 3 of them seen twice
    cursor = next(db.query("SELECT * FROM search_cursors"))
    assert (cursor["next_page"], cursor["exhausted"]) == (3, 0)
    # Search order is kept: it decides which photos make the dataset.
    orders = [row["found_order"] for row in db.query(
        "SELECT found_order FROM photos ORDER BY found_order")]
    assert orders == sorted(set(orders))


@responses.activate
def test_search_asks_nothing_when_the_class_already_has_enough(tmp_path: Path):
    search_botany(tmp_path, count=50, times=2)
    assert pages_requested() == ["1"]


@responses.activate
def test_a_search_stopped_mid_class_resumes_at_the_next_page(tmp_path: Path):
    serve_botany_pages()
    config = botany_config(tmp_path, count=250)  # needs page 3, which keeps failing
    path = tmp_path / "harvest.db"
    client = FlickrClient("k", "s", config.flickr, rest_url=REST_URL)
    with pytest.raises(FlickrUnavailable):
        search.fill(open_database(path), client, config, Silent())
    assert pages_requested() == ["1", "2", "3", "3"]
    responses.calls.reset()
    with pytest.raises(FlickrUnavailable):
        search.fill(open_database(path), client, config, Silent())
    assert pages_requested() == ["3", "3"]  # pages 1 and 2 are never asked for again
    assert open_database(path).execute("SELECT count(*) FROM photos").fetchone()[0] == 197


@responses.activate
def test_search_stops_at_the_last_page_flickr_has(tmp_path: Path):
    body = fixture_response("search_sunset_per10_p1.json")
    body["photos"].update(page=1, pages=1, total=10)
    responses.post(REST_URL, json={"stat": "ok", **body})
    config = load_config(write_config(tmp_path, classes=[{"name": "sunset", "count": 50}]))
    db = open_database(None)
    search.fill(db, FlickrClient("k", "s", config.flickr, rest_url=REST_URL), config, Silent())
    search.fill(db, FlickrClient("k", "s", config.flickr, rest_url=REST_URL), config, Silent())
    assert len(responses.calls) == 1
    assert class_exhausted(db, config.classes[0])
    assert db.execute("SELECT count(*) FROM photos").fetchone()[0] == 10


def test_search_stops_at_flickrs_4000_result_cap(make_config):
    config = make_config(classes=[{"name": "cat", "count": 5000}],
                         flickr={"per_page": 500, "retry_backoff": 0})
    db = open_database(None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        flickr = MockFlickr(Universe(seed=1, photos_per_tag={"cat": 9000}), mock)
        client = FlickrClient("k", "s", config.flickr, rest_url=REST_URL)
        search.fill(db, client, config, Silent())
    assert flickr.api_calls["flickr.photos.search"] == 8  # pages 9 on would only repeat
    assert db.execute("SELECT count(*) FROM photos").fetchone()[0] == 4000
    assert class_exhausted(db, config.classes[0])


@responses.activate
def test_search_stops_when_flickr_answers_with_an_earlier_page(tmp_path: Path):
    body = fixture_response("search_botany_per100_p1.json")  # says page 1 whatever was asked
    responses.post(REST_URL, json={"stat": "ok", **body})
    db = search_botany_pages_as_given(tmp_path, count=500)
    assert pages_requested() == ["1", "2"]
    assert db.execute("SELECT count(*) FROM photos").fetchone()[0] == 100


def search_botany_pages_as_given(tmp_path: Path, count: int):
    config = botany_config(tmp_path, count=count)
    db = open_database(None)
    search.fill(db, FlickrClient("k", "s", config.flickr, rest_url=REST_URL), config, Silent())
    return db
