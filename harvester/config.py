"""config.yaml -> frozen dataclasses. Every check names the key and the reason."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import yaml

FLICKR_SORTS = (
    "relevance",
    "date-posted-asc",
    "date-posted-desc",
    "date-taken-asc",
    "date-taken-desc",
    "interestingness-desc",
    "interestingness-asc",
)
# A class name becomes a folder name and a label: keep it to one safe path segment.
CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Names the output folder already uses for its own files.
RESERVED_NAMES = frozenset({
    "harvest.db", "harvest.db-wal", "harvest.db-shm", "harvest.lock", "train_test_split.json",
    "urls_data.json", "summary.txt", "dataset.tgz", "config.yaml", "attribution.csv",
    "attribution.md", "readme.md", "splits", "webdataset", "preview",
})
MAX_COUNT = 10_000_000
# The flickr: keys that decide which photos a search finds, and so the dataset.
SEARCH_DEFINING = (
    "license", "sort", "safe_search", "content_types", "min_upload_date", "max_upload_date",
    "per_page",
)
AMBIGUOUS_POLICIES = ("reject", "first_class")
# Which image trees the output folder and dataset.tgz hold: `classes` is <class>/<id>.jpg,
# `splits` is splits/{train,test}/<class>/<id>.jpg (Hugging Face imagefolder, torchvision
# ImageFolder), made of hard links to the class tree's files.
LAYOUTS = ("classes", "splits", "both")
MAX_SECONDS = 3600.0


class ConfigError(Exception):
    """The config cannot be used; `key` says where, `reason` says why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class ClassSpec:
    name: str
    count: int
    tags: tuple[str, ...]  # as Flickr takes them: a leading '-' excludes photos with that tag
    tag_mode: Literal["any", "all"] = "any"  # a photo needs any one, or all, of the other tags

    @property
    def query(self) -> str:
        """The `tags` parameter of the class's search."""
        return ",".join(self.tags)

    def matches(self, photo_tags: Iterable[str]) -> bool:
        """Whether a photo with these (Flickr-normalised) tags is one this class searches for."""
        have = set(photo_tags)
        wanted = [normalise_tag(tag) for tag in self.tags if not tag.startswith("-")]
        unwanted = {normalise_tag(tag[1:]) for tag in self.tags if tag.startswith("-")}
        found = all if self.tag_mode == "all" else any
        return found(tag in have for tag in wanted) and not have & unwanted


def normalise_tag(tag: str) -> str:
    """A tag as Flickr lists it in a photo's `tags`: lower case, no spaces or punctuation."""
    return "".join(char for char in tag.lower() if char.isalnum() or char in ":=")


@dataclass(frozen=True)
class SplitSpec:
    seed: int
    type: Literal["absolute", "proportional"]
    test_size: float  # a photo count (absolute) or a fraction of the class (proportional)
    group_by: Literal["owner"] | None = None  # keep each group's photos on one side

    def test_count(self, class_size: int) -> int:
        """How many of a class's `class_size` photos go to test; at least one stays in train."""
        if self.type == "absolute":
            wanted = int(self.test_size)
        else:
            # Exact decimal arithmetic: 29% of 100 photos is 29, never 28.999... -> 28.
            wanted = math.floor(Fraction(str(self.test_size)) * class_size)
        return max(0, min(wanted, class_size - 1))


@dataclass(frozen=True)
class FlickrSpec:
    license: tuple[int, ...] = ()  # license ids to accept; empty: any license
    sort: str = "relevance"
    safe_search: int = 1
    content_types: tuple[int, ...] = (0,)  # 0 photos, 1 screenshots, 2 other, 3 virtual photos
    min_upload_date: int | None = None  # unix time, inclusive; None: since Flickr began
    max_upload_date: int | None = None  # unix time, inclusive; None: when the harvest began
    per_page: int = 500
    calls_per_hour: int = 3600  # the API key's quota, shared by every run of the harvest
    retries: int = 5  # after the first try, as the seed's scripts did
    retry_backoff: float = 1.0  # seconds before the first retry; doubles each time
    timeout: float = 30.0


@dataclass(frozen=True)
class ImageSpec:
    longest_side: int = 240
    jpeg_quality: int = 90
    # Perceptual hashes this many bits apart or closer are the same picture (0-7).
    near_duplicate_distance: int = 6


# Downloads at once, at most. With images that take 100 ms each to come, as Flickr's do
# from much of the world, 128 (the default) keep two cores nearly as busy as a local host
# does, and 256 no busier; from a host that answers at once, 32 to 256 harvest alike
# (bench/latency.py). Each is a thread of a worker process, with memory of its own.
MAX_DOWNLOAD_WORKERS = 256


@dataclass(frozen=True)
class DownloadSpec:
    workers: int = 128  # concurrent downloads, shared out among the worker processes
    timeout: float = 30.0
    retries: int = 3
    retry_backoff: float = 0.5  # seconds; doubles with each retry
    max_attempts: int = 3  # tries per photo, across runs, before timeouts and 5xx fail it


@dataclass(frozen=True)
class ResizeSpec:
    workers: int = 0  # 0: one per CPU core


@dataclass(frozen=True)
class ExportSpec:
    layout: Literal["classes", "splits", "both"] = "both"
    webdataset_shard_size: int = 0  # photos per WebDataset tar shard; 0: no shards

    @property
    def class_tree(self) -> bool:
        return self.layout in ("classes", "both")

    @property
    def split_tree(self) -> bool:
        return self.layout in ("splits", "both")


@dataclass(frozen=True)
class Config:
    source: Path
    output_dir: Path
    classes: tuple[ClassSpec, ...]
    split: SplitSpec
    flickr: FlickrSpec = FlickrSpec()
    image: ImageSpec = ImageSpec()
    download: DownloadSpec = DownloadSpec()
    resize: ResizeSpec = ResizeSpec()
    export: ExportSpec = ExportSpec()
    # A photo whose tags match two classes: "reject" it from both, or keep it in the
    # "first_class" of the config that it matches.
    ambiguous_photos: Literal["reject", "first_class"] = "reject"

    @property
    def database_path(self) -> Path:
        return self.output_dir / "harvest.db"

    def class_spec(self, name: str) -> ClassSpec:
        return next(spec for spec in self.classes if spec.name == name)

    def harvest_definition(self) -> dict[str, Any]:
        """What decides the dataset's content: stored with each run, compared on continue."""
        return {
            "classes": [dataclasses.asdict(spec) for spec in self.classes],
            "train_test_split": dataclasses.asdict(self.split),
            "image": dataclasses.asdict(self.image),
            "flickr": {
                key: value
                for key, value in dataclasses.asdict(self.flickr).items()
                # per_page too: the search cursors count pages of this size.
                if key in SEARCH_DEFINING
            },
            "ambiguous_photos": self.ambiguous_photos,
        }


def load_config(path: str | os.PathLike[str]) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config", f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("config", f"cannot read {path}: {error}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ConfigError("config", f"{path} is not valid YAML{line}") from None
    return parse_config(raw, source=path)


def parse_config(raw: Any, source: Path) -> Config:
    top = _mapping(raw, "config")
    _no_unknown_keys(
        top,
        "",
        {"output_dir", "classes", "train_test_split", "flickr", "image", "download", "resize",
         "export", "ambiguous_photos"},
    )
    _require(top, "", ("classes", "train_test_split"))
    output_dir = Path(_string(top.get("output_dir", "outputs"), "output_dir"))
    if not output_dir.is_absolute():
        output_dir = source.resolve().parent / output_dir
    classes = _classes(top["classes"])
    split = _split(top["train_test_split"])
    for spec in classes:
        if split.type == "absolute" and split.test_size >= spec.count:
            raise ConfigError(
                "train_test_split.test_size",
                f"{int(split.test_size)} test photos leave no training photos "
                f"for class {spec.name!r} (count {spec.count})",
            )
    ambiguous = top.get("ambiguous_photos", "reject")
    if ambiguous not in AMBIGUOUS_POLICIES:
        raise ConfigError(
            "ambiguous_photos", f"{ambiguous!r} is not one of {', '.join(AMBIGUOUS_POLICIES)}"
        )
    return Config(
        source=source,
        output_dir=output_dir,
        classes=classes,
        split=split,
        flickr=_flickr(top.get("flickr", {})),
        image=_image(top.get("image", {})),
        download=_download(top.get("download", {})),
        resize=_resize(top.get("resize", {})),
        export=_export(top.get("export", {})),
        ambiguous_photos=ambiguous,
    )


def _classes(raw: Any) -> tuple[ClassSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("classes", "must be a non-empty list of classes")
    specs: list[ClassSpec] = []
    for index, item in enumerate(raw):
        key = f"classes[{index}]"
        entry = _mapping(item, key)
        _no_unknown_keys(entry, key, {"name", "count", "tags", "tag_mode"})
        _require(entry, key, ("name", "count"))
        name = _string(entry["name"], f"{key}.name")
        if not CLASS_NAME.match(name) or name in (".", ".."):
            raise ConfigError(
                f"{key}.name",
                f"{name!r} is not a safe folder name: use letters, digits, '_', '-', '.' "
                "and start with a letter or digit",
            )
        if name.lower() in RESERVED_NAMES:
            raise ConfigError(f"{key}.name", f"{name!r} is the name of a harvester file")
        # Case-insensitive file systems (macOS, Windows) would merge Cat/ and cat/.
        if any(spec.name.lower() == name.lower() for spec in specs):
            raise ConfigError(f"{key}.name", f"duplicate class name {name!r}")
        count = _integer(entry["count"], f"{key}.count", minimum=1, maximum=MAX_COUNT)
        tags = _tags(entry.get("tags", [name]), f"{key}.tags")
        tag_mode = entry.get("tag_mode", "any")
        if tag_mode not in ("any", "all"):
            raise ConfigError(f"{key}.tag_mode", f"{tag_mode!r} is not 'any' or 'all'")
        specs.append(ClassSpec(name=name, count=count, tags=tags, tag_mode=tag_mode))
    return tuple(specs)


def _tags(raw: Any, key: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(key, "must be a non-empty list of tags")
    tags = []
    for index, tag in enumerate(raw):
        tag = _string(tag, f"{key}[{index}]").strip()
        if not normalise_tag(tag.removeprefix("-")) or "," in tag:
            raise ConfigError(
                f"{key}[{index}]", f"{tag!r} is not a tag (empty, only punctuation, or a comma)"
            )
        tags.append(tag)
    if len({normalise_tag(tag) for tag in tags}) != len(tags):
        raise ConfigError(key, "lists a tag twice")
    if all(tag.startswith("-") for tag in tags):
        raise ConfigError(key, "needs a tag to search for, not only tags to exclude ('-tag')")
    return tuple(tags)


def _split(raw: Any) -> SplitSpec:
    key = "train_test_split"
    entry = _mapping(raw, key)
    _no_unknown_keys(entry, key, {"seed", "type", "test_size", "group_by"})
    _require(entry, key, ("test_size",))
    seed = _integer(entry.get("seed", 42), f"{key}.seed")
    split_type = entry.get("type", "absolute")
    if split_type not in ("absolute", "proportional"):
        raise ConfigError(f"{key}.type", f"{split_type!r} is not 'absolute' or 'proportional'")
    size_key = f"{key}.test_size"
    if split_type == "absolute":
        test_size: float = _integer(entry["test_size"], size_key, minimum=0)
    else:
        test_size = _number(entry["test_size"], size_key)
        # The seed's configs wrote either 0.1 or 10 for ten percent.
        if test_size >= 1:
            test_size /= 100
        if not 0 <= test_size < 1:
            raise ConfigError(
                size_key, "must be a fraction below 1 (0.1) or a percentage below 100 (10)"
            )
    group_by = entry.get("group_by")
    if group_by not in (None, "owner"):
        raise ConfigError(f"{key}.group_by", f"{group_by!r} is not 'owner'")
    return SplitSpec(seed=seed, type=split_type, test_size=test_size, group_by=group_by)


def _flickr(raw: Any) -> FlickrSpec:
    key = "flickr"
    entry = _mapping(raw, key)
    defaults = FlickrSpec()
    _no_unknown_keys(entry, key, {field.name for field in dataclasses.fields(FlickrSpec)})
    sort = entry.get("sort", defaults.sort)
    if sort not in FLICKR_SORTS:
        raise ConfigError(f"{key}.sort", f"{sort!r} is not one of {', '.join(FLICKR_SORTS)}")
    content_types = _id_list(
        entry.get("content_types", list(defaults.content_types)), f"{key}.content_types", 3,
        "a list of Flickr content types (0 photos, 1 screenshots, 2 other, 3 virtual photos)",
    )
    if not content_types:
        raise ConfigError(f"{key}.content_types", "must name at least one content type")
    uploaded_from = _upload_date(entry.get("min_upload_date"), f"{key}.min_upload_date", False)
    uploaded_to = _upload_date(entry.get("max_upload_date"), f"{key}.max_upload_date", True)
    if uploaded_from is not None and uploaded_to is not None and uploaded_from > uploaded_to:
        raise ConfigError(f"{key}.max_upload_date", "is before min_upload_date")
    return FlickrSpec(
        license=_id_list(
            entry.get("license", []), f"{key}.license", None,
            "a list of Flickr license ids, like [4, 5, 9, 10]",
        ),
        sort=sort,
        safe_search=_integer(
            entry.get("safe_search", defaults.safe_search), f"{key}.safe_search", 1, 3
        ),
        content_types=content_types,
        min_upload_date=uploaded_from,
        max_upload_date=uploaded_to,
        per_page=_integer(entry.get("per_page", defaults.per_page), f"{key}.per_page", 1, 500),
        calls_per_hour=_integer(
            entry.get("calls_per_hour", defaults.calls_per_hour), f"{key}.calls_per_hour", 1,
            1_000_000,
        ),
        retries=_integer(entry.get("retries", defaults.retries), f"{key}.retries", 0, 20),
        retry_backoff=_number(
            entry.get("retry_backoff", defaults.retry_backoff), f"{key}.retry_backoff", 0, 600
        ),
        timeout=_number(entry.get("timeout", defaults.timeout), f"{key}.timeout", 0.1,
                        MAX_SECONDS),
    )


def _id_list(raw: Any, key: str, maximum: int | None, what: str) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise ConfigError(key, f"must be {what}")
    ids = tuple(
        _integer(value, f"{key}[{index}]", 0, maximum) for index, value in enumerate(raw)
    )
    if len(set(ids)) != len(ids):
        raise ConfigError(key, "lists an id twice")
    return ids


def _upload_date(raw: Any, key: str, end_of_day: bool) -> int | None:
    """An upload date as unix time: from a date (2015-06-30), a datetime, or unix seconds.

    A bare date as the end of a range means the whole of that day.
    """
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = (datetime.fromisoformat(raw) if "T" in raw or " " in raw.strip()
                   else date.fromisoformat(raw))
        except ValueError:
            raise ConfigError(key, f"{raw!r} is not a date like 2015-06-30") from None
    if isinstance(raw, datetime):
        moment = raw if raw.tzinfo else raw.replace(tzinfo=UTC)
    elif isinstance(raw, date):
        moment = datetime.combine(raw, time.max if end_of_day else time.min, tzinfo=UTC)
    elif isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    else:
        raise ConfigError(key, f"must be a date like 2015-06-30, not {_kind(raw)}")
    return int(moment.timestamp())


def _image(raw: Any) -> ImageSpec:
    key = "image"
    entry = _mapping(raw, key)
    defaults = ImageSpec()
    _no_unknown_keys(entry, key, {field.name for field in dataclasses.fields(ImageSpec)})
    return ImageSpec(
        longest_side=_integer(
            entry.get("longest_side", defaults.longest_side), f"{key}.longest_side", 16, 4096
        ),
        jpeg_quality=_integer(
            entry.get("jpeg_quality", defaults.jpeg_quality), f"{key}.jpeg_quality", 1, 95
        ),
        near_duplicate_distance=_integer(
            entry.get("near_duplicate_distance", defaults.near_duplicate_distance),
            f"{key}.near_duplicate_distance", 0, 7,
        ),
    )


def _download(raw: Any) -> DownloadSpec:
    key = "download"
    entry = _mapping(raw, key)
    defaults = DownloadSpec()
    _no_unknown_keys(entry, key, {field.name for field in dataclasses.fields(DownloadSpec)})
    return DownloadSpec(
        workers=_integer(entry.get("workers", defaults.workers), f"{key}.workers", 1,
                         MAX_DOWNLOAD_WORKERS),
        timeout=_number(entry.get("timeout", defaults.timeout), f"{key}.timeout", 0.1,
                        MAX_SECONDS),
        retries=_integer(entry.get("retries", defaults.retries), f"{key}.retries", 0, 20),
        retry_backoff=_number(
            entry.get("retry_backoff", defaults.retry_backoff), f"{key}.retry_backoff", 0, 600
        ),
        max_attempts=_integer(
            entry.get("max_attempts", defaults.max_attempts), f"{key}.max_attempts", 1, 100
        ),
    )


def _resize(raw: Any) -> ResizeSpec:
    key = "resize"
    entry = _mapping(raw, key)
    _no_unknown_keys(entry, key, {"workers"})
    return ResizeSpec(workers=_integer(entry.get("workers", ResizeSpec().workers),
                                       f"{key}.workers", 0, 256))


def _export(raw: Any) -> ExportSpec:
    key = "export"
    entry = _mapping(raw, key)
    defaults = ExportSpec()
    _no_unknown_keys(entry, key, {field.name for field in dataclasses.fields(ExportSpec)})
    layout = entry.get("layout", defaults.layout)
    if layout not in LAYOUTS:
        raise ConfigError(f"{key}.layout", f"{layout!r} is not one of {', '.join(LAYOUTS)}")
    return ExportSpec(
        layout=layout,
        webdataset_shard_size=_integer(
            entry.get("webdataset_shard_size", defaults.webdataset_shard_size),
            f"{key}.webdataset_shard_size", 0, 1_000_000,
        ),
    )


def _mapping(raw: Any, key: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(key, f"must be a mapping of keys to values, not {_kind(raw)}")
    return raw


def _no_unknown_keys(entry: Mapping[str, Any], key: str, known: set[str]) -> None:
    for name in entry:
        if name not in known:
            where = f"{key}.{name}" if key else str(name)
            raise ConfigError(where, f"unknown key (expected one of: {', '.join(sorted(known))})")


def _require(entry: Mapping[str, Any], key: str, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in entry:
            raise ConfigError(f"{key}.{name}" if key else name, "is required")


def _string(raw: Any, key: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(key, f"must be a non-empty string, not {_kind(raw)}")
    return raw


def _integer(raw: Any, key: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(key, f"must be a whole number, not {_kind(raw)}")
    if minimum is not None and raw < minimum:
        raise ConfigError(key, f"must be at least {minimum}, not {raw}")
    if maximum is not None and raw > maximum:
        raise ConfigError(key, f"must be at most {maximum}, not {raw}")
    return raw


def _number(
    raw: Any, key: str, minimum: float | None = None, maximum: float | None = None
) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ConfigError(key, f"must be a number, not {_kind(raw)}")
    if minimum is not None and raw < minimum:
        raise ConfigError(key, f"must be at least {minimum}, not {raw}")
    if maximum is not None and raw > maximum:
        raise ConfigError(key, f"must be at most {maximum:g}, not {raw}")
    return float(raw)


def _kind(raw: Any) -> str:
    if raw is None:
        return "nothing"
    if isinstance(raw, str):
        return f"the text {raw!r}"
    return f"{type(raw).__name__} {raw!r}"
