"""Throughput's shape: the stages overlap, and a finished harvest's re-run does nothing."""

import time

from harvester import download, files, resize, stream
from harvester.pipeline import export_only, harvest, verify_only
from tests.conftest import watchdog
from tests.test_pipeline import CREDENTIALS


def test_downloads_start_while_search_is_still_paging(make_config, flickr):
    config = make_config(classes=[{"name": "cat", "count": 60}], flickr={"per_page": 10})
    events = []

    def slow_search(params):
        if params.get("method") == "flickr.photos.search":
            events.append("search")
            time.sleep(0.2)  # a second or so on Flickr: downloads go on meanwhile

    flickr.on_api_call = slow_search
    flickr.on_image_request = lambda photo_id: events.append("image")
    harvest(config, CREDENTIALS)
    assert events.count("search") >= 6
    last_search = len(events) - 1 - events[::-1].index("search")
    assert events.index("image") < last_search
    # Images were fetched between search pages, not after them all.
    assert events[:last_search].count("image") >= 10


def test_a_rounds_last_photos_are_recorded_as_soon_as_they_are_back(
    make_config, flickr, universe, monkeypatch
):
    # A batch waits for more photos only while more are in flight. With the wait made
    # an hour, the harvest (several rounds: it replaces rejected and failed photos) still
    # ends at once; waiting out the batch at a round's end would trip the watchdog.
    monkeypatch.setattr(stream, "BATCH_SECONDS", 3600.0)
    for photo_id in universe.photo_ids("cat")[::10]:
        flickr.image_faults[photo_id] = (404, b"gone")

    with watchdog(60, "the harvest waited out a batch with nothing more to come"):
        outcome = harvest(make_config(), CREDENTIALS)
    assert outcome.in_dataset == {"cat": 20, "dog": 10}


def export_files(out):
    """Every file of the output folder but the database and summary.txt: (inode, mtime)."""
    return {path.relative_to(out): (path.stat().st_ino, path.stat().st_mtime_ns)
            for path in out.rglob("*")
            if path.is_file() and not path.name.startswith(("harvest.db", "summary.txt",
                                                            "harvest.lock"))}


def test_a_finished_harvest_run_again_fetches_nothing_and_rewrites_only_the_summary(
    make_config, flickr
):
    config = make_config()
    harvest(config, CREDENTIALS)
    before = export_files(config.output_dir)
    images, calls = flickr.image_requests.total(), flickr.api_calls.total()

    outcome = harvest(config, CREDENTIALS)

    assert outcome.in_dataset == {"cat": 20, "dog": 10} and not outcome.api_calls
    assert (flickr.image_requests.total(), flickr.api_calls.total()) == (images, calls)
    assert export_files(config.output_dir) == before  # the archive and splits untouched
    summary = (config.output_dir / "summary.txt").read_text()
    assert "run 1 (run" in summary and "run 2 (run" in summary
    assert verify_only(config).ok


def test_a_rerun_rebuilds_an_export_file_that_went_missing(make_config, flickr):
    config = make_config()
    harvest(config, CREDENTIALS)
    archive = config.output_dir / "dataset.tgz"
    archive.unlink()
    harvest(config, CREDENTIALS)
    assert archive.exists()
    assert verify_only(config).ok


def test_harvester_export_rebuilds_even_an_unchanged_dataset(make_config, flickr):
    config = make_config()
    harvest(config, CREDENTIALS)
    archive = config.output_dir / "dataset.tgz"
    first = archive.stat().st_ino
    export_only(config)
    assert archive.stat().st_ino != first  # written anew (and renamed over the old one)
    assert verify_only(config).ok


def test_a_photos_files_reach_the_disk_before_its_states_are_recorded(
    make_config, flickr, monkeypatch
):
    """Workers write without an fsync each; the harvest syncs their filesystem per batch."""
    config = make_config()
    out = config.output_dir
    durable: set[str] = set()
    recorded_first: list[str] = []
    sync, record_download, record_resize = (files.sync_filesystem, download.record,
                                            resize.record)

    def sync_and_note(path):
        sync(path)
        durable.update(str(file.relative_to(out)) for file in out.rglob("*.jpg"))

    def note(record, path_of):
        def recording(db, result, *args):
            path = path_of(result)
            if path is not None and path not in durable:
                recorded_first.append(path)
            return record(db, result, *args)
        return recording

    monkeypatch.setattr(files, "sync_filesystem", sync_and_note)
    monkeypatch.setattr(download, "record", note(record_download,
                                                 lambda result: getattr(result, "source_path",
                                                                        None)))
    monkeypatch.setattr(resize, "record", note(record_resize,
                                               lambda result: getattr(result, "path", None)))
    assert harvest(config, CREDENTIALS).in_dataset == {"cat": 20, "dog": 10}
    assert recorded_first == []
    assert len(durable) >= 60  # every photo's source and dataset image, synced
