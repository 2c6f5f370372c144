"""The offline Flickr stand-in behaves like the parts of Flickr harvester relies on."""

from __future__ import annotations

import io
import itertools
import math
from datetime import UTC, datetime

import pytest
import requests
from PIL import Image

from harvester.flickr import EXTRAS
from harvester.standin import RESULT_CAP, UPLOAD_RANGE, Faults, StandIn, Universe
from tests.conftest import fixture_response

BASE = "http://127.0.0.1:1"


def search(universe: Universe, **params: str) -> dict:
    """A search with the extras harvester asks for, unless `params` say otherwise."""
    return universe.respond({"method": "flickr.photos.search", "extras": EXTRAS, **params}, BASE)


def ids(answer: dict) -> list[str]:
    return [photo["id"] for photo in answer["photos"]["photo"]]


def every_page(universe: Universe, **params: str) -> tuple[list[str], set[int]]:
    """The ids of pages 1, 2... up to the last page the answers promise, and their totals."""
    found: list[str] = []
    totals: set[int] = set()
    page = 1
    while True:
        answer = search(universe, page=str(page), **params)["photos"]
        found += [photo["id"] for photo in answer["photo"]]
        totals.add(answer["total"])
        if page >= answer["pages"]:
            return found, totals
        page += 1


def test_search_answers_in_the_shape_of_real_flickr():
    answer = search(Universe(seed=1, photos_per_tag={"cat": 30}), tags="cat", per_page="10")
    real = fixture_response("search_sunset_per10_p1.json")
    assert answer["stat"] == "ok"
    assert set(answer["photos"]) == set(real["photos"])
    photo = answer["photos"]["photo"][0]
    for key in ("id", "owner", "secret", "server", "title", "license", "dateupload",
                "ownername", "tags", "url_s", "height_s", "width_s", "url_m", "url_o"):
        assert key in photo, key
    bare = search(Universe(seed=1, photos_per_tag={"cat": 30}), tags="cat", extras="url_s")
    assert set(bare["photos"]["photo"][0]) == {
        "id", "owner", "secret", "server", "farm", "title", "ispublic", "isfriend", "isfamily",
        "url_s", "height_s", "width_s"}
    assert (answer["photos"]["total"], answer["photos"]["pages"]) == (30, 3)


def test_tags_are_case_insensitive_and_sorts_are_orders():
    universe = Universe(seed=1, photos_per_tag={"Cat": 80})
    assert ids(search(universe, tags="CAT", per_page="100")) == ids(
        search(universe, tags="cat", per_page="100"))
    for order in ("date-posted", "interestingness"):
        ascending = ids(search(universe, tags="cat", per_page="100", sort=f"{order}-asc"))
        assert ascending[::-1] == ids(
            search(universe, tags="cat", per_page="100", sort=f"{order}-desc"))


def test_a_restarted_stand_in_serves_an_image_without_the_search_that_named_it():
    photo = search(Universe(seed=5, photos_per_tag={"cat": 5}), tags="cat")["photos"]["photo"][0]
    fresh = Universe(seed=5)  # knows no tags yet
    assert fresh.image(photo["url_s"].removeprefix(BASE)) is not None


def test_the_same_seed_makes_the_same_world_and_another_seed_another():
    first = ids(search(Universe(seed=1, photos_per_tag={"cat": 50}), tags="cat"))
    assert first == ids(search(Universe(seed=1, photos_per_tag={"cat": 50}), tags="cat"))
    assert first != ids(search(Universe(seed=2, photos_per_tag={"cat": 50}), tags="cat"))


def test_pages_past_the_4000_cap_repeat_earlier_photos_while_total_keeps_its_promise():
    universe = Universe(seed=1, photos_per_tag={"cat": 9000})
    last_reachable = search(universe, tags="cat", per_page="500", page="8")
    past_the_cap = search(universe, tags="cat", per_page="500", page="9")
    assert past_the_cap["photos"]["total"] == 9000 and past_the_cap["photos"]["pages"] == 18
    seen = set()
    for page in range(1, 9):
        seen |= set(ids(search(universe, tags="cat", per_page="500", page=str(page))))
    assert len(seen) == RESULT_CAP and len(ids(last_reachable)) == 500
    assert len(ids(past_the_cap)) == 500 and set(ids(past_the_cap)) <= seen


def test_pages_past_the_end_of_a_small_result_are_empty():
    universe = Universe(seed=1, photos_per_tag={"cat": 150})
    assert len(ids(search(universe, tags="cat", per_page="100", page="2"))) == 50
    assert ids(search(universe, tags="cat", per_page="100", page="3")) == []


def test_each_upload_date_window_has_its_own_cap():
    universe = Universe(seed=1, photos_per_tag={"cat": 20000})

    def reachable(**window: str) -> tuple[int, dict[str, int]]:
        uploaded: dict[str, int] = {}
        for page in range(1, 11):  # two pages past the cap
            answer = search(universe, tags="cat", per_page="500", page=str(page), **window)
            uploaded |= {p["id"]: int(p["dateupload"]) for p in answer["photos"]["photo"]}
        return answer["photos"]["total"], uploaded

    early_total, early = reachable(max_upload_date="2014-12-31 23:59:59")
    late_total, late = reachable(min_upload_date="1420070400")  # 2015-01-01 as unix time
    assert early_total > RESULT_CAP and late_total > RESULT_CAP
    assert len(early) == len(late) == RESULT_CAP
    assert not early.keys() & late.keys()  # two windows reach 8,000 where one query reaches 4,000
    assert max(early.values()) < 1420070400 <= min(late.values())


def test_tag_mode_all_and_any_and_photos_with_two_class_tags():
    universe = Universe(seed=1, photos_per_tag={"cat": 100, "dog": 100}, overlap=0.2)
    both = search(universe, tags="cat,dog", tag_mode="all", per_page="500")
    either = search(universe, tags="cat,dog", tag_mode="any", per_page="500")
    assert 20 < both["photos"]["total"] < 60
    assert either["photos"]["total"] == 200  # each photo once, shared ones included
    assert all(set(photo["tags"].split()) == {"cat", "dog"} for photo in both["photos"]["photo"])


def test_the_license_filter_keeps_only_those_licenses():
    answer = search(Universe(seed=1, photos_per_tag={"cat": 300}), tags="cat", license="4,9",
                    per_page="500")
    assert {photo["license"] for photo in answer["photos"]["photo"]} == {"4", "9"}


def test_errors_come_as_flickr_gives_them():
    universe = Universe(seed=1, photos_per_tag={"cat": 10}, api_key="good")
    assert universe.respond({"method": "flickr.photos.search", "tags": "cat"}, BASE, "bad") == {
        "stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"}
    parameterless = universe.respond({"method": "flickr.photos.search"}, BASE, "good")
    assert (parameterless["stat"], parameterless["code"]) == ("fail", 3)
    licenses = universe.respond({"method": "flickr.photos.licenses.getInfo"}, BASE, "good")
    assert licenses["licenses"]["license"][4] == {
        "id": 4, "name": "CC BY 2.0", "url": "https://creativecommons.org/licenses/by/2.0/"}


def test_images_come_at_the_size_of_the_rendition_asked_for():
    universe = Universe(seed=1, photos_per_tag={"cat": 5})
    photo = search(universe, tags="cat")["photos"]["photo"][0]
    for size in ("s", "m", "l"):
        path = photo[f"url_{size}"].removeprefix(BASE)
        with Image.open(io.BytesIO(universe.image(path))) as image:
            assert image.size == (int(photo[f"width_{size}"]), int(photo[f"height_{size}"]))
    assert universe.image("/1/123_abc_m.jpg") is None


def test_the_server_injects_every_fault_and_counts_what_it_served():
    universe = Universe(seed=1, photos_per_tag={"cat": 400})
    faults = Faults(api_error_rate=0.5, image_fault_rate=1.0, seed=3)
    with StandIn(universe, faults=faults) as server:
        answers, resets = [], 0
        for _ in range(30):
            try:
                answers.append(requests.post(server.rest_url, data={
                    "method": "flickr.photos.search", "tags": "cat", "per_page": "100",
                    "extras": EXTRAS, "format": "json", "nojsoncallback": "1"}, timeout=5))
            except requests.ConnectionError:
                resets += 1
        page = next(answer.json() for answer in answers
                    if answer.status_code == 200 and answer.json()["stat"] == "ok")
        kinds: dict = {}
        for photo in page["photos"]["photo"]:
            try:
                response = requests.get(photo["url_s"], timeout=5)
            except requests.exceptions.ChunkedEncodingError as error:
                response = error
            kinds.setdefault(faults.image_fault(photo["id"]), (photo["url_s"], response))
        assert server.api_calls["flickr.photos.search"] == 30
        assert resets == server.faults_served["api reset"] > 0
        assert server.image_requests.total() == 100
        # The passing faults pass: a second request for the same photo works.
        for kind in ("flaky", "reset"):
            assert requests.get(kinds[kind][0], timeout=5).status_code == 200
        kinds = {kind: response for kind, (_, response) in kinds.items()}
    assert {answer.status_code for answer in answers} == {200, 500, 429}
    assert {answer.json().get("code") for answer in answers if answer.status_code == 200} == {
        None, 105, 201}
    assert kinds["404"].status_code == 404
    assert kinds["unavailable"].history[0].status_code == 302
    assert kinds["unavailable"].url.endswith("photo_unavailable.png")
    assert kinds["unavailable"].status_code == 200
    assert kinds["not_image"].content.startswith(b"<html>")
    truncated = kinds["truncated"].content
    assert truncated.startswith(b"\xff\xd8") and not truncated.endswith(b"\xff\xd9")
    assert kinds["flaky"].status_code == 503
    assert isinstance(kinds["reset"], requests.exceptions.ChunkedEncodingError)


def test_excluded_tags_leave_out_every_photo_carrying_them():
    # cat's photos also carry dog, dog's bird and bird's cat, a share of each.
    universe = Universe(seed=1, photos_per_tag={"cat": 100, "dog": 100, "bird": 100}, overlap=0.3)
    # Asked first, before dog was ever searched for.
    no_dog = search(universe, tags="cat,-DOG", per_page="500")["photos"]
    cat = search(universe, tags="cat", per_page="500")["photos"]
    cat_and_dog = search(universe, tags="cat,dog", tag_mode="all", per_page="500")["photos"]
    assert cat_and_dog["total"] > 10
    assert no_dog["total"] == cat["total"] - cat_and_dog["total"]
    assert all("dog" not in photo["tags"].split() for photo in no_dog["photo"])
    # Records list all their tags, their own first: borrowed ones from either side.
    cat_tags = {photo["tags"] for photo in cat["photo"]}
    assert {"cat", "cat dog", "bird cat"} <= cat_tags
    pair_without_bird = search(universe, tags="cat,dog,-bird", tag_mode="all", per_page="500")
    assert pair_without_bird["photos"]["total"] > 0
    assert all(photo["tags"] == "cat dog" for photo in pair_without_bird["photos"]["photo"])
    assert ids(search(universe, tags="cat,-zebra", per_page="500")) == ids(
        search(universe, tags="cat", per_page="500"))
    for only_excluded in ("-dog", "-dog,-cat", "-", " -dog, ,"):
        answer = search(universe, tags=only_excluded)
        assert (answer["stat"], answer["code"]) == ("fail", 3)


def test_drifting_pages_repeat_photos_and_their_totals_vary():
    drifting, totals = every_page(Universe(seed=1, photos_per_tag={"cat": 1000}, drift=30),
                                  tags="cat", per_page="100")
    assert len(drifting) > len(set(drifting))  # some photos on two pages
    assert len(totals) > 1 and all(1000 <= total <= 1030 for total in totals)
    # The same calls drift the same way.
    assert every_page(Universe(seed=1, photos_per_tag={"cat": 1000}, drift=30),
                      tags="cat", per_page="100") == (drifting, totals)
    steady, totals = every_page(Universe(seed=1, photos_per_tag={"cat": 1000}),
                                tags="cat", per_page="100")
    assert len(steady) == len(set(steady)) == 1000 and totals == {1000}


def test_content_types_keep_only_those_kinds():
    universe = Universe(seed=1, photos_per_tag={"cat": 1000})
    everything, _ = every_page(universe, tags="cat", per_page="500")
    photos, _ = every_page(universe, tags="cat", per_page="500", content_types="0")
    screenshots, _ = every_page(universe, tags="cat", per_page="500", content_types="1")
    others, _ = every_page(universe, tags="cat", per_page="500", content_types="2")
    assert 850 < len(photos) < 950 and screenshots and others
    assert not set(screenshots) & set(photos)
    assert sorted(photos + screenshots + others) == sorted(everything)
    assert sorted(every_page(universe, tags="cat", per_page="500", content_types="0,1,2")[0]) == (
        sorted(everything))
    assert search(universe, tags="cat", content_types="3")["photos"]["total"] == 0


def test_the_thumbnail_rendition_is_served_at_100_pixels():
    universe = Universe(seed=1, photos_per_tag={"cat": 3})
    with StandIn(universe) as server:
        answer = requests.get(server.rest_url, params={
            "method": "flickr.photos.search", "tags": "cat", "extras": "url_t,url_s"}, timeout=5)
        photo = answer.json()["photos"]["photo"][0]
        assert photo["url_t"].endswith("_t.jpg") and "url_s" in photo
        image = requests.get(photo["url_t"], timeout=5)
    assert image.status_code == 200
    with Image.open(io.BytesIO(image.content)) as thumbnail:
        assert thumbnail.size == (photo["width_t"], photo["height_t"])
        assert max(thumbnail.size) == 100


def test_the_reset_api_fault_hangs_up_without_an_answer():
    universe = Universe(seed=1, photos_per_tag={"cat": 3})
    with StandIn(universe, faults=Faults(api_error_rate=1.0, api_errors=("reset",))) as server:
        with pytest.raises(requests.ConnectionError):
            requests.post(server.rest_url, data={"method": "flickr.photos.search", "tags": "cat"},
                          timeout=5)
        assert server.faults_served["api reset"] == 1
        assert server.api_log == [{"method": "flickr.photos.search", "tags": "cat"}]


def test_the_api_log_keeps_each_calls_question_in_order():
    universe = Universe(seed=1, photos_per_tag={"cat": 30})
    with StandIn(universe) as server:
        for page in ("1", "2"):
            requests.post(server.rest_url, timeout=5, data={
                "method": "flickr.photos.search", "tags": "cat", "page": page, "format": "json",
                "nojsoncallback": "1", "api_key": "key", "api_sig": "sig",
                "oauth_nonce": "123", "oauth_signature": "abc"})
        requests.get(server.rest_url, params={"method": "flickr.photos.licenses.getInfo",
                                              "format": "json"}, timeout=5)
        assert server.api_log == [
            {"method": "flickr.photos.search", "tags": "cat", "page": "1"},
            {"method": "flickr.photos.search", "tags": "cat", "page": "2"},
            {"method": "flickr.photos.licenses.getInfo"},
        ]


def test_recent_bias_crowds_uploads_into_later_years():
    low, high = UPLOAD_RANGE
    middle = (low + high) // 2

    def halves(universe: Universe) -> tuple[int, int]:
        early = search(universe, tags="cat", max_upload_date=str(middle - 1))
        late = search(universe, tags="cat", min_upload_date=str(middle))
        return early["photos"]["total"], late["photos"]["total"]

    even = Universe(seed=1, photos_per_tag={"cat": 2000})
    skewed = Universe(seed=1, photos_per_tag={"cat": 2000}, recent_bias=2)
    (even_early, even_late), (skewed_early, skewed_late) = halves(even), halves(skewed)
    assert even_early + even_late == skewed_early + skewed_late == 2000
    assert abs(even_early - even_late) < 200
    assert skewed_late > 4 * skewed_early  # seven in eight expected
    # Only the dates moved: the same photos, the same order where dates play no part.
    assert ids(search(even, tags="cat", sort="interestingness-desc", per_page="500")) == ids(
        search(skewed, tags="cat", sort="interestingness-desc", per_page="500"))


def test_the_cap_applies_to_each_upload_date_window_and_bounds_are_inclusive():
    universe = Universe(seed=1, photos_per_tag={"cat": 9000})
    low, high = UPLOAD_RANGE
    cuts = [low + (high - low) * third // 3 for third in range(3)] + [high]

    def window(first: int, last: int) -> tuple[list[str], set[int]]:
        return every_page(universe, tags="cat", per_page="500", extras="date_upload",
                          min_upload_date=str(first), max_upload_date=str(last))

    reached: set[str] = set()
    for first, last in itertools.pairwise(cuts):
        found, totals = window(first, last - 1)
        assert len(totals) == 1 and len(found) == len(set(found)) == totals.pop() < RESULT_CAP
        reached |= set(found)
    assert reached == set(universe.photo_ids("cat"))
    found, (total,) = window(cuts[0], cuts[2] - 1)
    assert total > RESULT_CAP and len(found) == 500 * math.ceil(total / 500)
    assert len(set(found)) == RESULT_CAP
    # Both bounds take photos uploaded at that very second, as unix times or as datetimes.
    photo = search(universe, tags="cat", extras="date_upload")["photos"]["photo"][0]
    second = photo["dateupload"]
    as_datetime = datetime.fromtimestamp(int(second), UTC).strftime("%Y-%m-%d %H:%M:%S")
    for bound in (second, as_datetime):
        assert photo["id"] in ids(search(universe, tags="cat", min_upload_date=bound,
                                         max_upload_date=bound))
