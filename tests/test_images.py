import io

import pytest
from PIL import Image

from harvester.images import Normalised, Unusable, normalise
from tests.images import detailed, encoded, halves, jpeg, png_declaring, psnr


def decoded(result) -> Image.Image:
    assert isinstance(result, Normalised), result
    image = Image.open(io.BytesIO(result.jpeg))
    assert image.format == "JPEG" and image.mode == "RGB"
    assert image.size == (result.width, result.height)
    return image


@pytest.mark.parametrize(("size", "expected"), [
    ((1024, 768), (240, 180)), ((768, 1024), (180, 240)), ((500, 500), (240, 240)),
    ((240, 100), (240, 100)), ((3000, 1687), (240, 135)),
])
def test_the_longest_side_becomes_exactly_the_target(size, expected):
    assert decoded(normalise(jpeg(*size), 240, 90)).size == expected


# After draft mode, the last step from these is small (500 to 250 to 240 px, 1024 to 256,
# 532 to 266, 260) or large (533 to 267, 800 to 400, 640 to 320, 478 to 240).
@pytest.mark.parametrize("size", [(500, 375), (1024, 768), (532, 399), (260, 195),
                                  (533, 400), (800, 600), (640, 480), (478, 359)])
def test_a_resized_photo_is_as_faithful_as_pillows_antialiased_resize(size):
    source = detailed(*size)
    result = normalise(source, 240, 90)
    with Image.open(io.BytesIO(source)) as whole:
        careful = whole.convert("RGB").resize((result.width, result.height),
                                              Image.Resampling.LANCZOS)
    with Image.open(io.BytesIO(source)) as drafted:
        drafted.draft("RGB", (careful.width, careful.height))
        pillows = drafted.convert("RGB").resize(careful.size, Image.Resampling.BILINEAR)
    pillows_jpeg = Image.open(io.BytesIO(encoded(pillows, "JPEG", quality=90)))
    # Within 0.6 dB of Pillow's filter, measured against a Lanczos resize of the whole
    # source. This holds the quality, not the exact step where OpenCV takes over: a filter
    # that aliases (nearest, or 2x2 bilinear on a large step) is 0.8 to 4.5 dB off here.
    assert psnr(decoded(result), careful) >= psnr(pillows_jpeg, careful) - 0.6


def test_a_source_smaller_than_the_target_is_never_upscaled():
    result = normalise(jpeg(200, 150), 240, 90)
    assert result == Unusable("too_small", "200x150 is below 240px")


@pytest.mark.parametrize("size", [(400, 300), (500, 375)])  # a large last step, a small one
def test_exif_orientation_is_applied_so_photos_stand_upright(size):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    image = decoded(normalise(encoded(halves(*size), "JPEG", exif=exif), 240, 90))
    assert image.size == (180, 240)
    top, bottom = image.getpixel((90, 20)), image.getpixel((90, 220))
    assert top[0] > 200 and top[2] < 60  # the red left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert not image.getexif()  # no metadata in the output


@pytest.mark.parametrize("size", [(400, 300), (260, 195)])  # a large last step, a small one
@pytest.mark.parametrize(("mode", "format"), [
    ("CMYK", "JPEG"), ("L", "JPEG"), ("P", "PNG"), ("P", "GIF"), ("RGB", "WEBP"), ("I;16", "PNG"),
    ("RGBA", "PNG"),
])
def test_every_colour_mode_and_format_becomes_rgb_jpeg(mode, format, size):
    source = halves(*size).convert(mode) if mode != "I;16" else Image.new("I;16", size)
    image = decoded(normalise(encoded(source, format), 240, 90))
    assert image.size == (240, 180)


def test_transparency_is_flattened_on_white():
    source = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
    source.paste((0, 128, 0, 255), (0, 0, 200, 300))
    image = decoded(normalise(encoded(source, "PNG"), 240, 90))
    assert all(channel > 240 for channel in image.getpixel((200, 90)))
    assert image.getpixel((20, 90))[1] > 100 and image.getpixel((20, 90))[0] < 40


@pytest.mark.parametrize("data", [
    b"", b"<html><body>Not found</body></html>", jpeg()[: len(jpeg()) // 2],
])
def test_bytes_pillow_cannot_decode_are_rejected_as_corrupt(data):
    result = normalise(data, 240, 90)
    assert isinstance(result, Unusable) and result.reason == "corrupt"


def test_a_decompression_bomb_is_rejected_without_decoding(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # bombs start at twice this
    result = normalise(jpeg(400, 300), 240, 90)
    assert isinstance(result, Unusable) and result.reason == "too_large"


def test_the_same_source_always_gives_the_same_bytes():
    source = jpeg(1024, 768)
    assert normalise(source, 240, 85) == normalise(source, 240, 85)


@pytest.mark.parametrize("size", [(60_000, 60_000), (12_000, 10_000)])
def test_a_bomb_declaring_too_many_pixels_is_refused_from_its_header_alone(size):
    bomb = png_declaring(*size)  # billions, or 120 million, of pixels in 100 bytes
    assert len(bomb) < 200
    result = normalise(bomb, 240, 90)
    assert isinstance(result, Unusable) and result.reason == "too_large"
    assert "pixels" in result.detail


def test_sixteen_bit_grayscale_keeps_its_tones():
    source = Image.new("I;16", (400, 300))
    source.putdata([x * 65535 // 399 for _ in range(300) for x in range(400)])
    image = decoded(normalise(encoded(source, "PNG"), 240, 90))
    left, middle, right = (image.getpixel((x, 80))[0] for x in (2, 120, 237))
    assert left < 15 and 100 < middle < 155 and right > 240  # a ramp, not a white sheet


def test_a_source_that_already_is_a_dataset_image_is_kept_byte_for_byte():
    source = jpeg(240, 180, quality=85)  # Flickr's 240 px rendition, say
    result = normalise(source, 240, 90)
    assert decoded(result).size == (240, 180)
    assert result.kept and result.jpeg == source  # no second generation of JPEG loss
    # Its hashes are of its own pixels: the same as those pixels' under any other bytes.
    with Image.open(io.BytesIO(source)) as image:
        lossless = normalise(encoded(image.convert("RGB"), "PNG"), 240, 90)
    assert (result.pixels_sha256, result.phash) == (lossless.pixels_sha256, lossless.phash)


def _exif_sideways() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


@pytest.mark.parametrize(("source", "why"), [
    (jpeg(241, 180, quality=85), "not the size"),
    (jpeg(240, 180, quality=95), "finer than asked for: bigger files than ours"),
    (jpeg(240, 180, quality=85, exif=_exif_sideways()), "metadata, and lying on its side"),
    (jpeg(240, 180, quality=85, icc_profile=b"\0" * 128), "a colour profile"),
    (jpeg(240, 180, quality=85, comment=b"scanned by me"), "a comment"),
    (encoded(halves(240, 180), "PNG"), "not a JPEG"),
    (encoded(halves(240, 180, mode="L"), "JPEG", quality=85), "not RGB"),
])
def test_a_source_needing_any_change_is_encoded_anew(source, why):
    result = normalise(source, 240, 90)
    image = decoded(result)
    assert not result.kept and result.jpeg != source, why
    assert not image.getexif() and "icc_profile" not in image.info and "comment" not in image.info


def test_the_same_picture_under_other_bytes_has_the_same_pixel_hash():
    picture = halves(800, 600)
    plain = normalise(encoded(picture, "PNG"), 240, 90)
    tagged = normalise(encoded(picture, "PNG", pnginfo=_text_chunk("id", "2")), 240, 90)
    assert plain.pixels_sha256 == tagged.pixels_sha256 and plain.phash == tagged.phash
    reencoded = normalise(encoded(picture.resize((760, 570)), "JPEG", quality=60), 240, 90)
    assert reencoded.pixels_sha256 != plain.pixels_sha256
    distance = bin(int(reencoded.phash, 16) ^ int(plain.phash, 16)).count("1")
    assert distance <= 6  # near: the same picture re-encoded


def _text_chunk(key: str, value: str):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info
