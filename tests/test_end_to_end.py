"""Whole harvests over real sockets against the stand-in: the demo, and Flickr at its worst."""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
from pathlib import Path

import pytest
import responses
from PIL import Image
from typer.testing import CliRunner

from harvester import demo
from harvester.cli import app
from harvester.config import load_config
from harvester.db import open_database
from harvester.demo import PORT_FILE, run_demo
from harvester.pipeline import Credentials, harvest
from harvester.progress import Silent
from harvester.standin import INTEGRITY_FAULTS, Faults, StandIn, Universe, placeholder
from tests.conftest import CREDENTIALS, MockFlickr, write_config

pytestmark = pytest.mark.slow


def test_the_demo_builds_a_dataset_offline_and_says_where(tmp_path: Path):
    folder = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(folder)], env={})
    assert result.exit_code == 0, result.output
    assert f"Dataset ready in {folder}: 900 photos (sunset 300, forest 300, ocean 300)" in (
        result.stdout)
    assert f"sqlite3 {folder / 'harvest.db'} 'select * from progress'" in result.stdout
    split = json.loads((folder / "train_test_split.json").read_text())
    assert (len(split["train"]), len(split["test"])) == (810, 90)
    assert (folder / "dataset.tgz").exists()

    status = CliRunner().invoke(app, ["status", "-c", str(folder / "config.yaml"), "--json"])
    assert json.loads(status.stdout)["classes"]["ocean"]["in_dataset"] == 300

    again = CliRunner().invoke(app, ["demo", "-o", str(folder)], env={})
    assert again.exit_code == 0 and "Flickr API calls this run: 0" in again.stdout


def test_a_harvest_through_every_fault_still_reaches_exact_counts(tmp_path: Path):
    universe = Universe(seed=4, photos_per_tag={"cat": 400, "dog": 400}, api_key="right-key")
    faults = Faults(api_error_rate=0.3, image_fault_rate=0.25, slow_rate=0.05,
                    slow_seconds=0.05, seed=9)
    config = write_config(
        tmp_path, classes=[{"name": "cat", "count": 80}, {"name": "dog", "count": 60}],
        flickr={"per_page": 10, "retry_backoff": 0, "retries": 8},
    )
    with StandIn(universe, faults=faults) as stand_in:
        outcome = harvest(load_config(config),
                          Credentials("right-key", "secret", stand_in.rest_url))
        served = stand_in.faults_served
    assert outcome.in_dataset == {"cat": 80, "dog": 60}
    # Every kind of fault was met on the way.
    assert {"api 105", "api 201", "api http500", "api http429", "api reset", "image 404",
            "image unavailable", "image truncated", "image not_image", "image flaky",
            "image reset", "slow"} <= set(served)

    out = tmp_path / "outputs"
    db = open_database(out / "harvest.db")
    reasons = dict(db.execute(
        "SELECT reason, count(*) FROM photos WHERE state IN ('failed', 'rejected') "
        "GROUP BY reason").fetchall())
    # Flaky answers and dropped connections pass on a later try: nothing lost to them.
    assert set(reasons) == {"http_404", "unavailable", "corrupt"}
    retried = db.execute(
        "SELECT count(*) FROM photos WHERE state = 'assigned' AND attempts > 1").fetchone()[0]
    assert retried > 0
    # Nothing broken made it in: no placeholder, every image whole.
    split = json.loads((out / "train_test_split.json").read_text())
    placeholder_hash = hashlib.sha256(placeholder()).hexdigest()
    sources = {row["sha256"] for row in db.query(
        "SELECT sha256 FROM photos WHERE state = 'assigned'")}
    assert placeholder_hash not in sources
    assert len(split["train"]) + len(split["test"]) == 140


def test_a_key_flickr_refuses_exits_1_with_what_to_fix(tmp_path: Path):
    universe = Universe(seed=4, photos_per_tag={"cat": 100, "dog": 100}, api_key="right-key")
    config = write_config(tmp_path)
    with StandIn(universe) as stand_in:
        result = CliRunner().invoke(app, ["run", "-c", str(config)], env={
            "API_KEY": "wrong-key", "API_SECRET": "s", "FLICKR_API_URL": stand_in.rest_url})
        assert stand_in.api_calls.total() == 1  # refused at once, not retried
    assert result.exit_code == 1
    assert "Invalid API Key" in result.stderr and "check API_KEY and API_SECRET" in result.stderr


class CtrlCInDownload(Silent):
    """A progress sink that presses Ctrl-C once the first downloads are recorded."""

    def advance(self, stage: str, amount: int = 1) -> None:
        if stage == "download":
            raise KeyboardInterrupt


def test_an_interrupted_demo_continues_on_the_port_its_photo_urls_name(tmp_path: Path):
    folder = tmp_path / "demo"
    with pytest.raises(KeyboardInterrupt):
        run_demo(folder, CtrlCInDownload())
    port = (folder / PORT_FILE).read_text()
    outcome = run_demo(folder, Silent())
    assert outcome.in_dataset == {"sunset": 300, "forest": 300, "ocean": 300}
    assert (folder / PORT_FILE).read_text() == port
    db = open_database(folder / "harvest.db")
    assert db.execute("SELECT count(*) FROM photos WHERE state = 'failed'").fetchone()[0] == 0


def test_an_interrupted_demo_whose_port_is_taken_says_so(tmp_path: Path):
    folder = tmp_path / "demo"
    with pytest.raises(KeyboardInterrupt):
        run_demo(folder, CtrlCInDownload())
    port = int((folder / PORT_FILE).read_text())
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = CliRunner().invoke(app, ["demo", "-o", str(folder)])
    assert result.exit_code == 2
    assert f"port {port}" in result.stderr and "is in use" in result.stderr


@pytest.mark.parametrize(("setup", "message"), [
    (lambda folder: folder.write_text("a file"), "is a file, not a folder"),
    (lambda folder: (folder.mkdir(), (folder / "notes.txt").write_text("mine")),
     "is not empty"),
    (lambda folder: (folder.mkdir(), (folder / "config.yaml").write_text(
        "classes: [{name: cat, count: 5}]\ntrain_test_split: {test_size: 1}\n")),
     "is not the demo's config"),
])
def test_the_demo_never_writes_into_a_folder_that_is_not_its_own(tmp_path, setup, message):
    folder = tmp_path / "taken"
    setup(folder)
    before = sorted(folder.rglob("*")) if folder.is_dir() else None
    result = CliRunner().invoke(app, ["demo", "-o", str(folder)])
    assert result.exit_code == 2 and message in result.stderr
    assert (sorted(folder.rglob("*")) if folder.is_dir() else None) == before


def test_ctrl_c_in_the_demo_tells_how_to_continue_the_demo(tmp_path, monkeypatch):
    def interrupted(folder, sink):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", interrupted)  # as the command finds it
    result = CliRunner().invoke(app, ["demo", "-o", str(tmp_path / "d")])
    assert result.exit_code == 130
    assert f"`harvester demo -o {tmp_path / 'd'}` continues" in result.stderr


def test_a_class_of_9000_behind_the_4000_cap_gets_exactly_9000_distinct_photos(tmp_path):
    """One tag of 12,000 photos, paging drift on: past the cap, no duplicates, few calls."""
    config = load_config(write_config(
        tmp_path, classes=[{"name": "cat", "count": 9000}],
        flickr={"per_page": 500, "retry_backoff": 0},
        image={"longest_side": 100},  # the stand-in's 100px rendition: quick to make
        train_test_split={"seed": 1, "type": "proportional", "test_size": 0.1},
        download={"workers": 8, "retry_backoff": 0, "retries": 1}, resize={"workers": 2},
    ))
    # The API through `responses` rather than a socket: the same answers, in less time.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        flickr = MockFlickr(Universe(seed=4, photos_per_tag={"cat": 12_000}, drift=20), mock)
        outcome = harvest(config, CREDENTIALS)
    assert outcome.in_dataset == {"cat": 9000}
    split = json.loads((tmp_path / "outputs" / "train_test_split.json").read_text())
    photos = split["train"] + split["test"]
    assert len(photos) == len(set(photos)) == 9000 and len(split["test"]) == 900
    returned = [photo["id"] for answer in flickr.answers for photo in answer["photos"]["photo"]]
    assert len(returned) > len(set(returned))  # drift repeated photos across pages
    db = open_database(tmp_path / "outputs" / "harvest.db")
    found = db.execute("SELECT count(*) FROM photos").fetchone()[0]
    # At most 25% over the floor of one call per 500 photos found.
    assert flickr.api_calls["flickr.photos.search"] <= 1.25 * found / 500


def test_with_flickrs_troublesome_files_on_the_dataset_holds_none_of_them(tmp_path: Path):
    """Duplicates, near duplicates, CMYK, sideways, alpha PNGs and bombs, served by the
    stand-in for a third of the photos: fixed or rejected, and replaced."""
    universe = Universe(seed=6, photos_per_tag={"cat": 300, "dog": 300})
    faults = Faults(image_fault_rate=0.35, image_faults=(*INTEGRITY_FAULTS, "unavailable"),
                    seed=3)
    config = load_config(write_config(
        tmp_path, classes=[{"name": "cat", "count": 50}, {"name": "dog", "count": 40}],
        flickr={"per_page": 50, "retry_backoff": 0}))
    with StandIn(universe, faults=faults) as stand_in:
        outcome = harvest(config, Credentials("k", "s", stand_in.rest_url))
        served = stand_in.faults_served
    assert outcome.in_dataset == {"cat": 50, "dog": 40}
    assert {f"image {fault}" for fault in INTEGRITY_FAULTS} <= set(served)
    db = open_database(config.database_path)
    reasons = dict(db.execute(
        "SELECT reason, count(*) FROM photos WHERE state = 'rejected' GROUP BY reason"))
    assert set(reasons) == {"duplicate", "near_duplicate", "too_large", "unavailable"}
    # The placeholder learned from Flickr's redirects, then met without one, too.
    placeholder_hash = hashlib.sha256(placeholder()).hexdigest()
    learned = db.execute("SELECT sha256 FROM placeholders").fetchall()
    assert learned == [(placeholder_hash,)]
    assert db.execute("SELECT count(*) FROM photos WHERE sha256 = ? AND state = 'rejected' "
                      "AND reason = 'unavailable'", [placeholder_hash]).fetchone()[0] > 0
    assert db.execute("SELECT count(*) FROM photos WHERE sha256 = ? AND state = 'assigned'",
                      [placeholder_hash]).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM photos WHERE reason LIKE '%duplicate' "
                      "AND duplicate_of IS NULL").fetchone()[0] == 0
    rows = list(db.query("SELECT photo_id, path, pixels_sha256, phash, split FROM photos "
                         "WHERE state = 'assigned'"))
    assert len({row["pixels_sha256"] for row in rows}) == 90
    hashes = [int(row["phash"], 16) for row in rows]
    assert min(bin(a ^ b).count("1") for a, b in itertools.combinations(hashes, 2)) > 6
    for row in rows:
        with Image.open(tmp_path / "outputs" / row["path"]) as image:
            assert image.mode == "RGB" and not image.getexif() and max(image.size) == 240
            # Sideways sources stand upright: photos keep their own shape (the one twin
            # picture each class keeps has its own).
            if faults.image_fault(row["photo_id"]) not in ("duplicate", "near_duplicate"):
                facts = universe._facts(row["photo_id"])
                assert (image.width >= image.height) == (facts["width"] >= facts["height"])
