"""Whole harvests against mocked Flickr: exact counts, artifacts, and resume after failures."""

import _thread
import contextlib
import errno
import io
import json
import multiprocessing
import os
import signal
import tarfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import responses
from PIL import Image
from sqlite_utils import Database

from harvester import assign, export, resize
from harvester.config import ConfigError, load_config
from harvester.db import open_database
from harvester.download import ImageHostFailing
from harvester.files import exclusive
from harvester.flickr import FlickrUnavailable
from harvester.pipeline import HarvestBusy, NoHarvest, export_only, harvest, verify_only
from harvester.standin import Universe
from harvester.workers import WorkerFailed
from tests.conftest import CREDENTIALS, MockFlickr, dataset, watchdog, write_config


def test_a_harvest_produces_every_artifact_with_exact_counts(make_config, flickr):
    config = make_config()
    outcome = harvest(config, CREDENTIALS)
    out = config.output_dir
    assert outcome.in_dataset == {"cat": 20, "dog": 10} and not outcome.shortfalls

    split = json.loads((out / "train_test_split.json").read_text())
    assert set(split) == {"train", "test"}
    everything = split["train"] + split["test"]
    assert len(everything) == len(set(everything)) == 30
    assert split["train"] == sorted(split["train"]) and split["test"] == sorted(split["test"])
    assert sum(path.startswith("cat/") for path in split["test"]) == 3
    assert sum(path.startswith("dog/") for path in split["test"]) == 3
    for path in everything:
        with Image.open(out / path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and max(image.size) == 240

    urls = json.loads((out / "urls_data.json").read_text())
    assert {name: len(values) for name, values in urls.items()} == {"cat": 20, "dog": 10}
    assert all(url.startswith(flickr.image_base_url + "/") for url in urls["cat"])

    summary = (out / "summary.txt").read_text()
    assert "cat" in summary and "flickr.photos.search" in summary
    lines = {line.split()[0]: line.split() for line in summary.splitlines() if line.strip()}
    # class found downloaded failed rejected in_dataset train test wanted short
    assert lines["cat"][5:] == ["20", "17", "3", "20", "0"]
    assert lines["total"][5:] == ["30", "24", "6", "30", "0"]

    with tarfile.open(out / "dataset.tgz") as archive:
        names = archive.getnames()
    assert set(everything) | {"train_test_split.json", "urls_data.json", "README.md"} <= set(
        names)
    # The report of the harvest, with the archive's own sha256, stays beside it.
    assert "summary.txt" not in names
    assert not any(name.startswith(("/", "..", ".sources")) for name in names)

    db = open_database(config.database_path)
    assert dict(db.execute(
        "SELECT class, photos FROM progress WHERE state = 'assigned'").fetchall()) == {
        "cat": 20, "dog": 10}
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_only_photos_under_the_chosen_licenses_are_harvested(make_config, flickr):
    config = make_config(flickr={"per_page": 25, "retry_backoff": 0, "license": [4, 9]})
    harvest(config, CREDENTIALS)
    db = open_database(config.database_path)
    licenses = {row[0] for row in db.execute("SELECT DISTINCT license FROM photos")}
    assert licenses == {"4", "9"}


def test_lost_photos_are_replaced_so_counts_stay_exact(make_config, flickr, universe):
    config = make_config(classes=[{"name": "cat", "count": 20}])
    first = universe.photo_ids("cat")
    # Whatever the search order, knock out photos across the whole tag.
    for photo_id in first[::10]:
        flickr.image_faults[photo_id] = (404, b"gone")
    for photo_id in first[5::10]:
        flickr.image_faults[photo_id] = (200, b"not an image at all")
    outcome = harvest(config, CREDENTIALS)
    assert outcome.in_dataset == {"cat": 20}
    db = open_database(config.database_path)
    lost = dict(db.execute(
        "SELECT reason, count(*) FROM photos WHERE state IN ('failed', 'rejected') "
        "GROUP BY reason").fetchall())
    assert set(lost) == {"http_404", "corrupt"}
    summary = (config.output_dir / "summary.txt").read_text()
    assert f"cat  failed: http_404  {lost['http_404']}" in summary
    assert f"cat  rejected: corrupt  {lost['corrupt']}" in summary


def test_when_flickr_has_too_few_photos_the_shortfall_is_reported(make_config, flickr, universe):
    config = make_config(classes=[{"name": "cat", "count": 20}, {"name": "dog", "count": 100}])
    outcome = harvest(config, CREDENTIALS)
    # Of the tag's 60 photos, Flickr finds only those that are photos (not screenshots).
    dogs = universe.respond({"method": "flickr.photos.search", "tags": "dog",
                             "content_types": "0"}, "")["photos"]["total"]
    assert 40 < dogs < 60
    assert outcome.in_dataset == {"cat": 20, "dog": dogs}
    assert outcome.shortfalls == {"dog": 100 - dogs}
    split = json.loads((config.output_dir / "train_test_split.json").read_text())
    assert sum(path.startswith("dog/") for path in split["test"]) == 3
    summary = (config.output_dir / "summary.txt").read_text()
    assert f"shortfall: dog has {dogs} of 100 photos" in summary


def search_pages(flickr) -> int:
    return flickr.api_calls["flickr.photos.search"]


def fail_search_after_first_page(flickr, monkeypatch):
    calls = {"n": 0}

    def on_call(params):
        calls["n"] += 1
        if calls["n"] == 2:
            flickr.fail_api(times=6)

    flickr.on_api_call = on_call
    return FlickrUnavailable


def fail_download_midway(flickr, monkeypatch):
    def ctrl_c_on_the_twelfth_image(photo_id):
        if sum(flickr.image_requests.values()) == 12:
            _thread.interrupt_main()  # the image host answers in a thread of its own

    flickr.on_image_request = ctrl_c_on_the_twelfth_image
    return KeyboardInterrupt


def fail_resize_with_a_full_disk(flickr, monkeypatch):
    original = resize.record
    calls = {"n": 0}

    def disk_full_after_five_photos(db, result):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(db, result)

    monkeypatch.setattr(resize, "record", disk_full_after_five_photos)
    return OSError


def fail_assign_midway(flickr, monkeypatch):
    original = assign.move_all
    moves = {"n": 0}

    def crash(*args, **kwargs):
        moves["n"] += 1
        if moves["n"] == 3:  # the first class split (train, then test), the second not
            raise OSError(errno.EIO, "I/O error")
        return original(*args, **kwargs)

    monkeypatch.setattr(assign, "move_all", crash)
    return OSError


def fail_export(flickr, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "write_archive", crash)
    return OSError


@pytest.mark.parametrize("inject", [
    fail_search_after_first_page, fail_download_midway, fail_resize_with_a_full_disk,
    fail_assign_midway, fail_export,
])
def test_resume_after_a_failure_in_any_stage_finishes_without_refetching(
    make_config, flickr, monkeypatch, inject
):
    config = make_config()
    expected_error = inject(flickr, monkeypatch)
    with pytest.raises(expected_error):
        harvest(config, CREDENTIALS)
    monkeypatch.undo()
    flickr.on_api_call = flickr.on_image_request = None
    flickr.api_faults.clear()
    images_before = dict(flickr.image_requests)
    pages_before = search_pages(flickr)

    outcome = harvest(config, CREDENTIALS, command="resume")

    assert outcome.in_dataset == {"cat": 20, "dog": 10}
    # No image fetched before the failure was fetched again, but the one in flight.
    refetched = [photo for photo in images_before if flickr.image_requests[photo] > 1]
    assert len(refetched) <= 1
    assert sum(flickr.image_requests.values()) <= 30 + 1
    # Only the search page that failed (if any) was asked for again.
    assert search_pages(flickr) - pages_before <= 2
    db = open_database(config.database_path)
    runs = db.execute("SELECT command, outcome FROM runs ORDER BY run_id").fetchall()
    assert runs[-1] == ("resume", "complete") and runs[0][1] in ("stopped", "interrupted")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_resume_without_a_harvest_is_a_clear_error(make_config):
    config = make_config()
    with pytest.raises(NoHarvest, match="no harvest to resume"):
        harvest(config, CREDENTIALS, command="resume")
    assert not config.output_dir.exists()


def test_continuing_under_a_config_that_changes_the_dataset_is_refused(make_config, flickr):
    harvest(make_config(), CREDENTIALS)
    changed = make_config(classes=[{"name": "cat", "count": 25}, {"name": "dog", "count": 10}])
    with pytest.raises(ConfigError, match="classes: differs from the harvest"):
        harvest(changed, CREDENTIALS)
    fewer_per_page = make_config(flickr={"per_page": 10, "retry_backoff": 0})
    with pytest.raises(ConfigError, match="flickr: differs from the harvest"):
        harvest(fewer_per_page, CREDENTIALS)
    # Settings that do not change the dataset may differ.
    harvest(make_config(download={"workers": 2, "retry_backoff": 0}), CREDENTIALS)


def test_export_rebuilds_identical_artifacts_from_the_database(make_config, flickr):
    config = make_config()
    harvest(config, CREDENTIALS)
    out = config.output_dir
    before = {name: (out / name).read_bytes() for name in (
        "train_test_split.json", "urls_data.json", "summary.txt", "dataset.tgz")}
    for name in before:
        (out / name).unlink()
    requests_before = sum(flickr.image_requests.values()), search_pages(flickr)
    export_only(config)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert (sum(flickr.image_requests.values()), search_pages(flickr)) == requests_before
    with tarfile.open(fileobj=io.BytesIO(before["dataset.tgz"])) as archive:
        assert {member.mtime for member in archive.getmembers()} == {0}


def test_an_unreachable_image_host_stops_the_run_and_loses_no_photo(make_config, flickr,
                                                                    universe):
    config = make_config()
    for photo_id in universe.photo_ids("cat") + universe.photo_ids("dog"):
        flickr.image_faults[photo_id] = (503, b"unavailable")
    with pytest.raises(ImageHostFailing, match="downloads failed one after another"):
        harvest(config, CREDENTIALS)
    db = open_database(config.database_path)
    states = dict(db.execute("SELECT state, count(*) FROM photos GROUP BY state").fetchall())
    assert "failed" not in states  # nothing given up on: the host, not the photos, failed
    flickr.image_faults.clear()
    assert harvest(config, CREDENTIALS, command="resume").in_dataset == {"cat": 20, "dog": 10}


def test_a_dead_image_host_stops_even_a_small_harvest(make_config, flickr, universe):
    config = make_config(classes=[{"name": "cat", "count": 5}, {"name": "dog", "count": 4}],
                         train_test_split={"seed": 1, "type": "absolute", "test_size": 1})
    for photo_id in universe.photo_ids("cat") + universe.photo_ids("dog"):
        flickr.image_faults[photo_id] = (503, b"unavailable")
    with pytest.raises(ImageHostFailing):
        harvest(config, CREDENTIALS)
    db = open_database(config.database_path)
    assert db.execute("SELECT count(*) FROM photos WHERE state = 'failed'").fetchone()[0] == 0
    assert flickr.image_requests.total() == 9 * 2  # one round: each photo, one retry


def test_a_worker_process_that_dies_stops_the_run_and_resume_finishes(make_config, flickr):
    config = make_config()

    def kill_a_worker(photo_id):
        if flickr.image_requests.total() == 8:  # as the kernel's OOM killer would
            os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)

    flickr.on_image_request = kill_a_worker
    with pytest.raises(WorkerFailed, match="worker process ended unexpectedly"):
        harvest(config, CREDENTIALS)
    flickr.on_image_request = None
    assert harvest(config, CREDENTIALS, command="resume").in_dataset == {"cat": 20, "dog": 10}
    assert verify_only(config).ok


def test_a_ctrl_c_while_a_result_is_half_read_stops_without_hanging(
    make_config, flickr, monkeypatch
):
    config = make_config()
    original = Connection._recv
    interrupted = []

    def ctrl_c_mid_message(self, size, *args):
        if size != 4 and not interrupted:  # a result's body, its length just read
            interrupted.append(size)
            _thread.interrupt_main()  # Ctrl-C, right then, before the body is read
            time.sleep(0.05)
        return original(self, size, *args)

    monkeypatch.setattr(Connection, "_recv", ctrl_c_mid_message)
    with watchdog(60, "the run hung after Ctrl-C"), pytest.raises(KeyboardInterrupt):
        harvest(config, CREDENTIALS)
    assert interrupted
    monkeypatch.undo()
    assert harvest(config, CREDENTIALS, command="resume").in_dataset == {"cat": 20, "dog": 10}
    assert verify_only(config).ok


@pytest.mark.parametrize("batch", [2, 5])
def test_a_ctrl_c_just_after_a_batch_began_still_records_how_the_run_ended(
    make_config, flickr, monkeypatch, batch
):
    config = make_config()
    original = Database.atomic
    batches = []

    @contextlib.contextmanager
    def ctrl_c_after_begin(self):
        batches.append(1)
        if len(batches) == batch:
            self.conn.execute("BEGIN")
            raise KeyboardInterrupt  # as a Ctrl-C landing before the batch's `try`
        with original(self):
            yield self

    monkeypatch.setattr(Database, "atomic", ctrl_c_after_begin)
    with pytest.raises(KeyboardInterrupt):
        harvest(config, CREDENTIALS)
    monkeypatch.undo()
    db = open_database(config.database_path)
    assert db.execute("SELECT outcome FROM runs").fetchall() == [("interrupted",)]
    db.close()
    assert harvest(config, CREDENTIALS, command="resume").in_dataset == {"cat": 20, "dog": 10}
    assert verify_only(config).ok


def interrupt_on_image(flickr, number):
    """Ctrl-C as the `number`th image is asked for (the image host runs in another thread)."""
    def ctrl_c(photo_id):
        if sum(flickr.image_requests.values()) == number:
            _thread.interrupt_main()

    flickr.on_image_request = ctrl_c


def interrupt_on_search(flickr, number):
    def ctrl_c(params):
        if flickr.api_calls["flickr.photos.search"] == number - 1:
            raise KeyboardInterrupt

    flickr.on_api_call = ctrl_c


def interrupt_on_resize(flickr, number):
    """Ctrl-C as the `number`th resized photo is recorded."""
    original = resize.record
    calls = {"n": 0}

    def ctrl_c(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    resize.record = ctrl_c
    flickr.restore = lambda: setattr(resize, "record", original)


@pytest.mark.parametrize(("interrupt", "at"), [
    (interrupt_on_search, 3), (interrupt_on_image, 33), (interrupt_on_resize, 1),
])
def test_photos_two_classes_share_end_the_same_whenever_the_run_is_interrupted(
    tmp_path, interrupt, at
):
    """Shared photos and lost photos together make the order of work matter most."""

    def run(folder, interrupt_at=None):
        folder.mkdir()
        config = load_config(write_config(folder, flickr={"per_page": 10, "retry_backoff": 0}))
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            world = Universe(seed=3, photos_per_tag={"cat": 200, "dog": 200}, overlap=0.5)
            flickr = MockFlickr(world, mock)
            # The later class loses photos in download, the earlier in resize: after an
            # interruption between the two, their replacement searches run in another order.
            for photo_id in world.photo_ids("dog")[::5]:
                flickr.image_faults[photo_id] = (404, b"gone")
            for photo_id in world.photo_ids("cat")[::6]:
                flickr.image_faults[photo_id] = (200, b"not an image")
            if interrupt_at:
                interrupt(flickr, interrupt_at)
                with pytest.raises(KeyboardInterrupt):
                    harvest(config, CREDENTIALS)
                flickr.on_api_call = flickr.on_image_request = None
                getattr(flickr, "restore", lambda: None)()
            harvest(config, CREDENTIALS, command="resume" if interrupt_at else "run")
        return config.output_dir

    expected = dataset(run(tmp_path / "whole"))
    interrupted = run(tmp_path / "interrupted", interrupt_at=at)
    assert dataset(interrupted) == expected
    db = open_database(interrupted / "harvest.db")
    assert db.execute("SELECT count(*) FROM photos WHERE reason = 'ambiguous'").fetchone()[0] > 0


def test_dataset_files_get_the_usual_permissions(make_config, flickr):
    config = make_config()
    harvest(config, CREDENTIALS)
    umask = os.umask(0o022)
    os.umask(umask)
    split = json.loads((config.output_dir / "train_test_split.json").read_text())
    for path in ["dataset.tgz", "summary.txt", "train_test_split.json", split["train"][0]]:
        assert (config.output_dir / path).stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_second_harvester_on_the_same_folder_is_refused(make_config, flickr):
    config = make_config()
    with exclusive(config.output_dir / "harvest.lock"), pytest.raises(
        HarvestBusy, match="another harvester is already working"
    ):
        harvest(config, CREDENTIALS)
    assert flickr.api_calls.total() == 0
    assert harvest(config, CREDENTIALS).in_dataset == {"cat": 20, "dog": 10}


def test_exporting_an_unfinished_harvest_says_it_is_unfinished(make_config, flickr):
    config = make_config()
    interrupt_on_image(flickr, 3)
    with pytest.raises(KeyboardInterrupt):
        harvest(config, CREDENTIALS)
    export_only(config)
    summary = (config.output_dir / "summary.txt").read_text()
    assert "not finished: cat has 0 of 20 photos; `harvester resume` continues" in summary
    assert "Flickr had no more" not in summary


def serve_pages(mock, pages: dict[tuple[str, int], list[str]], faults: dict[str, tuple]):
    """A hand-made Flickr: exactly these search pages, each photo a real JPEG unless faulty."""
    from harvester.standin import render
    from tests.conftest import REST_URL, fixture_response, form, image_host

    def image(path):
        photo_id = path.rsplit("/", 1)[1].split("_")[0]
        status, body = faults.get(photo_id, (200, render(photo_id, 0, 240, 180)))
        return status, {}, body

    image_base_url = image_host().serve(image)

    def search(request):
        params = form(request)
        if params["method"] == "flickr.photos.licenses.getInfo":
            return 200, {}, json.dumps({"stat": "ok", **fixture_response("licenses_getInfo.json")})
        ids = pages.get((params["tags"], int(params["page"])), [])
        photos = [{"id": photo_id, "owner": "1@N01", "license": "4",
                   "url_s": f"{image_base_url}/1/{photo_id}_ab_m.jpg", "width_s": 240,
                   "height_s": 180} for photo_id in ids]
        body = {"photos": {"page": params["page"], "pages": 9, "total": 90, "photo": photos},
                "stat": "ok"}
        return 200, {}, json.dumps(body)

    mock.add_callback(responses.POST, REST_URL, callback=search)


def test_a_photo_two_classes_find_never_changes_class_with_the_order_of_work(tmp_path):
    """Photo 500 heads page 2 of both classes. Whichever class searches page 2 first would
    own it, and a Ctrl-C between download and resize changes which: so it belongs to none."""
    pages = {
        ("cat", 1): [str(n) for n in range(100, 110)],
        ("cat", 2): ["500", *map(str, range(110, 119))],
        ("dog", 1): [str(n) for n in range(200, 210)],
        ("dog", 2): ["500", *map(str, range(210, 219))],
    }
    faults = {"103": (200, b"not an image"), "205": (404, b"gone")}

    def run(folder: Path, interrupted: bool) -> Path:
        folder.mkdir()
        config = load_config(write_config(
            folder, classes=[{"name": "cat", "count": 10}, {"name": "dog", "count": 10}],
            flickr={"per_page": 10, "retry_backoff": 0}))
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            serve_pages(mock, pages, faults)
            if interrupted:
                original = resize.record
                resize.record = lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt)
                try:
                    with pytest.raises(KeyboardInterrupt):
                        harvest(config, CREDENTIALS)
                finally:
                    resize.record = original
            harvest(config, CREDENTIALS, command="resume" if interrupted else "run")
        return config.output_dir

    whole = run(tmp_path / "whole", interrupted=False)
    resumed = run(tmp_path / "resumed", interrupted=True)
    assert dataset(resumed) == dataset(whole)
    paths = json.loads(dataset(whole)["train_test_split.json"])
    assert not any("500" in path for path in paths["train"] + paths["test"])
    reason = open_database(whole / "harvest.db").execute(
        "SELECT reason FROM photos WHERE photo_id = '500'").fetchone()
    assert reason == ("ambiguous",)


def test_a_class_that_loses_a_photo_to_ambiguity_late_still_fills_up(tmp_path):
    """Dog's replacement search finds cat's photo 105 when nothing else is left to do."""
    pages = {
        ("cat", 1): [str(n) for n in range(100, 110)],
        ("cat", 2): [str(n) for n in range(110, 120)],
        ("dog", 1): [str(n) for n in range(200, 210)],
        ("dog", 2): ["105"],
    }
    config = load_config(write_config(
        tmp_path, classes=[{"name": "cat", "count": 10}, {"name": "dog", "count": 10}],
        flickr={"per_page": 10, "retry_backoff": 0}))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        serve_pages(mock, pages, faults={"205": (404, b"gone")})
        outcome = harvest(config, CREDENTIALS)
    assert outcome.in_dataset == {"cat": 10, "dog": 9}
    split = json.loads((config.output_dir / "train_test_split.json").read_text())
    assert "cat/110.jpg" in split["train"] + split["test"]


def harvest_overlapping_tags(tmp_path: Path, **sections):
    """A harvest of a world where 30% of each tag's photos carry the next tag too
    (cat -> kitten -> dog -> cat); the database and what Flickr was asked."""
    config = load_config(write_config(tmp_path, **sections))
    universe = Universe(seed=11, photos_per_tag={"cat": 150, "kitten": 100, "dog": 150},
                        overlap=0.3)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        flickr = MockFlickr(universe, mock)
        outcome = harvest(config, CREDENTIALS)
    return outcome, open_database(config.database_path), flickr


def dataset_tags(db, class_name: str) -> list[set[str]]:
    return [set(row[0].split()) for row in db.execute(
        "SELECT tags FROM photos WHERE class = ? AND state = 'assigned'", [class_name])]


CATS_AND_DOGS = [{"name": "cat", "count": 40, "tags": ["cat"]},
                 {"name": "dog", "count": 40, "tags": ["dog"]}]


def test_a_photo_tagged_for_two_classes_is_rejected_from_both_as_ambiguous(tmp_path):
    # Dog's search stops after a page: its tags, not dog's search, give a photo away.
    classes = [CATS_AND_DOGS[0], {**CATS_AND_DOGS[1], "count": 5}]
    outcome, db, _ = harvest_overlapping_tags(tmp_path, classes=classes)
    assert outcome.in_dataset == {"cat": 40, "dog": 5}
    for name in ("cat", "dog"):
        assert not any({"cat", "dog"} <= tags for tags in dataset_tags(db, name))
    ambiguous = db.execute(
        "SELECT count(*) FROM photos WHERE state = 'rejected' AND reason = 'ambiguous'"
    ).fetchone()[0]
    assert ambiguous > 0
    ids = [row[0] for row in db.execute("SELECT photo_id FROM photos")]
    assert len(ids) == len(set(ids))


def test_ambiguous_photos_can_stay_in_the_first_class_they_match(tmp_path):
    outcome, db, _ = harvest_overlapping_tags(
        tmp_path, classes=CATS_AND_DOGS, ambiguous_photos="first_class")
    assert outcome.in_dataset == {"cat": 40, "dog": 40}
    # Dog photos that carry cat too belong to cat, the first class; never the other way.
    assert any({"cat", "dog"} <= tags for tags in dataset_tags(db, "cat"))
    assert not any("cat" in tags for tags in dataset_tags(db, "dog"))
    assert db.execute("SELECT count(*) FROM photos WHERE reason = 'ambiguous'").fetchone()[0] == 0


def test_excluded_tags_and_tag_mode_reach_flickr_and_shape_the_dataset(tmp_path):
    classes = [{"name": "cat", "count": 30, "tags": ["cat", "-kitten"]},
               {"name": "kitten", "count": 15, "tags": ["kitten", "cat"], "tag_mode": "all"}]
    outcome, db, flickr = harvest_overlapping_tags(tmp_path, classes=classes)
    searched = {(params["tags"], params["tag_mode"]) for params in flickr.api_log
                if params["method"] == "flickr.photos.search"}
    assert searched == {("cat,-kitten", "any"), ("kitten,cat", "all")}
    assert outcome.in_dataset == {"cat": 30, "kitten": 15}
    assert not any("kitten" in tags for tags in dataset_tags(db, "cat"))
    assert all({"kitten", "cat"} <= tags for tags in dataset_tags(db, "kitten"))


def test_every_photo_records_what_its_attribution_needs(make_config, flickr):
    config = make_config(flickr={"per_page": 25, "retry_backoff": 0, "license": [4, 5, 9]})
    harvest(config, CREDENTIALS)
    db = open_database(config.database_path)
    rows = list(db.query(
        "SELECT p.photo_id, p.owner, p.owner_name, p.title, p.page_url, l.name AS license_name, "
        "l.url AS license_url FROM photos p JOIN licenses l ON l.license_id = p.license "
        "WHERE p.state = 'assigned'"))
    assert len(rows) == 30
    for row in rows:
        assert row["owner"] and row["owner_name"] and row["title"]
        assert row["page_url"] == f"https://www.flickr.com/photos/{row['owner']}/{row['photo_id']}"
        assert row["license_name"] in {"CC BY 2.0", "CC BY-SA 2.0",
                                       "Public Domain Dedication (CC0)"}
        assert row["license_url"].startswith("https://creativecommons.org/")


def test_a_photo_with_no_size_large_enough_is_rejected_and_replaced(make_config, flickr):
    # Originals of 1,024 to 3,000 px: only some reach 2,048.
    config = make_config(classes=[{"name": "cat", "count": 6}], image={"longest_side": 2048},
                         train_test_split={"seed": 1, "type": "absolute", "test_size": 1})
    outcome = harvest(config, CREDENTIALS)
    assert outcome.in_dataset == {"cat": 6}
    db = open_database(config.database_path)
    rejected = db.execute("SELECT count(*) FROM photos WHERE state = 'rejected' "
                          "AND reason = 'no_usable_size' AND url IS NULL").fetchone()[0]
    assert rejected > 0
    for (path,) in db.execute("SELECT path FROM photos WHERE state = 'assigned'"):
        with Image.open(config.output_dir / path) as image:
            assert max(image.size) == 2048


def test_a_harvest_split_by_owner_keeps_each_photographer_on_one_side(make_config, flickr):
    config = make_config(classes=[{"name": "cat", "count": 120}],
                         train_test_split={"seed": 1, "type": "proportional",
                                           "test_size": 0.2, "group_by": "owner"})
    harvest(config, CREDENTIALS)
    db = open_database(config.database_path)
    sides = dict(db.execute(
        "SELECT owner, group_concat(DISTINCT split) FROM photos WHERE state = 'assigned' "
        "GROUP BY owner").fetchall())
    assert all(side in ("train", "test") for side in sides.values())
    counts = dict(db.execute("SELECT split, count(*) FROM photos WHERE state = 'assigned' "
                             "GROUP BY split").fetchall())
    assert counts == {"train": 96, "test": 24}
    assert sum(1 for side in sides.values() if side == "test") > 1


def test_attribution_files_credit_every_dataset_photo(make_config, flickr):
    import csv

    config = make_config(flickr={"per_page": 25, "retry_backoff": 0, "license": [4, 5, 9]})
    harvest(config, CREDENTIALS)
    out = config.output_dir
    split = json.loads((out / "train_test_split.json").read_text())
    with (out / "attribution.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == sorted(split["train"] + split["test"])
    for row in rows:
        assert row["page_url"] == (
            f"https://www.flickr.com/photos/{row['owner']}/{row['photo_id']}")
        assert row["license_name"] and row["owner_name"] and row["title"]
    credits = (out / "ATTRIBUTION.md").read_text()
    for row in rows:
        assert f"`{row['path']}`: [" in credits and f"]({row['page_url']}) by " in credits
    summary = (out / "summary.txt").read_text()
    histogram = summary.split("Licenses of the dataset's photos:\n")[1].split("\n\n")[0]
    assert sum(int(line.rsplit(None, 1)[1]) for line in histogram.splitlines()) == 30
    assert "All Rights Reserved" not in summary
    with tarfile.open(out / "dataset.tgz") as archive:
        assert {"attribution.csv", "ATTRIBUTION.md"} <= set(archive.getnames())


def test_all_rights_reserved_photos_are_flagged_when_no_license_filter_left_them_out(
    make_config, flickr
):
    config = make_config(classes=[{"name": "cat", "count": 60}])
    harvest(config, CREDENTIALS)
    db = open_database(config.database_path)
    reserved = db.execute("SELECT count(*) FROM photos WHERE state = 'assigned' "
                          "AND license = '0'").fetchone()[0]
    assert reserved > 0
    summary = (config.output_dir / "summary.txt").read_text()
    assert f"  All Rights Reserved  {reserved}" in summary
    assert f"note: {reserved} photos are All Rights Reserved" in summary
