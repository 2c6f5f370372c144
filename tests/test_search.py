import itertools
import json
from pathlib import Path

import pytest
import responses

from harvester import search
from harvester.config import load_config
from harvester.db import class_exhausted, open_database, start_run
from harvester.flickr import FlickrClient, FlickrUnavailable
from harvester.progress import Silent
from harvester.quota import Quota
from harvester.standin import Universe
from tests.conftest import REST_URL, MockFlickr, fixture_response, form, write_config

LICENSES = {"stat": "ok", **fixture_response("licenses_getInfo.json")}
# A fixed upload-date range: windows, and so the calls, are the same in every run.
RANGE = {"min_upload_date": "2005-01-01", "max_upload_date": "2024-12-31"}


def botany_config(tmp_path: Path, count: int):
    return load_config(write_config(
        tmp_path,
        classes=[{"name": "botany", "count": count}],
        flickr={"per_page": 100, "retry_backoff": 0, "retries": 1},
    ))


def serve_botany_pages(total: int = 300) -> None:
    """Pages 1 and 2 of a real search; Flickr's paging drift repeats 3 photos across them.

    `total` stands in for Flickr's count, so the query fits under the 4,000 cap.
    """
    pages = {
        "1": fixture_response("search_botany_per100_p1.json"),
        "2": fixture_response("search_botany_per100_p2.json"),
    }

    def answer(request):
        params = form(request)
        if params["method"] == "flickr.photos.licenses.getInfo":
            return 200, {}, json.dumps(LICENSES)
        page = params["page"]
        if page not in pages:
            return 200, {}, '{"stat": "fail", "code": 105, "message": "unavailable"}'
        body = json.loads(json.dumps(pages[page]))
        body["photos"].update(total=total, pages=-(-total // 100))
        return 200, {}, json.dumps({"stat": "ok", **body})

    responses.add_callback(responses.POST, REST_URL, callback=answer)


def pages_requested() -> list[str]:
    return [form(call.request)["page"] for call in responses.calls
            if form(call.request)["method"] == "flickr.photos.search"]


def search_botany(tmp_path: Path, count: int, times: int = 1):
    """Search the recorded botany pages `times` over for a class of `count`; the database."""
    serve_botany_pages()
    config = botany_config(tmp_path, count=count)
    db = open_database(None)
    client = FlickrClient("k", "s", config.flickr, rest_url=REST_URL)
    for _ in range(times):
        search.fill(db, client, config, Silent())
    return db


def searches(flickr: MockFlickr) -> list[dict[str, str]]:
    return [params for params in flickr.api_log if params["method"] == "flickr.photos.search"]


@responses.activate
def test_search_pages_until_the_class_has_enough_and_dedupes_drift(tmp_path: Path):
    db = search_botany(tmp_path, count=150)
    assert pages_requested() == ["1", "2"]
    ids = [row["photo_id"] for row in db.query("SELECT photo_id FROM photos")]
    assert len(ids) == len(set(ids)) == 197  # 200 records, 3 of them seen twice
    window = next(db.query("SELECT * FROM search_windows"))
    assert (window["next_page"], window["state"], window["total"]) == (3, "open", 300)
    # Search order is kept: it decides which photos make the dataset.
    orders = [row["found_order"] for row in db.query(
        "SELECT found_order FROM photos ORDER BY found_order")]
    assert orders == sorted(set(orders))


@responses.activate
def test_search_asks_nothing_when_the_class_already_has_enough(tmp_path: Path):
    search_botany(tmp_path, count=50, times=2)
    assert pages_requested() == ["1"]


@responses.activate
def test_license_names_are_asked_once_per_harvest(tmp_path: Path):
    serve_botany_pages()
    db = open_database(None)
    for count in (50, 150):  # two searches, each needing a page
        config = botany_config(tmp_path, count=count)
        search.fill(db, FlickrClient("k", "s", config.flickr, rest_url=REST_URL), config,
                    Silent())
    assert pages_requested() == ["1", "2"]
    methods = [form(call.request)["method"] for call in responses.calls]
    assert methods.count("flickr.photos.licenses.getInfo") == 1
    names = dict(db.execute("SELECT license_id, name FROM licenses").fetchall())
    assert names["4"] == "CC BY 2.0" and len(names) == 17


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
    db["licenses"].insert({"license_id": "4", "name": "CC BY 2.0"})  # known already
    search.fill(db, FlickrClient("k", "s", config.flickr, rest_url=REST_URL), config, Silent())
    search.fill(db, FlickrClient("k", "s", config.flickr, rest_url=REST_URL), config, Silent())
    assert len(responses.calls) == 1
    assert class_exhausted(db, config.classes[0])
    assert db.execute("SELECT count(*) FROM photos").fetchone()[0] == 10


@responses.activate
def test_search_stops_when_flickr_answers_with_an_earlier_page(tmp_path: Path):
    page_one = fixture_response("search_botany_per100_p1.json")  # whatever page was asked

    def answer(request):
        if form(request)["method"] == "flickr.photos.licenses.getInfo":
            return 200, {}, json.dumps(LICENSES)
        return 200, {}, json.dumps({"stat": "ok", **page_one})

    responses.add_callback(responses.POST, REST_URL, callback=answer)
    config = load_config(write_config(
        tmp_path, classes=[{"name": "botany", "count": 500}],
        flickr={"per_page": 100, "retry_backoff": 0,
                # One second: a window that cannot be cut any smaller, however many it holds.
                "min_upload_date": 1713752579, "max_upload_date": 1713752579},
    ))
    db = open_database(None)
    search.fill(db, FlickrClient("k", "s", config.flickr, rest_url=REST_URL), config, Silent())
    assert pages_requested() == ["1", "2"]
    assert db.execute("SELECT count(*) FROM photos").fetchone()[0] == 100
    assert class_exhausted(db, config.classes[0])


def search_universe(make_config, universe: Universe, count: int, per_page: int = 500):
    """Search a class `cat` of `count` in `universe` (through `responses`); db and mock."""
    config = make_config(classes=[{"name": "cat", "count": count}],
                         flickr={"per_page": per_page, "retry_backoff": 0, **RANGE})
    db = open_database(None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        flickr = MockFlickr(universe, mock)
        search.fill(db, FlickrClient("k", "s", config.flickr, rest_url=REST_URL), config,
                    Silent())
    return config, db, flickr


def test_a_query_past_the_4000_cap_is_cut_into_upload_date_windows_that_fit(make_config):
    """9,000 distinct photos of one tag, each found once, at close to the fewest calls."""
    universe = Universe(seed=1, photos_per_tag={"cat": 20_000}, recent_bias=1.0)
    _, db, flickr = search_universe(make_config, universe, count=9000)
    found = db.execute("SELECT count(*), count(DISTINCT photo_id) FROM photos").fetchone()
    assert found[0] == found[1] >= 9000
    calls = searches(flickr)
    # The floor is one call per 500 photos found; uneven uploads cost a few windows more.
    assert len(calls) <= 1.25 * found[0] / 500
    # Every window asked for held no more than Flickr serves: no page past the cap.
    assert all(int(params["page"]) * 500 <= 4000 for params in calls)
    windows = list(db.query("SELECT * FROM search_windows WHERE state != 'split'"))
    assert all(window["total"] is None or window["total"] <= 4000 for window in windows)
    spans = sorted((w["uploaded_from"], w["uploaded_to"]) for w in windows)
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(spans)), "gaps"


def test_a_class_with_every_window_walked_is_exhausted_with_all_flickr_has(make_config):
    universe = Universe(seed=3, photos_per_tag={"cat": 9000})
    config, db, _ = search_universe(make_config, universe, count=50_000)
    photos_only = universe.respond({"method": "flickr.photos.search", "tags": "cat",
                                    "content_types": "0"}, "")["photos"]["total"]
    assert db.execute("SELECT count(DISTINCT photo_id) FROM photos").fetchone()[0] == photos_only
    assert class_exhausted(db, config.classes[0])


def test_with_paging_drift_every_photo_is_recorded_once(make_config):
    universe = Universe(seed=2, photos_per_tag={"cat": 6000}, drift=15)
    _, db, flickr = search_universe(make_config, universe, count=3000, per_page=100)
    returned = [photo["id"] for answer in flickr.answers for photo in answer["photos"]["photo"]]
    assert len(returned) > len(set(returned))  # drift did repeat photos across pages
    total, distinct = db.execute(
        "SELECT count(*), count(DISTINCT photo_id) FROM photos").fetchone()
    assert total == distinct >= 3000


def test_a_resumed_search_makes_no_call_it_already_made(make_config, tmp_path: Path):
    config = make_config(classes=[{"name": "cat", "count": 9000}],
                         flickr={"per_page": 500, "retry_backoff": 0, "retries": 0, **RANGE})
    path = tmp_path / "harvest.db"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        flickr = MockFlickr(Universe(seed=1, photos_per_tag={"cat": 20_000}), mock)
        client = FlickrClient("k", "s", config.flickr, rest_url=REST_URL)

        def die_on_the_seventh_call(params):
            if len(flickr.api_log) == 7:
                raise KeyboardInterrupt  # mid-window: the seventh answer never arrives

        flickr.on_api_call = die_on_the_seventh_call
        with pytest.raises(KeyboardInterrupt):
            search.fill(open_database(path), client, config, Silent())
        flickr.on_api_call = None
        before = [json.dumps(params, sort_keys=True) for params in flickr.api_log]
        search.fill(open_database(path), client, config, Silent())
        after = [json.dumps(params, sort_keys=True) for params in flickr.api_log[7:]]
    assert len(before) == 7
    repeated = [call for call in after if call in before]
    assert repeated == [before[-1]]  # only the call in flight when the search died
    assert open_database(path).execute("SELECT count(*) FROM photos").fetchone()[0] >= 9000


def test_calls_count_against_a_quota_that_survives_restarts(tmp_path: Path):
    now = [1_000_000.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    db = open_database(tmp_path / "harvest.db")
    first = Quota(db, start_run(db, "run", {}), calls_per_hour=3, clock=lambda: now[0],
                  sleep=sleep)
    for _ in range(2):
        first.spend("flickr.photos.search")
        now[0] += 60
    db.close()
    # A new run, a minute later: one call left in this hour, then a wait until the
    # first call is an hour old.
    db = open_database(tmp_path / "harvest.db")
    second = Quota(db, start_run(db, "resume", {}), calls_per_hour=3, clock=lambda: now[0],
                   sleep=sleep)
    second.spend("flickr.photos.search")
    assert waits == []
    second.spend("flickr.photos.search")
    assert waits == [3600 - 120]
    assert db.execute("SELECT count(*) FROM api_calls").fetchone()[0] == 4


class BulkImport(Universe):
    """85% of the photos uploaded in one second, as a bulk import can be."""

    def _skewed(self, uploaded: int) -> int:
        return 1_400_000_000 if uploaded % 100 < 85 else uploaded


@pytest.mark.parametrize("sort", ["relevance", "interestingness-desc", "date-posted-desc"])
def test_a_crowded_upload_second_is_walked_alone_and_the_rest_around_it(make_config, sort):
    config = make_config(classes=[{"name": "cat", "count": 100_000}],
                         flickr={"per_page": 500, "retry_backoff": 0, "sort": sort, **RANGE})
    db = open_database(None)
    universe = BulkImport(seed=1, photos_per_tag={"cat": 5000})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        flickr = MockFlickr(universe, mock)
        for _ in range(2):  # and again, as a resume: nothing left to ask
            search.fill(db, FlickrClient("k", "s", config.flickr, rest_url=REST_URL), config,
                        Silent())
    every = universe.respond({"method": "flickr.photos.search", "tags": "cat",
                              "content_types": "0"}, "")["photos"]["total"]
    assert db.execute("SELECT count(*) FROM photos").fetchone()[0] == every
    assert class_exhausted(db, config.classes[0])
    calls = searches(flickr)
    assert all(int(p["min_upload_date"]) <= int(p["max_upload_date"]) for p in calls)
    assert len(calls) <= 2 * every / 500  # the crowded second costs a few calls, not dozens
