"""The offline Flickr stand-in behaves like the parts of Flickr harvester relies on."""

from __future__ import annotations

import io

import requests
from PIL import Image

from harvester.flickr import EXTRAS
from harvester.standin import RESULT_CAP, Faults, StandIn, Universe
from tests.conftest import fixture_response

BASE = "http://127.0.0.1:1"


def search(universe: Universe, **params: str) -> dict:
    """A search with the extras harvester asks for, unless `params` say otherwise."""
    return universe.respond({"method": "flickr.photos.search", "extras": EXTRAS, **params}, BASE)


def ids(answer: dict) -> list[str]:
    return [photo["id"] for photo in answer["photos"]["photo"]]


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
        answers = [requests.post(server.rest_url, data={
            "method": "flickr.photos.search", "tags": "cat", "per_page": "100", "extras": EXTRAS,
            "format": "json", "nojsoncallback": "1"}, timeout=5) for _ in range(30)]
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
