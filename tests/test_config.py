from pathlib import Path

import pytest

from harvester.config import (
    ClassSpec,
    ConfigError,
    DownloadSpec,
    ExportSpec,
    FlickrSpec,
    ImageSpec,
    ResizeSpec,
    load_config,
)
from tests.conftest import write_config

SEED_CONFIG = """\
classes:
  - name: cat
    count: 20000
  - name: dog
    count: 10000

train_test_split:
  seed: 42

  # proportional - select n% of images from each class
  # absolute - select n images from each class
  type: 'absolute'
  test_size: 500
"""


def test_the_seed_projects_config_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SEED_CONFIG)
    config = load_config(path)
    assert [(spec.name, spec.count, spec.tags) for spec in config.classes] == [
        ("cat", 20000, ("cat",)),
        ("dog", 10000, ("dog",)),
    ]
    assert (config.split.seed, config.split.type, config.split.test_size) == (42, "absolute", 500)
    assert config.output_dir == tmp_path / "outputs"
    assert config.image.longest_side == 240
    assert config.flickr.per_page == 500
    assert config.flickr.retries == 5


def test_sections_left_out_take_the_defaults_the_readme_lists(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SEED_CONFIG)
    config = load_config(path)
    # As the code's own defaults are: a section left out is the same as written empty.
    assert (config.flickr, config.image, config.download, config.resize, config.export) == (
        FlickrSpec(), ImageSpec(), DownloadSpec(), ResizeSpec(), ExportSpec())
    assert config.download.workers == 128
    assert config.resize.workers == 0  # one worker process per core
    assert (config.image.longest_side, config.image.jpeg_quality) == (240, 90)


def test_output_dir_is_relative_to_the_config_files_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    config = load_config(write_config(tmp_path / "sub", output_dir="data/harvest"))
    assert config.output_dir == tmp_path / "sub" / "data" / "harvest"


@pytest.mark.parametrize(("percent", "class_size", "test"), [
    (29, 100, 29), (57, 100, 57), (0.29, 100, 29), (10, 59, 5), (33, 3, 0), (50, 3, 1),
])
def test_a_proportional_split_is_the_exact_floor(
    tmp_path: Path, percent: float, class_size: int, test: int
) -> None:
    split = {"seed": 1, "type": "proportional", "test_size": percent}
    config = load_config(write_config(tmp_path, train_test_split=split))
    assert config.split.test_count(class_size) == test


@pytest.mark.parametrize(("test_size", "fraction"), [(0.1, 0.1), (10, 0.1), (25, 0.25), (0, 0)])
def test_proportional_test_size_is_a_fraction_or_a_percentage(
    tmp_path: Path, test_size: float, fraction: float
) -> None:
    split = {"seed": 1, "type": "proportional", "test_size": test_size}
    config = load_config(write_config(tmp_path, train_test_split=split))
    assert config.split.test_size == pytest.approx(fraction)
    assert config.split.test_count(101) == int(fraction * 101)


@pytest.mark.parametrize(
    ("sections", "key", "reason"),
    [
        ({"colour": "red"}, "colour", "unknown key"),
        ({"classes": []}, "classes", "non-empty list"),
        ({"classes": "cat"}, "classes", "non-empty list"),
        ({"classes": [{"name": "cat"}]}, "classes[0].count", "is required"),
        ({"classes": [{"name": "cat", "count": 0}]}, "classes[0].count", "at least 1"),
        ({"classes": [{"name": "cat", "count": "ten"}]}, "classes[0].count", "whole number"),
        ({"classes": [{"name": "cat", "count": True}]}, "classes[0].count", "whole number"),
        ({"classes": [{"name": "cat", "count": 5, "size": 1}]}, "classes[0].size", "unknown key"),
        ({"classes": [{"name": "../x", "count": 5}]}, "classes[0].name", "not a safe folder"),
        ({"classes": [{"name": "a/b", "count": 5}]}, "classes[0].name", "not a safe folder"),
        ({"classes": [{"name": "", "count": 5}]}, "classes[0].name", "non-empty string"),
        ({"classes": [{"name": "..", "count": 5}]}, "classes[0].name", "not a safe folder"),
        ({"classes": [{"name": "cat", "count": 5}, {"name": "cat", "count": 5}]},
         "classes[1].name", "duplicate class name"),
        ({"classes": [{"name": "cat", "count": 5, "tags": []}]}, "classes[0].tags", "non-empty"),
        ({"classes": [{"name": "cat", "count": 5, "tags": ["a,b"]}]}, "classes[0].tags[0]",
         "comma"),
        ({"train_test_split": {"seed": 1, "type": "absolute", "test_size": 20}},
         "train_test_split.test_size", "leave no training photos for class 'cat'"),
        ({"train_test_split": {"seed": 1, "type": "proportional", "test_size": 100}},
         "train_test_split.test_size", "percentage below 100"),
        ({"train_test_split": {"seed": 1, "type": "random", "test_size": 2}},
         "train_test_split.type", "'absolute' or 'proportional'"),
        ({"train_test_split": {"seed": 1, "type": "absolute", "test_size": 0.5}},
         "train_test_split.test_size", "whole number"),
        ({"train_test_split": {"seed": 1}}, "train_test_split.test_size", "is required"),
        ({"image": {"longest_side": 0}}, "image.longest_side", "at least 16"),
        ({"image": {"jpeg_quality": 101}}, "image.jpeg_quality", "at most 95"),
        ({"flickr": {"sort": "best"}}, "flickr.sort", "not one of"),
        ({"flickr": {"license": 4}}, "flickr.license", "list of Flickr license ids"),
        ({"flickr": {"per_page": 1000}}, "flickr.per_page", "at most 500"),
        ({"download": {"workers": 0}}, "download.workers", "at least 1"),
        ({"download": {"workers": 257}}, "download.workers", "at most 256"),
        ({"download": {"timeout": float("nan")}}, "download.timeout", "must be a number"),
        ({"flickr": {"timeout": float("inf")}}, "flickr.timeout", "must be a number"),
        ({"flickr": {"timeout": 86400}}, "flickr.timeout", "at most 3600"),
        ({"classes": [{"name": "cat", "count": 10**20}]}, "classes[0].count", "at most"),
        ({"classes": [{"name": "harvest.db", "count": 5}]}, "classes[0].name",
         "name of a harvester file"),
        ({"classes": [{"name": "Summary.txt", "count": 5}]}, "classes[0].name",
         "name of a harvester file"),
        ({"classes": [{"name": "cat", "count": 5}, {"name": "Cat", "count": 5}]},
         "classes[1].name", "duplicate class name"),
        ({"classes": [{"name": "cat", "count": 5, "tags": ["-cartoon"]}]}, "classes[0].tags",
         "not only tags to exclude"),
        ({"classes": [{"name": "cat", "count": 5, "tags": ["cat", "-"]}]},
         "classes[0].tags[1]", "not a tag"),
        ({"classes": [{"name": "cat", "count": 5, "tags": ["Cat", "cat"]}]},
         "classes[0].tags", "lists a tag twice"),
        ({"classes": [{"name": "cat", "count": 5, "tag_mode": "some"}]},
         "classes[0].tag_mode", "'any' or 'all'"),
        ({"flickr": {"license": [4, 4]}}, "flickr.license", "lists an id twice"),
        ({"flickr": {"license": ["CC-BY"]}}, "flickr.license[0]", "whole number"),
        ({"flickr": {"content_types": [7]}}, "flickr.content_types[0]", "at most 3"),
        ({"flickr": {"content_types": []}}, "flickr.content_types", "at least one"),
        ({"flickr": {"content_type": 1}}, "flickr.content_type", "unknown key"),
        ({"flickr": {"min_upload_date": "last year"}}, "flickr.min_upload_date",
         "not a date like 2015-06-30"),
        ({"flickr": {"min_upload_date": "2020-01-01", "max_upload_date": "2019-12-31"}},
         "flickr.max_upload_date", "before min_upload_date"),
        ({"flickr": {"calls_per_hour": 0}}, "flickr.calls_per_hour", "at least 1"),
        ({"ambiguous_photos": "keep"}, "ambiguous_photos", "not one of reject, first_class"),
        ({"image": {"near_duplicate_distance": 8}}, "image.near_duplicate_distance",
         "at most 7"),
        ({"train_test_split": {"test_size": 1, "group_by": "camera"}},
         "train_test_split.group_by", "is not 'owner'"),
        ({"export": {"layout": "torchvision"}}, "export.layout", "not one of classes, splits"),
        ({"export": {"webdataset_shard_size": -1}}, "export.webdataset_shard_size",
         "at least 0"),
        ({"export": {"shards": 10}}, "export.shards", "unknown key"),
        ({"classes": [{"name": "splits", "count": 5}]}, "classes[0].name",
         "name of a harvester file"),
        ({"classes": [{"name": "README.md", "count": 5}]}, "classes[0].name",
         "name of a harvester file"),
    ],
)
def test_a_bad_config_names_the_key_and_the_reason(
    tmp_path: Path, sections: dict, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, **sections))
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_missing_file_and_broken_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("classes: [\n  - name: cat\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+\)"):
        load_config(broken)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_search_keys_load_as_flickr_takes_them(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("""\
classes:
  - name: cat
    count: 100
    tags: [cat, Kitten, -cartoon]
    tag_mode: all
train_test_split: {test_size: 10}
ambiguous_photos: first_class
flickr:
  license: [4, 5, 9, 10]
  content_types: [0, 1]
  min_upload_date: 2015-06-30
  max_upload_date: 2016-01-31
  calls_per_hour: 1800
""")
    config = load_config(path)
    cat = config.classes[0]
    assert (cat.query, cat.tag_mode) == ("cat,Kitten,-cartoon", "all")
    assert config.ambiguous_photos == "first_class"
    assert config.flickr.license == (4, 5, 9, 10) and config.flickr.content_types == (0, 1)
    assert config.flickr.calls_per_hour == 1800
    # A bare date: from the start of the first day to the end of the last, UTC.
    assert config.flickr.min_upload_date == 1435622400  # 2015-06-30T00:00:00Z
    assert config.flickr.max_upload_date == 1454284799  # 2016-01-31T23:59:59Z


def test_defaults_search_photos_only_at_the_api_keys_quota(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    assert config.flickr.content_types == (0,)
    assert config.flickr.calls_per_hour == 3600
    assert config.flickr.license == ()
    assert (config.flickr.min_upload_date, config.flickr.max_upload_date) == (None, None)
    assert config.ambiguous_photos == "reject"
    assert config.classes[0].tag_mode == "any"


@pytest.mark.parametrize(("tags", "mode", "photo_tags", "matches"), [
    (("cat", "kitten"), "any", "kitten sofa", True),
    (("cat", "kitten"), "all", "kitten sofa", False),
    (("cat", "kitten"), "all", "sofa cat kitten", True),
    (("cat", "-cartoon"), "any", "cat cartoon", False),
    (("golden retriever",), "any", "goldenretriever dog", True),  # as Flickr normalises tags
    (("Cat",), "any", "", False),
])
def test_a_class_matches_photos_by_their_tags_as_flickr_would(
    tags: tuple, mode: str, photo_tags: str, matches: bool
) -> None:
    spec = ClassSpec("x", 1, tags, tag_mode=mode)
    assert spec.matches(photo_tags.split()) is matches
