"""Each export read by the program that consumes it: datasets, WebDataset, tar, a browser."""

import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from harvester import export
from harvester.archive import COMPRESSED_BLOCK, Member
from harvester.archive import write as write_tar
from harvester.config import load_config
from harvester.db import open_database
from harvester.helper import Helper
from harvester.pipeline import export_only, harvest, verify_only
from tests.conftest import CREDENTIALS, write_config

# Fixed, so the dataset (and so the card and the archive) does not depend on the day.
UPLOADED_UNTIL = "2026-06-30"


def harvested(folder: Path, flickr, **sections):
    folder.mkdir(parents=True, exist_ok=True)
    sections.setdefault("flickr", {"per_page": 25, "retry_backoff": 0,
                                   "max_upload_date": UPLOADED_UNTIL})
    config = load_config(write_config(folder, **sections))
    harvest(config, CREDENTIALS)
    return config


def split_of(config) -> dict[str, list[str]]:
    return json.loads((config.output_dir / "train_test_split.json").read_text())


def test_hugging_face_datasets_loads_train_and_test_with_their_labels(tmp_path, flickr,
                                                                     monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    config = harvested(tmp_path, flickr)
    split = split_of(config)

    for loaded in (
        datasets.load_dataset("imagefolder", data_dir=str(config.output_dir / "splits"),
                              cache_dir=str(tmp_path / "cache")),
        # The dataset card's header points the folder itself at the split tree.
        datasets.load_dataset(str(config.output_dir), cache_dir=str(tmp_path / "cache2")),
    ):
        assert {name: part.num_rows for name, part in loaded.items()} == {
            "train": len(split["train"]), "test": len(split["test"])}
        for name in ("train", "test"):
            rows = loaded[name].to_list()
            assert sorted(row["file_name"] if "file_name" in row else
                          f"{row['label']}/{row['photo_id']}.jpg" for row in rows) == split[name]
            for row in rows:
                assert row["split"] == name
                assert row["page_url"] == (
                    f"https://www.flickr.com/photos/{row['owner']}/{row['photo_id']}")
                assert row["owner_name"] and row["license_name"] and row["title"]
        image = loaded["test"][0]["image"]
        assert image.mode == "RGB" and max(image.size) == 240
    assert {row["label"] for row in loaded["train"].to_list()} == {"cat", "dog"}
    numbered = loaded.cast_column("label", datasets.ClassLabel(names=["cat", "dog"]))
    for name in ("train", "test"):
        rows = numbered[name].to_list()
        assert sorted(f"{['cat', 'dog'][row['label']]}/{row['photo_id']}.jpg"
                      for row in rows) == split[name]


def test_split_folders_read_as_torchvision_image_folders(tmp_path, flickr):
    config = harvested(tmp_path, flickr)
    out = config.output_dir
    split = split_of(config)
    card = (out / "README.md").read_text()
    for name in ("train", "test"):
        root = out / "splits" / name
        # torchvision's ImageFolder.find_classes: the sorted sub-folders, numbered in order.
        classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        assert classes == ["cat", "dog"]
        samples = sorted(
            (f"{folder}/{image.name}", classes.index(folder))
            for folder in classes for image in (root / folder).iterdir())
        assert [path for path, _ in samples] == split[name]
        for path, label in samples:
            assert path.startswith(classes[label] + "/")
            # Hard links: the same file as the class tree's, no second copy on disk.
            assert os.path.samefile(root / path, out / path)
    assert "| 0 | cat |" in card and "| 1 | dog |" in card


def test_webdataset_shards_hold_every_photo_once_with_its_label(tmp_path, flickr):
    webdataset = pytest.importorskip("webdataset")
    config = harvested(tmp_path, flickr, export={"webdataset_shard_size": 7})
    out = config.output_dir
    split = split_of(config)
    shards = sorted(path.name for path in (out / "webdataset").iterdir())
    assert shards == [f"test-{n:06d}.tar" for n in range(1)] + [
        f"train-{n:06d}.tar" for n in range(4)]  # 6 test, 24 train photos
    for name in ("train", "test"):
        urls = sorted(str(path) for path in (out / "webdataset").glob(f"{name}-*.tar"))
        with tarfile.open(urls[0]) as tar:
            names = tar.getnames()
        assert len(names) == 3 * 7 or name == "test"
        assert all(member.count(".") == 1 for member in names)  # keys without dots
        samples = list(webdataset.WebDataset(urls, shardshuffle=False)
                       .decode("pil").to_tuple("__key__", "jpg", "cls", "json"))
        assert sorted(f"{meta['label']}/{key}.jpg" for key, _, _, meta in samples) == split[name]
        for key, image, label, meta in samples:
            assert meta["photo_id"] == key and meta["split"] == name
            assert label == meta["label_index"] == ["cat", "dog"].index(meta["label"])
            assert image.mode == "RGB" and max(image.size) == 240
        # Shuffled once, not class after class, so a shuffle buffer mixes classes.
        labels = [label for _, _, label, _ in samples]
        assert labels != sorted(labels)


def test_the_same_harvest_gives_the_same_archive_bytes(tmp_path, flickr):
    straight = harvested(tmp_path / "a", flickr)
    archive = (straight.output_dir / "dataset.tgz").read_bytes()

    # Another harvest of the same photos, stopped by Flickr midway and resumed.
    def fail_third_search(params):
        if (params.get("method") == "flickr.photos.search"
                and flickr.api_calls["flickr.photos.search"] == 2):
            flickr.fail_api(1)

    flickr.on_api_call = fail_third_search
    folder = tmp_path / "b"
    folder.mkdir()
    interrupted = load_config(write_config(folder, flickr={
        "per_page": 25, "retry_backoff": 0, "retries": 0, "max_upload_date": UPLOADED_UNTIL}))
    with pytest.raises(Exception, match="failed"):
        harvest(interrupted, CREDENTIALS)
    flickr.on_api_call = None
    harvest(interrupted, CREDENTIALS, command="resume")
    assert (interrupted.output_dir / "dataset.tgz").read_bytes() == archive

    export_only(straight)  # and exported again
    assert (straight.output_dir / "dataset.tgz").read_bytes() == archive
    digest = hashlib.sha256(archive).hexdigest()
    assert f"  dataset.tgz  {len(archive)}  {digest}" in (
        straight.output_dir / "summary.txt").read_text()
    with tarfile.open(straight.output_dir / "dataset.tgz") as tar:
        members = tar.getmembers()
    assert all(m.mtime == 0 and m.uid == m.gid == 0 and not m.uname for m in members)
    assert archive[3] == 0  # no flags: no file name in the gzip header
    assert archive[4:8] == b"\0\0\0\0"  # no time in the gzip header


def test_an_archive_larger_than_a_compressed_block_reads_back_with_plain_gzip(tmp_path):
    # Deflated a block at a time on a thread of its own: the blocks must join into one
    # gzip stream that any gunzip reads, here the standard library's zlib, not ISA-L.
    blocks = [random.Random(seed).randbytes(COMPRESSED_BLOCK // 2 + 1000)
              for seed in range(5)]
    members = [Member("images/", "dir")] + [
        Member(f"images/{number}.bin", "file", data=data) for number, data in enumerate(blocks)]
    target = tmp_path / "big.tgz"
    write_tar(target, members, compressed=True)
    assert target.stat().st_size > 2 * COMPRESSED_BLOCK
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(target.read_bytes()))) as tar:
        assert tar.getnames() == [member.name.rstrip("/") for member in members]
        assert [tar.extractfile(f"images/{number}.bin").read()
                for number in range(len(blocks))] == blocks
    write_tar(tmp_path / "again.tgz", members, compressed=True)
    assert (tmp_path / "again.tgz").read_bytes() == target.read_bytes()


def test_the_archive_holds_the_trees_of_the_layout(tmp_path, flickr):
    config = harvested(tmp_path, flickr)
    out = config.output_dir
    photos = split_of(config)["train"] + split_of(config)["test"]
    with tarfile.open(out / "dataset.tgz") as tar:
        members = {member.name: member for member in tar.getmembers()}
        extracted = tmp_path / "extracted"
        tar.extractall(extracted, filter="data")
    # Read front to back as from a pipe or an HTTP body (tarfile's stream mode, as
    # WebDataset and `curl ... | tar xz` read), every member is there too.
    with ((out / "dataset.tgz").open("rb") as raw,
          tarfile.open(fileobj=raw, mode="r|gz") as stream):
        assert [member.name for member in stream] == list(members)
    for path in photos:
        assert members[path].isfile()
    linked = [name for name, member in members.items() if name.startswith("splits/")
              and member.islnk()]
    assert len(linked) == len(photos)  # stored once, linked from the split tree
    assert linked == sorted(linked) and len({name.split("/")[1] for name in linked}) == 2
    for name in linked:
        assert (extracted / name).read_bytes() == (out / members[name].linkname).read_bytes()
    assert {"README.md", "ATTRIBUTION.md", "splits/train/metadata.jsonl"} <= set(members)

    # Only the split tree: the class folders stay on disk, but the archive ships one tree.
    write_config(tmp_path, flickr={"per_page": 25, "retry_backoff": 0,
                                   "max_upload_date": UPLOADED_UNTIL},
                 export={"layout": "splits"})
    export_only(load_config(tmp_path / "config.yaml"))
    with tarfile.open(out / "dataset.tgz") as tar:
        names = tar.getnames()
    assert not any(name.startswith(("cat/", "dog/")) for name in names)
    assert sum(name.endswith(".jpg") for name in names) == len(photos)

    write_config(tmp_path, flickr={"per_page": 25, "retry_backoff": 0,
                                   "max_upload_date": UPLOADED_UNTIL},
                 export={"layout": "classes"})
    classes_only = load_config(tmp_path / "config.yaml")
    export_only(classes_only)
    assert not (out / "splits").exists()  # nothing stale left to mistake for data
    assert verify_only(classes_only).ok


class CountingSink:
    """A progress sink that keeps each bar's total and how far it got."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def start(self, stage: str, total: int, done: int = 0) -> None:
        self.totals[stage], self.done[stage] = total, done

    def advance(self, stage: str, amount: int = 1) -> None:
        self.done[stage] += amount

    def finish(self, stage: str) -> None:
        pass


@pytest.mark.parametrize("layout", ["classes", "splits", "both"])
def test_the_archive_bar_counts_every_member_whatever_the_layout(tmp_path, flickr, layout):
    # Its total comes from counts in the database, not from listing the members first.
    config = harvested(tmp_path, flickr, export={"layout": layout})
    sink = CountingSink()
    db = open_database(config.database_path)
    try:
        export.run(db, config, sink)
    finally:
        db.close()
    with tarfile.open(config.output_dir / "dataset.tgz") as tar:
        members = len(tar.getmembers())
    assert sink.totals["archive"] == sink.done["archive"] == members
    assert verify_only(config).ok


def export_files(output_dir: Path) -> dict[str, bytes]:
    """Every file of the export, by path: the documents, trees, archive and summary."""
    return {str(path.relative_to(output_dir)): path.read_bytes()
            for path in sorted(output_dir.rglob("*"))
            if path.is_file() and not path.name.startswith(("harvest.", ".sources"))
            and ".sources" not in path.parts}


@pytest.mark.parametrize("layout", ["classes", "splits", "both"])
def test_a_large_datasets_documents_and_split_folders_are_written_by_a_helper_alike(
        tmp_path, flickr, monkeypatch, layout):
    # From HELPER_MIN_PHOTOS photos, a helper process writes them while this one builds the
    # archive: every export file is byte for byte what this process alone writes.
    config = harvested(tmp_path, flickr, export={"layout": layout})
    out = config.output_dir
    alone = export_files(out)
    for name in export.DOCUMENTS:
        (out / name).unlink()
    shutil.rmtree(out / "splits", ignore_errors=True)
    helpers = []
    monkeypatch.setattr(export, "HELPER_MIN_PHOTOS", 0)
    monkeypatch.setattr(export, "Helper", lambda *job: helpers.append(job) or Helper(*job))
    export_only(config)
    assert helpers == [(export.write_beside_archive, config)]
    assert export_files(out) == alone
    assert verify_only(config).ok


def test_what_a_killed_export_left_half_written_is_removed_by_the_next(tmp_path, flickr):
    config = harvested(tmp_path, flickr)
    out = config.output_dir
    left = [out / ".dataset.tgz.4242-139707455362752.part", out / ".urls_data.json.4242-1.part"]
    for path in left:
        path.write_bytes(b"half")
    (out / "notes.part").write_text("a user's file stays")

    export_only(config)

    assert not [path for path in left if path.exists()]
    assert (out / "notes.part").read_text() == "a user's file stays"
    assert verify_only(config).ok


def test_a_helper_that_cannot_write_stops_the_export_and_the_last_archive_stays(
        tmp_path, flickr, monkeypatch, cli):
    config = harvested(tmp_path, flickr)
    out = config.output_dir
    before = (out / "dataset.tgz").read_bytes()
    (out / "urls_data.json").unlink()
    (out / "urls_data.json").mkdir()  # in the way of the helper's document
    monkeypatch.setattr(export, "HELPER_MIN_PHOTOS", 0)
    result = cli("export", "-c", str(tmp_path / "config.yaml"))
    assert result.exit_code == 1
    assert "Is a directory" in result.stderr and "urls_data.json" in result.stderr
    assert (out / "dataset.tgz").read_bytes() == before
    assert not [path for path in out.rglob("*") if path.name.endswith((".part", ".new"))]


def test_every_class_has_its_folder_in_both_splits_even_without_photos(tmp_path, flickr):
    config = harvested(tmp_path, flickr,
                       train_test_split={"seed": 42, "type": "absolute", "test_size": 0})
    assert split_of(config)["test"] == []
    with tarfile.open(config.output_dir / "dataset.tgz") as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    for root in (config.output_dir, tmp_path / "extracted"):
        for name in ("train", "test"):
            folders = sorted(entry.name for entry in os.scandir(root / "splits" / name)
                             if entry.is_dir())
            assert folders == ["cat", "dog"]


def test_exports_refuse_a_config_of_another_harvest(tmp_path, flickr, cli):
    harvested(tmp_path, flickr)
    write_config(tmp_path, classes=[{"name": "cat", "count": 20}],
                 flickr={"per_page": 25, "retry_backoff": 0, "max_upload_date": UPLOADED_UNTIL})
    for command in ("export", "verify", "preview"):
        result = cli(command, "-c", str(tmp_path / "config.yaml"))
        assert result.exit_code == 2, (command, result.output)
        assert "config error: classes: differs from the harvest" in result.stderr


def test_the_dataset_card_says_what_the_data_is_and_where_it_came_from(
    tmp_path, flickr, monkeypatch
):
    monkeypatch.setenv("API_KEY", CREDENTIALS.api_key)
    config = harvested(tmp_path, flickr, classes=[
        {"name": "cat", "count": 20, "tags": ["cat", "-cartoon"]},
        {"name": "dog", "count": 10, "tags": ["dog", "puppy"]},
    ])
    card = (config.output_dir / "README.md").read_text()
    _, header, body = card.split("---\n", 2)
    metadata = yaml.safe_load(header)
    assert metadata["task_categories"] == ["image-classification"]
    assert "| 0 | cat | `cat`, `-cartoon` | 17 | 3 | 20 | 20 |" in body
    assert "| 1 | dog | `dog`, `puppy` | 7 | 3 | 10 | 10 |" in body
    assert "as it was on 2026-06-30 23:59 UTC" in body
    settings = yaml.safe_load(body.split("```yaml\n")[1].split("```")[0])
    assert settings["train_test_split"]["test_size"] == 3
    assert settings["classes"][0]["tags"] == ["cat", "-cartoon"]
    licenses = body.split("| license | photos |\n|---|---:|\n")[1].split("\n\n")[0]
    assert sum(int(line.rsplit("|", 2)[1]) for line in licenses.splitlines()) == 30
    assert "Labels are tags that photographers chose" in body
    # Secrets are in no file of the output folder, the database included.
    for path in config.output_dir.rglob("*"):
        if path.is_file():
            assert CREDENTIALS.api_key.encode() not in path.read_bytes(), path
            assert CREDENTIALS.api_secret.encode() not in path.read_bytes(), path


def test_verify_passes_a_fresh_export_and_names_every_difference(tmp_path, flickr, cli):
    config = harvested(tmp_path, flickr, export={"webdataset_shard_size": 10})
    out = config.output_dir
    config_path = str(tmp_path / "config.yaml")
    result = cli("verify", "-c", config_path)
    assert result.exit_code == 0, result.output
    assert "verified: " in result.output

    photos = split_of(config)["train"]
    (out / photos[0]).write_bytes(b"not the photo")
    (out / "splits" / "train" / photos[1]).unlink()
    (out / "attribution.csv").write_text("path\n")
    (out / "webdataset" / "train-000001.tar").unlink()
    (out / "dog" / "stray.jpg").write_bytes(b"?")
    result = cli("verify", "-c", config_path)
    assert result.exit_code == 1
    assert f"changed: {photos[0]}" in result.output
    assert f"missing: splits/train/{photos[1]}" in result.output
    assert "changed: attribution.csv" in result.output
    assert "missing: webdataset/train-000001.tar" in result.output
    assert "unexpected: dog/stray.jpg" in result.output
    assert "5 differences" in result.stderr


def test_verify_finds_an_archive_that_disagrees_with_the_database(tmp_path, flickr):
    config = harvested(tmp_path, flickr)
    out = config.output_dir
    with tarfile.open(out / "dataset.tgz") as tar:
        members = [(member, tar.extractfile(member).read() if member.isfile() else None)
                   for member in tar.getmembers()]
    dropped = members.pop(5)[0].name
    with tarfile.open(out / "dataset.tgz", "w:gz") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    problems = verify_only(config).problems
    assert "changed: dataset.tgz" in " ".join(problems)
    assert any(problem.startswith("archive: ") and dropped in problem for problem in problems)


def test_export_refuses_to_pack_an_image_changed_since_it_was_written(tmp_path, flickr, cli):
    config = harvested(tmp_path, flickr)
    out = config.output_dir
    before = (out / "dataset.tgz").read_bytes()
    photo = split_of(config)["test"][0]
    with Image.open(out / photo) as image:
        image.rotate(90).save(out / photo)
    result = cli("export", "-c", str(tmp_path / "config.yaml"))
    assert result.exit_code == 1
    assert f"{photo} changed since harvester wrote it" in result.stderr
    assert (out / "dataset.tgz").read_bytes() == before  # the last good archive is kept


def test_the_restore_command_export_suggests_restores_the_image(tmp_path, flickr, cli):
    config = harvested(tmp_path, flickr, export={"layout": "splits"})
    out = config.output_dir
    photo = split_of(config)["train"][0]
    original = (out / photo).read_bytes()
    (out / photo).write_bytes(original + b"tampered")
    result = cli("export", "-c", str(tmp_path / "config.yaml"))
    assert result.exit_code == 1
    restore = re.search(r"\((tar -xzOf [^)]*)\)", " ".join(result.stderr.split()))[1]
    assert restore == (f"tar -xzOf dataset.tgz splits/train/{photo} > {out / photo}")
    subprocess.run(restore, shell=True, cwd=out, check=True)
    assert (out / photo).read_bytes() == original
    assert cli("export", "-c", str(tmp_path / "config.yaml")).exit_code == 0


def test_verify_expects_photos_resized_but_not_yet_split(tmp_path, flickr):
    config = harvested(tmp_path, flickr)
    db = open_database(config.database_path)
    # As a harvest stopped after resizing and before the split leaves them.
    db.execute("UPDATE photos SET state = 'resized', split = NULL WHERE class = 'dog'")
    db.conn.commit()
    export_only(config)
    assert verify_only(config).problems == []


def test_rejected_repeats_leave_the_class_folders(tmp_path, flickr):
    picture = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 60, 30)).save(picture, "JPEG")
    served: list[str] = []

    def same_picture_for_three(photo_id):  # three photos, one picture: two are repeats
        if len(served) < 3 and photo_id not in served:
            served.append(photo_id)
            flickr.image_faults[photo_id] = (200, picture.getvalue())

    flickr.on_image_request = same_picture_for_three
    config = harvested(tmp_path, flickr)
    db = open_database(config.database_path)
    gone = [row[0] for row in db.execute(
        "SELECT path FROM photos WHERE state = 'rejected' AND path IS NOT NULL")]
    assert gone
    assert not any((config.output_dir / path).exists() for path in gone)
    on_disk = sorted(f"{p.parent.name}/{p.name}" for p in config.output_dir.glob("*/*.jpg")
                     if p.parent.name in ("cat", "dog"))
    assert on_disk == sorted(split_of(config)["train"] + split_of(config)["test"])


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None,
                    reason="Debian's chromium is not installed (`make test` installs it)")
def test_the_preview_page_shows_every_class_and_every_image_loads(tmp_path, flickr, cli):
    playwright = pytest.importorskip("playwright.sync_api")
    config = harvested(tmp_path, flickr)
    result = cli("preview", "-c", str(tmp_path / "config.yaml"), "--per-class", "12")
    assert result.exit_code == 0, result.output
    folder = config.output_dir / "preview"
    for name, shown in (("cat", 12), ("dog", 10)):
        with Image.open(folder / f"{name}.jpg") as sheet:
            assert sheet.format == "JPEG" and sheet.width > 8 * 150
            assert sheet.height > 150 * (2 if shown > 8 else 1)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium())
        page = browser.new_page()
        page.goto((folder / "index.html").as_uri(), wait_until="load")
        headings = page.locator("h2").all_inner_texts()
        images = page.evaluate(
            "() => [...document.images].map(i => [i.getAttribute('src'), i.complete && "
            "i.naturalWidth > 0, i.closest('section').id, i.closest('a').href])")
        browser.close()
    assert headings == ["cat", "dog"]
    assert len(images) == 12 + 10
    broken = [src for src, loaded, _, _ in images if not loaded]
    assert broken == []
    for src, _, section, link in images:
        assert src.startswith(f"../{section}/") and link.startswith("https://www.flickr.com/")
