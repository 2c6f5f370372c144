"""Whole harvests against mocked Flickr: exact counts, artifacts, and resume after failures."""

import errno
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from harvester import assign, export, resize
from harvester.config import ConfigError
from harvester.db import open_database
from harvester.flickr import FlickrUnavailable
from harvester.pipeline import NoHarvest, harvest
from tests.conftest import CREDENTIALS


def dataset(output_dir: Path) -> dict[str, bytes]:
    """What a user gets: the split file and every image, byte for byte."""
    files = {"train_test_split.json": (output_dir / "train_test_split.json").read_bytes()}
    split = json.loads(files["train_test_split.json"])
    for path in split["train"] + split["test"]:
        files[path] = (output_dir / path).read_bytes()
    return files


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
    assert all(url.startswith("https://live.staticflickr.com/") for url in urls["cat"])

    summary = (out / "summary.txt").read_text()
    assert "cat" in summary and "flickr.photos.search" in summary
    lines = {line.split()[0]: line.split() for line in summary.splitlines() if line.strip()}
    # class found downloaded failed rejected in_dataset train test wanted short
    assert lines["cat"][5:] == ["20", "17", "3", "20", "0"]
    assert lines["total"][5:] == ["30", "24", "6", "30", "0"]

    with tarfile.open(out / "dataset.tgz") as archive:
        names = archive.getnames()
    assert set(everything) | {"train_test_split.json", "urls_data.json", "summary.txt"} <= set(
        names)
    assert not any(name.startswith(("/", "..", ".sources")) for name in names)

    db = open_database(config.database_path)
    assert dict(db.execute(
        "SELECT class, photos FROM progress WHERE state = 'assigned'").fetchall()) == {
        "cat": 20, "dog": 10}
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


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


def test_when_flickr_has_too_few_photos_the_shortfall_is_reported(make_config, flickr):
    config = make_config(classes=[{"name": "cat", "count": 20}, {"name": "dog", "count": 100}])
    outcome = harvest(config, CREDENTIALS)
    assert outcome.in_dataset == {"cat": 20, "dog": 60}
    assert outcome.shortfalls == {"dog": 40}
    split = json.loads((config.output_dir / "train_test_split.json").read_text())
    assert sum(path.startswith("dog/") for path in split["test"]) == 3
    assert "shortfall: dog has 60 of 100 photos" in (config.output_dir / "summary.txt").read_text()


def test_photos_found_under_two_tags_or_classes_are_harvested_once(make_config, flickr):
    config = make_config(classes=[
        {"name": "cat", "count": 20},
        {"name": "pets", "count": 30, "tags": ["dog", "cat"]},
    ])
    harvest(config, CREDENTIALS)
    split = json.loads((config.output_dir / "train_test_split.json").read_text())
    ids = [Path(path).stem for path in split["train"] + split["test"]]
    assert len(ids) == len(set(ids)) == 50
    assert max(flickr.image_requests.values()) == 1


def test_an_interrupted_harvest_matches_an_uninterrupted_one(make_config, flickr, tmp_path):
    config = make_config()
    flickr.on_api_call = lambda params: (_ for _ in ()).throw(KeyboardInterrupt) if (
        params.get("tags") == "dog") else None
    with pytest.raises(KeyboardInterrupt):
        harvest(config, CREDENTIALS)
    flickr.on_api_call = None
    harvest(config, CREDENTIALS, command="resume")
    resumed = dataset(config.output_dir)

    other = tmp_path / "other"
    other.mkdir()
    from harvester.config import load_config
    from tests.conftest import write_config
    fresh = load_config(write_config(other))
    harvest(fresh, CREDENTIALS)
    assert dataset(fresh.output_dir) == resumed


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
            raise KeyboardInterrupt

    flickr.on_image_request = ctrl_c_on_the_twelfth_image
    return KeyboardInterrupt


def fail_resize_with_a_full_disk(flickr, monkeypatch):
    original = resize.record
    batches = {"n": 0}

    def disk_full_after_one_batch(db, results):
        batches["n"] += 1
        if batches["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(db, results[:5])

    monkeypatch.setattr(resize, "record", disk_full_after_one_batch)
    return OSError


def fail_assign_midway(flickr, monkeypatch):
    original = assign.move
    moves = {"n": 0}

    def crash(*args, **kwargs):
        moves["n"] += 1
        if moves["n"] == 25:
            raise OSError(errno.EIO, "I/O error")
        return original(*args, **kwargs)

    monkeypatch.setattr(assign, "move", crash)
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
    from harvester.pipeline import export_only
    export_only(config)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert (sum(flickr.image_requests.values()), search_pages(flickr)) == requests_before
    with tarfile.open(fileobj=io.BytesIO(before["dataset.tgz"])) as archive:
        assert {member.mtime for member in archive.getmembers()} == {0}
