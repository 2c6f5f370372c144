"""Real images made with Pillow, for tests."""

from __future__ import annotations

import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw


def encoded(image: Image.Image, format: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def halves(width: int, height: int, left=(255, 0, 0), right=(0, 0, 255), mode="RGB"):
    """An image whose left half and right half differ, to see where a rotation put them."""
    image = Image.new("RGB", (width, height), right)
    image.paste(left, (0, 0, width // 2, height))
    return image.convert(mode) if mode != "RGB" else image


def jpeg(width: int = 400, height: int = 300, **options) -> bytes:
    return encoded(halves(width, height), "JPEG", **options)


def detailed(width: int, height: int) -> bytes:
    """A JPEG with detail at every scale, down to single pixels: lines and text on a ramp."""
    rng = random.Random(7)
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 3):
        draw.line((x, 0, x + rng.randrange(-40, 40), height),
                  fill=tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(40):
        draw.text((rng.randrange(width), rng.randrange(height)), "harvester 0123456789",
                  fill=(255, 255, 0))
    return encoded(image, "JPEG", quality=95)


def psnr(image: Image.Image, reference: Image.Image) -> float:
    """Peak signal-to-noise ratio in dB: how close `image` is to `reference`."""
    error = np.mean((np.asarray(image, float) - np.asarray(reference, float)) ** 2)
    return 10 * math.log10(255**2 / error)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` pixels but holds almost none."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
