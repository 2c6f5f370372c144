"""Each stage alone, on a temporary database, with Flickr mocked."""

import os
import random
import threading
import time

import pytest
from PIL import Image
from urllib3 import HTTPResponse

from harvester import assign, download, search, stream
from harvester.config import Config, DownloadSpec, SplitSpec
from harvester.db import open_database
from harvester.flickr import FlickrClient
from harvester.progress import Silent
from harvester.states import Photo, State, dataset_window
from harvester.workers import Workers
from tests.conftest import REST_URL

ONE_CLASS = [{"name": "cat", "count": 20}]


@pytest.fixture
def searched(make_config, flickr):
    """A database after search: 25 cats found (one page), the first 20 in the window."""
    config: Config = make_config(classes=ONE_CLASS)
    db = open_database(config.database_path)
    search.fill(db, FlickrClient("k", "s", config.flickr, rest_url=REST_URL), config, Silent())
    return db, config


def stream_round(db, config: Config, host: download.HostWatch | None = None) -> int:
    """One round of download and resize over the windows (search has filled them)."""
    client = FlickrClient("k", "s", config.flickr, rest_url=REST_URL)
    with Workers(config) as pool:
        return stream.Stream(db, config, client, Silent(),
                             host or download.HostWatch(config.download), pool).run()


def states(db) -> dict[str, int]:
    return {row["state"]: row["photos"] for row in db.query("SELECT * FROM progress")}


def window_ids(db, count=20) -> list[str]:
    return [photo.photo_id for photo in dataset_window(db, "cat", count)]


def test_download_fetches_the_window_once_and_records_each_file(searched, flickr):
    db, config = searched
    assert stream_round(db, config) == 20
    assert states(db) == {"resized": 20, "found": 5}
    assert set(flickr.image_requests) == set(window_ids(db)) and max(
        flickr.image_requests.values()) == 1
    for row in db.query("SELECT * FROM photos WHERE state = 'resized'"):
        source = config.output_dir / row["source_path"]
        assert source.stat().st_size == row["source_bytes"]
        assert row["sha256"] and row["attempts"] == 1
    assert not list(config.output_dir.rglob("*.part"))
    assert stream_round(db, config) == 0  # nothing left: no second request
    assert sum(flickr.image_requests.values()) == 20


def test_a_photo_that_cannot_be_fetched_is_failed_with_its_reason(searched, flickr):
    db, config = searched
    gone, flaky = window_ids(db)[:2]
    flickr.image_faults[gone] = (404, b"Not Found")
    flickr.image_faults[flaky] = (503, b"try later")
    host = download.HostWatch(config.download)  # one per run, as the pipeline keeps it
    stream_round(db, config, host)
    rows = {row["photo_id"]: row for row in db.query("SELECT * FROM photos")}
    assert (rows[gone]["state"], rows[gone]["reason"]) == ("failed", "http_404")
    # A 503 may pass: the photo keeps its place and is tried again next round.
    assert (rows[flaky]["state"], rows[flaky]["reason"], rows[flaky]["attempts"]) == (
        "found", "http_503", 1)
    assert flickr.image_requests[flaky] == 2  # the try and one retry (download.retries: 1)
    assert gone not in window_ids(db) and flaky in window_ids(db)
    stream_round(db, config, host)
    stream_round(db, config, host)  # download.max_attempts: 3
    row = db.execute("SELECT state, reason, attempts FROM photos WHERE photo_id = ?",
                     [flaky]).fetchone()
    assert row == ("failed", "http_503", 3)
    # Both places in the window went to the next photos found.
    assert len(window_ids(db)) == 20 and flaky not in window_ids(db)


def test_a_download_over_the_size_cap_is_rejected_without_keeping_it(searched, flickr):
    db, config = searched
    huge = window_ids(db)[0]
    flickr.image_faults[huge] = (200, b"\xff\xd8" + b"\x00" * download.MAX_SOURCE_BYTES)
    stream_round(db, config)
    row = db.execute("SELECT state, reason, source_path FROM photos WHERE photo_id = ?",
                     [huge]).fetchone()
    assert row == ("rejected", "too_large", None)
    assert not list((config.output_dir / ".sources").rglob(f"{huge}*"))


def test_a_source_written_by_a_killed_run_is_not_fetched_again(searched, flickr):
    db, config = searched
    photo = Photo.from_row(next(db.query("SELECT * FROM photos WHERE photo_id = ?",
                                         [window_ids(db, 1)[0]])))
    source = config.output_dir / download.source_path_for(photo)
    source.parent.mkdir(parents=True)
    source.write_bytes(b"bytes from before the kill")
    stream_round(db, config)
    assert photo.photo_id not in flickr.image_requests
    row = db.execute("SELECT source_bytes, reason FROM photos WHERE photo_id = ?",
                     [photo.photo_id]).fetchone()
    assert row == (26, "corrupt")  # (those bytes are no image)


def test_resize_writes_dataset_images_and_rejects_what_pillow_cannot_read(searched, flickr):
    db, config = searched
    broken = window_ids(db)[3]
    flickr.image_faults[broken] = (200, b"<html>photo unavailable</html>")
    assert stream_round(db, config) == 21  # the window's 20, and the 21st in broken's place
    assert states(db) == {"resized": 20, "rejected": 1, "found": 4}
    row = db.execute("SELECT reason FROM photos WHERE photo_id = ?", [broken]).fetchone()
    assert row == ("corrupt",)
    for row in db.query("SELECT * FROM photos WHERE state = 'resized'"):
        assert row["path"] == f"cat/{row['photo_id']}.jpg"
        with Image.open(config.output_dir / row["path"]) as image:
            assert max(image.size) == 240 and image.mode == "RGB"
            assert image.size == (row["width"], row["height"])
    # The rejected photo's place went to the next found photo, in the same round.
    assert {p.state for p in dataset_window(db, "cat", 20)} == {State.RESIZED}


def test_a_source_already_at_the_dataset_size_is_kept_as_the_dataset_image(searched, flickr):
    db, config = searched  # the stand-in serves Flickr's 240 px rendition, as Flickr does
    stream_round(db, config)
    rows = list(db.query("SELECT * FROM photos WHERE state = 'resized'"))
    assert len(rows) == 20
    for row in rows:
        source, image = config.output_dir / row["source_path"], config.output_dir / row["path"]
        assert source.read_bytes() == image.read_bytes()  # not encoded a second time
        assert os.path.samefile(source, image)  # nor stored twice
        assert row["file_sha256"] == row["sha256"]


def test_assign_waits_until_the_class_dataset_is_final(searched):
    db, config = searched
    assert assign.run(db, config) == 0  # found but not resized: not final yet
    stream_round(db, config)
    assert assign.run(db, config) == 20
    splits = dict(db.execute(
        "SELECT split, count(*) FROM photos WHERE state = 'assigned' GROUP BY split").fetchall())
    assert splits == {"test": 3, "train": 17}
    assert assign.run(db, config) == 0


def photos(n: int) -> list[Photo]:
    return [Photo(photo_id=str(10_000 + i), class_="cat", state=State.RESIZED, found_order=i,
                  search_tags="cat") for i in range(n)]


def test_the_split_does_not_depend_on_the_order_photos_arrived_in():
    split = SplitSpec(seed=42, type="absolute", test_size=5)
    batch = photos(50)
    shuffled = batch[:]
    random.Random(1).shuffle(shuffled)
    assert assign.planned_splits(batch, split) == assign.planned_splits(shuffled, split)
    other_seed = SplitSpec(seed=43, type="absolute", test_size=5)
    assert assign.planned_splits(batch, split) != assign.planned_splits(batch, other_seed)


@pytest.mark.parametrize(("split", "size", "test"), [
    (SplitSpec(42, "absolute", 5), 50, 5),
    (SplitSpec(42, "absolute", 5), 3, 2),  # a class short of photos keeps one for training
    (SplitSpec(42, "proportional", 0.1), 59, 5),  # floor(0.1 x 59)
    (SplitSpec(42, "proportional", 0.25), 8, 2),
    (SplitSpec(42, "proportional", 0.0), 8, 0),
])
def test_split_sizes_are_exact(split: SplitSpec, size: int, test: int):
    plan = assign.planned_splits(photos(size), split)
    assert list(plan.values()).count("test") == test
    assert list(plan.values()).count("train") == size - test


def owned(sizes: list[int]) -> list[Photo]:
    """Photos of photographers owning `sizes` photos each."""
    return [Photo(photo_id=f"{owner}{index}", class_="cat", state=State.RESIZED,
                  found_order=0, search_tags="cat", owner=f"owner{owner}@N01")
            for owner, size in enumerate(sizes) for index in range(size)]


def sides(plan: dict[str, str], batch: list[Photo]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for photo in batch:
        found.setdefault(photo.owner, set()).add(plan[photo.photo_id])
    return found


@pytest.mark.parametrize(("sizes", "test_size", "test"), [
    ([7, 1, 3, 12, 2, 5, 4, 1, 9, 6], 10, 10),
    ([5] * 10, 7, 5),  # whole photographers of five cannot make seven: as close as can be
    ([1] * 40, 4, 4),
])
def test_a_split_grouped_by_owner_keeps_each_photographer_on_one_side(sizes, test_size, test):
    split = SplitSpec(seed=42, type="absolute", test_size=test_size, group_by="owner")
    batch = owned(sizes)
    plan = assign.planned_splits(batch, split)
    assert all(len(found) == 1 for found in sides(plan, batch).values())
    assert list(plan.values()).count("test") == test
    shuffled = batch[:]
    random.Random(3).shuffle(shuffled)
    assert assign.planned_splits(shuffled, split) == plan


def failure(photo_id: str) -> download.DownloadFailed:
    return download.DownloadFailed(photo_id, "http_503", "", 1, transient=True)


def success(photo_id: str) -> download.Downloaded:
    return download.Downloaded(photo_id, "x", 1, "0" * 64, 1)


def test_the_host_watch_stops_a_run_only_when_nothing_gets_through(make_config):
    config = make_config()  # download.workers 4: the watch needs 16 photos failing in a row
    host = download.HostWatch(config.download)
    host.observe([failure(str(n)) for n in range(15)] + [success("ok")])
    host.observe([failure(str(n)) for n in range(15)])  # a success in between resets it
    host.end_of_round()  # the host answered earlier in the run: a few photos just fail
    host.observe([failure("14")] * 5)  # the same photo again and again is not the host
    with pytest.raises(download.ImageHostFailing, match="16 photos' downloads failed"):
        host.observe([failure("15")])


def test_a_round_with_nothing_getting_through_stops_a_small_harvest(make_config):
    host = download.HostWatch(make_config().download)
    host.observe([failure("1"), failure("2")])
    with pytest.raises(download.ImageHostFailing):
        host.end_of_round()


def test_retry_after_is_honoured_up_to_a_limit():
    retry = download.make_session(DownloadSpec()).get_adapter("http://x").max_retries
    assert retry.get_retry_after(HTTPResponse(headers={"Retry-After": "2"})) == 2
    assert retry.get_retry_after(HTTPResponse(headers={"Retry-After": "3600"})) == 30


def test_a_stopping_harvest_cuts_a_wait_between_retries_short(flickr):
    # A worker waiting out a backoff (a 503, a Retry-After) must not hold up a Ctrl-C.
    stopping = threading.Event()
    session = download.make_session(DownloadSpec(retries=3, retry_backoff=60), stopping)
    flickr.image_faults["1"] = (503, b"down")
    outcome = []

    def fetch():
        try:
            session.get(f"{flickr.image_base_url}/1000/1_abc_m.jpg", timeout=10)
        except download.CutShort:
            outcome.append("cut short")

    fetching = threading.Thread(target=fetch, daemon=True)
    fetching.start()
    deadline = time.monotonic() + 10
    while flickr.image_requests["1"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the try, and the first retry (urllib3 waits before the second)
    stopping.set()
    fetching.join(timeout=30)  # the backoff it was in: 60 s or more
    assert outcome == ["cut short"] and flickr.image_requests["1"] == 2  # no third try
