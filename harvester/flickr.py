"""The Flickr client: search pages in, plain records out. Retries what Flickr breaks."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import flickrapi
import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from harvester.config import ClassSpec, FlickrSpec
from harvester.errors import Stopped
from harvester.quota import Quota

DEFAULT_REST_URL = "https://api.flickr.com/services/rest/"
# Renditions whose url, width and height come with the search `extras`, smallest first.
# https://www.flickr.com/services/api/misc.urls.html
# (The square crops sq and q are left out: a crop would change what the photo shows.)
SIZE_SUFFIXES = ("t", "s", "n", "w", "m", "z", "c", "l", "h", "k", "o")
EXTRAS = ",".join(
    ["license", "date_upload", "owner_name", "tags", "media"]
    + [f"url_{suffix}" for suffix in SIZE_SUFFIXES]
)
# 0/105: service unavailable, 106: write failed, 10/201: search temporarily unavailable.
TRANSIENT_CODES = frozenset({0, 10, 105, 106, 201})
HTTP_STATUS = re.compile(r"Status code (\d+)")
WHAT_TO_FIX = {
    100: "Flickr rejected the API key: check API_KEY and API_SECRET",
    116: "Flickr rejected a URL: check FLICKR_API_URL",
}

log = logging.getLogger(__name__)


class FlickrFailure(Stopped):
    """Flickr cannot be used right now; the run stops and `harvester resume` continues it."""


class FlickrUnavailable(FlickrFailure):
    """Flickr kept failing after every retry."""


class FlickrRefused(FlickrFailure):
    """Flickr answered with an error that retrying will not fix."""


class MalformedResponse(ValueError):
    """An answer that is not the shape Flickr documents."""


@dataclass(frozen=True)
class FoundPhoto:
    photo_id: str
    owner: str | None
    owner_name: str | None
    license: str | None
    title: str | None
    page_url: str | None  # the photo's page on Flickr, for attribution
    tags: str | None
    date_upload: int | None
    url: str | None  # the rendition to download; None when no size is large enough
    url_width: int | None
    url_height: int | None


@dataclass(frozen=True)
class SearchPage:
    page: int | None  # None when Flickr did not say
    pages: int | None
    total: int
    photos: list[FoundPhoto]
    malformed: int  # records without a usable id, skipped


@dataclass(frozen=True)
class License:
    license_id: str
    name: str
    url: str | None


class FlickrClient:
    def __init__(
        self,
        api_key: str,
        api_secret: str,
        spec: FlickrSpec,
        rest_url: str | None = None,
        quota: Quota | None = None,
    ) -> None:
        self._api = flickrapi.FlickrAPI(
            api_key, api_secret, format="parsed-json", store_token=False, timeout=spec.timeout
        )
        self._api.REST_URL = rest_url or DEFAULT_REST_URL
        self._spec = spec
        self._quota = quota

    def search(
        self, spec: ClassSpec, uploaded: tuple[int, int], page: int, longest_side: int
    ) -> SearchPage:
        """One page of the class's query among photos uploaded in `uploaded` (inclusive)."""
        params: dict[str, Any] = {
            "tags": spec.query,
            "tag_mode": spec.tag_mode,
            "min_upload_date": uploaded[0],
            "max_upload_date": uploaded[1],
            "page": page,
            "per_page": self._spec.per_page,
            "media": "photos",
            "extras": EXTRAS,
            "sort": self._spec.sort,
            "safe_search": self._spec.safe_search,
            "content_types": ",".join(map(str, self._spec.content_types)),
        }
        if self._spec.license:
            params["license"] = ",".join(map(str, self._spec.license))
        return self._call(
            "flickr.photos.search", lambda body: parse_search_page(body, longest_side), params
        )

    def licenses(self) -> list[License]:
        return self._call("flickr.photos.licenses.getInfo", parse_licenses, {})

    def _call(
        self, method: str, parse: Callable[[Mapping[str, Any]], Any], params: dict[str, Any]
    ) -> Any:
        def attempt() -> Any:
            call_id = self._quota.spend(method) if self._quota else None
            try:
                body = self._api.do_flickr_call(method, **params)
                return parse(body)
            except (flickrapi.FlickrError, requests.RequestException, MalformedResponse):
                self._failed(call_id)
                raise
            except (KeyError, TypeError, AttributeError, ValueError) as error:
                # An answer of a shape neither flickrapi nor we expect: retried like garbage.
                self._failed(call_id)
                raise MalformedResponse(f"unexpected answer ({type(error).__name__}: {error})"
                                        ) from error

        retrying = Retrying(
            stop=stop_after_attempt(self._spec.retries + 1),
            # 1, 2, 4, 8... times retry_backoff, plus jitter so parallel harvests spread out.
            wait=wait_exponential(multiplier=self._spec.retry_backoff, max=120)
            + wait_random(0, self._spec.retry_backoff),
            retry=retry_if_exception(is_transient),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except flickrapi.FlickrError as error:
            raise _failure(method, error, self._api.REST_URL, self._spec.retries) from None
        except (requests.RequestException, MalformedResponse) as error:
            raise FlickrUnavailable(
                f"{method} failed {self._spec.retries + 1} times; last error: {error}"
            ) from None


    def _failed(self, call_id: int | None) -> None:
        if self._quota and call_id is not None:
            self._quota.failed(call_id)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: Flickr's own 'try later' codes, 429/5xx, network trouble, garbled answers."""
    if isinstance(error, flickrapi.FlickrError):
        if error.code is not None:
            return error.code in TRANSIENT_CODES
        status = _http_status(error)
        return status is None or status == 429 or status >= 500
    # A JSON decode error (an HTML error page with status 200) is a ValueError too.
    return isinstance(error, requests.RequestException | ValueError)


def _failure(
    method: str, error: flickrapi.FlickrError, rest_url: str, retries: int
) -> FlickrFailure:
    if is_transient(error):
        return FlickrUnavailable(f"{method} failed {retries + 1} times; last error: {error}")
    status = _http_status(error)
    if status is not None:
        return FlickrRefused(f"{method}: HTTP {status} from {rest_url}: check FLICKR_API_URL")
    advice = WHAT_TO_FIX.get(error.code or -1, "check the flickr: section of the config")
    return FlickrRefused(f"{method}: {error} ({advice})")


def _http_status(error: flickrapi.FlickrError) -> int | None:
    # flickrapi reports a non-200 answer only in its message.
    match = HTTP_STATUS.search(str(error))
    return int(match.group(1)) if match else None


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0
    log.warning("Flickr call failed (%s); retry %d in %.1fs", error, state.attempt_number, delay)


def parse_search_page(body: Mapping[str, Any], longest_side: int) -> SearchPage:
    photos = body.get("photos") if isinstance(body, Mapping) else None
    if not isinstance(photos, Mapping) or not isinstance(photos.get("photo", []), list):
        raise MalformedResponse("search answer has no photos list")
    records = photos.get("photo", [])
    found = [parse_photo(record, longest_side) for record in records]
    usable = [photo for photo in found if photo is not None]
    return SearchPage(
        page=_int(photos.get("page")),
        pages=_int(photos.get("pages")),
        total=_int(photos.get("total")) or 0,
        photos=usable,
        malformed=len(found) - len(usable),
    )


def parse_photo(record: Any, longest_side: int) -> FoundPhoto | None:
    if not isinstance(record, Mapping):
        return None
    photo_id = record.get("id")
    # Flickr ids are digits; anything else is not a photo we can name a file after.
    if isinstance(photo_id, bool) or not isinstance(photo_id, str | int):
        return None
    if not str(photo_id).isascii() or not str(photo_id).isdigit():
        return None
    rendition = pick_rendition(record, longest_side)
    url, width, height = rendition if rendition else (None, None, None)
    return FoundPhoto(
        photo_id=str(photo_id),
        owner=_text(record.get("owner")),
        owner_name=_text(record.get("ownername")),
        license=_text(record.get("license")),
        title=_text(record.get("title")),
        page_url=photo_page(record.get("owner"), str(photo_id)),
        tags=_text(record.get("tags")),
        date_upload=_int(record.get("dateupload")),
        url=url,
        url_width=width,
        url_height=height,
    )


def photo_page(owner: Any, photo_id: str) -> str | None:
    if not isinstance(owner, str) or not owner:
        return None
    return f"https://www.flickr.com/photos/{owner}/{photo_id}"


def parse_licenses(body: Mapping[str, Any]) -> list[License]:
    licenses = body.get("licenses") if isinstance(body, Mapping) else None
    records = licenses.get("license") if isinstance(licenses, Mapping) else None
    if not isinstance(records, list):
        raise MalformedResponse("licenses answer has no license list")
    return [
        License(license_id=str(record["id"]), name=str(record["name"]),
                url=_text(record.get("url")) or None)
        for record in records
        if isinstance(record, Mapping) and "id" in record and record.get("name")
    ]


def pick_rendition(record: Mapping[str, Any], longest_side: int) -> tuple[str, int, int] | None:
    """The smallest rendition whose longest side reaches `longest_side`, if any."""
    usable = []
    for suffix in SIZE_SUFFIXES:
        url = record.get(f"url_{suffix}")
        if not isinstance(url, str) or not url:
            continue
        width, height = _int(record.get(f"width_{suffix}")), _int(record.get(f"height_{suffix}"))
        if width and height and max(width, height) >= longest_side:
            usable.append((max(width, height), url, width, height))
    if not usable:
        return None
    _, url, width, height = min(usable)
    return url, width, height


def _int(value: Any) -> int | None:
    # Flickr sends numbers as ints or as strings, depending on the field and the day.
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)
