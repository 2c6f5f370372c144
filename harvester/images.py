"""Source bytes in, a normalised dataset JPEG (or why it is unusable) out: Pillow, and
OpenCV's resize for a small last step."""

from __future__ import annotations

import hashlib
import io
import math
import threading
import warnings
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


@dataclass(frozen=True)
class Normalised:
    jpeg: bytes
    width: int
    height: int
    pixels_sha256: str  # of the normalised pixels: the same picture under any bytes
    phash: str  # 64-bit perceptual hash, 16 hex digits: near-identical pictures are close
    kept: bool = False  # `jpeg` is the source's own bytes, which needed no change (see _keepable)


# warnings.catch_warnings swaps the process's filters: threads normalising at once would
# restore each other's, so a source's header is read under this lock (it is quick).
_OPENING = threading.Lock()


@dataclass(frozen=True)
class Unusable:
    reason: str  # corrupt, too_small, too_large
    detail: str


def normalise(data: bytes, longest_side: int, quality: int) -> Normalised | Unusable:
    """An upright RGB JPEG whose longest side is exactly `longest_side`; never upscaled."""
    try:
        # Above Image.MAX_IMAGE_PIXELS (89 million) a source is refused from its header,
        # before it is decoded: a decompression bomb (a few KB of PNG that unpack to
        # gigabytes), or no photo worth the memory. Pillow only warns below twice the
        # limit: those are refused too.
        with _OPENING, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            width, height = image.size
            if max(width, height) < longest_side:
                return Unusable("too_small", f"{width}x{height} is below {longest_side}px")
            kept = _keepable(image, longest_side, quality)
            if kept:
                # Already what the dataset wants: re-encoding would only lose detail.
                resized, jpeg, target = image, data, (width, height)
            else:
                scale = longest_side / max(width, height)
                # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale straight from the DCT
                # coefficients, never below the requested size: most of the speed of resizing.
                image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
                ImageOps.exif_transpose(image, in_place=True)  # upright, without a copy
                rgb = _to_rgb(image)
                target = fitted_size(rgb.width, rgb.height, longest_side)
                resized = _last_step(rgb, target)
                out = io.BytesIO()
                # No exif= or icc_profile=, and an empty comment (Pillow copies the
                # source's): the output carries no metadata. (optimize=True would save a
                # few percent of bytes for twice the encoding time.)
                resized.save(out, "JPEG", quality=quality, comment=b"")
                jpeg = out.getvalue()
            pixels = hashlib.sha256(
                f"{resized.width}x{resized.height}:".encode() + resized.tobytes()).hexdigest()
            # pHash looks at 32x32 pixels: the picture is shrunk most of the way there
            # cheaply first (a box average), so only the last step is a Lanczos filter.
            phash = str(imagehash.phash(
                resized.convert("L").reduce(max(1, min(resized.size) // 32))))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return Unusable("too_large", str(error))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        return Unusable("corrupt", f"{type(error).__name__}: {error}")
    return Normalised(jpeg, *target, pixels_sha256=pixels, phash=phash, kept=kept)


# A last step at least this close to 1 is OpenCV's plain bilinear resize (see _last_step).
SMALL_STEP = 0.9


def _last_step(rgb: Image.Image, target: tuple[int, int]) -> Image.Image:
    """`rgb` resized to `target`: by a factor between 1/2 and 1 after JPEG draft mode, by
    any factor for other formats."""
    if target == rgb.size:
        return rgb  # only re-encoded (its metadata, its format or its quality)
    if min(target[0] / rgb.width, target[1] / rgb.height) >= SMALL_STEP:
        # A small step, as from Flickr's 500 px and 1024 px renditions after draft mode
        # (250 or 256 px to 240), or its 240 px one to 224: OpenCV's bilinear resize,
        # vectorised, takes a quarter of Pillow's time (0.11 against 0.44 ms at 250 to
        # 240 px, with the copies), and is within 0.6 dB of Pillow's filter (PSNR against a
        # Lanczos resize of the whole source), above or below it. It samples 2x2 pixels,
        # which a larger step would alias (0.8 to 4.5 dB worse than Pillow's).
        cv2 = _opencv()
        return Image.fromarray(cv2.resize(np.asarray(rgb), target, interpolation=cv2.INTER_LINEAR))
    # An antialiased bilinear filter (torchvision's default) costs half of Lanczos here,
    # and looks the same at 240 px. (reducing_gap: sources without draft mode, PNG say.)
    return rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=3.0)


@cache
def _opencv() -> ModuleType:
    """OpenCV, loaded by a worker at its first small step, not before: it costs each
    process that loads it 20-25 MB, which harvests that keep Flickr's 240 px renditions
    as they are would pay for nothing."""
    import cv2

    # One photo per thread: OpenCV's own pool of threads would only compete for the cores.
    cv2.setNumThreads(0)
    return cv2


def _keepable(image: Image.Image, longest_side: int, quality: int) -> bool:
    """A JPEG source that is already a dataset image: RGB at exactly the size, upright, with
    no metadata, and compressed no finer than `quality` (so it is no bigger than ours).

    Flickr's renditions are often exactly this (its 240 px one at the default size).
    """
    if image.format != "JPEG" or image.mode != "RGB" or max(image.size) != longest_side:
        return False
    # Nothing but the JFIF header: no EXIF (so no orientation to apply), colour profile,
    # XMP, comment or thumbnail, all of which Pillow lists among the segments it read.
    if any(marker != "APP0" or not payload.startswith(b"JFIF\0")
           for marker, payload in image.applist):  # type: ignore[attr-defined]
        return False
    tables = image.quantization  # type: ignore[attr-defined]
    reference = _quantization_at(quality)
    return bool(tables) and all(
        sum(tables.get(index, tables[0])) >= sum(steps) for index, steps in reference.items())


@cache
def _quantization_at(quality: int) -> dict[int, list[int]]:
    """The quantization tables Pillow writes at `quality`: its steps, coarser for less."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "JPEG", quality=quality)
    with Image.open(out) as written:
        return {index: list(steps) for index, steps in written.quantization.items()}


def fitted_size(width: int, height: int, longest_side: int) -> tuple[int, int]:
    if width >= height:
        return longest_side, max(1, round(height * longest_side / width))
    return max(1, round(width * longest_side / height)), longest_side


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit and wider grayscale: scale to 8 bits, not clip (which turns it white).
        high = 65535 if image.mode.startswith("I;16") else max(1, image.getextrema()[1])
        return image.convert("I").point(lambda value: value * 255 / high).convert(
            "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Alpha is flattened onto white, as an image viewer would show it.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
