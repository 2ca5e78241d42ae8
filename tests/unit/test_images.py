"""Decoding uploads: formats, modes, orientation, sizes and every way an image can be bad."""

import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from service.http.errors import as_api_error
from service.runtime import images
from service.runtime.images import ImageError, decode_image
from tests.support import ROOT, encode

LIMIT = 40_000_000


def decode(data, height=8, width=8, channels=3):
    return decode_image(data, height, width, channels, LIMIT)


def solid(mode, colour, size=(8, 8)):
    return Image.new(mode, size, colour)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
def test_each_supported_format_decodes_to_the_model_input(image_format):
    pixels = decode(encode(solid("RGB", (200, 30, 30), (20, 12)), image_format))
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    red, green, blue = pixels.reshape(-1, 3).mean(axis=0)
    assert red > 150 and green < 80 and blue < 80


def test_an_animated_gif_gives_its_first_frame():
    frames = [solid("RGB", (255, 0, 0)), solid("RGB", (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    red, _, blue = decode(buffer.getvalue()).reshape(-1, 3).mean(axis=0)
    assert red > 200 and blue < 50


def test_exif_orientation_is_honoured():
    # A 4x2 picture, left half black and right half white, tagged "rotate 90 clockwise".
    image = solid("L", 0, (4, 2))
    image.paste(255, (2, 0, 4, 2))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(image.convert("RGB"), "PNG", exif=exif.tobytes())
    upright = decode(data, height=4, width=2, channels=1)[..., 0]
    # Turned upright it is 2 wide and 4 tall: the black half on top, the white one below.
    assert upright[:2].mean() < 60 and upright[2:].mean() > 190


@pytest.mark.parametrize("mode, colour, expected", [
    ("L", 128, (128, 128, 128)),
    ("1", 1, (255, 255, 255)),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("P", 3, None),
    ("RGBA", (10, 200, 10, 255), (10, 200, 10)),
])
def test_any_mode_becomes_rgb(mode, colour, expected):
    image = solid(mode, colour)
    pixels = decode(encode(image, "TIFF" if mode == "CMYK" else "PNG"))
    assert pixels.shape == (8, 8, 3)
    if expected:
        assert np.allclose(pixels.reshape(-1, 3).mean(axis=0), expected, atol=3)


def test_transparent_pixels_are_composited_on_white():
    pixels = decode(encode(solid("RGBA", (0, 0, 0, 0)), "PNG"))
    assert pixels.min() == 255
    half = decode(encode(solid("LA", (0, 128)), "PNG"), channels=1)
    assert 120 <= half.mean() <= 135


def test_sixteen_bit_greys_are_scaled_not_clipped():
    image = Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16))
    assert image.mode.startswith("I;16")
    pixels = decode(encode(image, "PNG"), channels=1)
    assert 126 <= pixels.mean() <= 130


def test_colour_becomes_one_channel_for_a_grey_model():
    pixels = decode(encode(solid("RGB", (255, 255, 255)), "PNG"), height=5, width=7, channels=1)
    assert pixels.shape == (5, 7, 1) and pixels.min() == 255


def test_large_pictures_are_resized_to_the_model_input():
    pixels = decode(encode(solid("RGB", (0, 255, 0), (1024, 768))), height=32, width=32)
    assert pixels.shape == (32, 32, 3) and pixels[..., 1].mean() > 240


def error_of(data, **limits):
    with pytest.raises(ImageError) as caught:
        decode_image(data, 8, 8, 3, limits.get("max_pixels", LIMIT))
    answer = as_api_error(caught.value)
    return answer.status, answer.code


def test_an_empty_upload_is_a_bad_request():
    assert error_of(b"") == (400, "empty_image")


def test_text_is_not_an_image():
    assert error_of(b"just some words, not a picture\n" * 10) == (415, "unsupported_image")


def test_a_format_outside_the_list_is_refused():
    assert error_of(encode(solid("RGB", (1, 2, 3)), "PCX")) == (415, "unsupported_image")


def test_a_truncated_jpeg_is_a_bad_request():
    data = encode(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG")
    assert error_of(data[: len(data) // 2]) == (400, "corrupt_image")


def test_a_damaged_png_is_a_bad_request():
    data = bytearray(encode(Image.effect_noise((64, 64), 60).convert("RGB"), "PNG"))
    data[100:140] = b"\x00" * 40
    assert error_of(bytes(data)) == (400, "corrupt_image")


def png_header_only(width, height):
    """A PNG that declares width x height pixels; the data is never needed to refuse it."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_a_decompression_bomb_is_refused_before_decoding():
    assert error_of(png_header_only(20000, 20000)) == (413, "image_too_large")


# Decodes on eight threads at once, in a fresh interpreter that imports the module as a
# worker does (pytest's own capture of warnings would undo what the import sets).
THREADED_DECODES = """
import json, sys, threading, warnings
from service.runtime.images import ImageError, decode_image

data = open(sys.argv[1], "rb").read()
kinds = set()

def decode_many():
    for _ in range(300):
        try:
            decode_image(data, 8, 8, 3, 40_000_000)
        except ImageError as error:
            kinds.add(error.kind)

with warnings.catch_warnings(record=True) as escaped:
    before = list(warnings.filters)
    threads = [threading.Thread(target=decode_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = list(warnings.filters) == before
print(json.dumps({"kinds": sorted(kinds), "escaped": [str(w.message) for w in escaped],
                  "filters_kept": kept}))
"""


def test_pillow_warnings_stay_quiet_while_threads_decode_at_once(tmp_path):
    # 64 million pixels: over the count Pillow warns at (50 million), so it warns on every
    # open; over the limit given here, so it is refused before decoding.
    picture = tmp_path / "warned-about.png"
    picture.write_bytes(png_header_only(8000, 8000))
    result = subprocess.run([sys.executable, "-c", THREADED_DECODES, str(picture)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"kinds": ["too_large"], "escaped": [],
                                         "filters_kept": True}


def test_the_pixel_limit_is_a_setting():
    data = encode(solid("RGB", (5, 5, 5), (100, 100)), "PNG")
    assert error_of(data, max_pixels=9_999) == (413, "image_too_large")
    assert decode_image(data, 8, 8, 3, 10_000).shape == (8, 8, 3)


def test_a_frame_canvas_of_billions_of_pixels_is_refused_inside_pillow():
    # 729 bytes that a fuzzer found: a GIF frame whose extent Pillow would allocate whole.
    data = (ROOT / "tests/fuzz/regressions/decode_image/gif-frame-canvas-of-7-gigapixels.gif")
    assert error_of(data.read_bytes()) == (413, "image_too_large")


@pytest.mark.parametrize("name", ["lab.tif", "premultiplied-la.tif"])
@pytest.mark.parametrize("channels", [1, 3])
def test_tiff_modes_that_pillow_converts_only_one_way_are_decoded(name, channels):
    data = (ROOT / "tests/fuzz/corpus/decode_image" / name).read_bytes()
    assert decode(data, channels=channels).shape == (8, 8, channels)


# JPEGs already at the model's size skip Pillow (service/runtime/images.py, _plain_jpeg_pixels);
# their pixels must be exactly those Pillow gives, or serving and training would disagree
# with the same model run on Pillow's pixels.

def noise_jpeg(size, mode="RGB", **options):
    """A JPEG of random pixels: every coefficient and the colour upsampling matter."""
    pixels = np.random.default_rng(7).integers(0, 256, (size[1], size[0], 3), np.uint8)
    return encode(Image.fromarray(pixels, "RGB").convert(mode), "JPEG", **options)


@pytest.mark.parametrize("size", [(32, 32), (13, 7)])
@pytest.mark.parametrize("mode, options", [
    ("RGB", {"quality": 95, "subsampling": 0}),
    ("RGB", {"quality": 75, "subsampling": 1}),
    ("RGB", {"quality": 50, "subsampling": 2}),
    ("RGB", {"quality": 90, "progressive": True, "optimize": True}),
    ("RGB", {"quality": 90, "restart_marker_blocks": 1}),
    ("L", {"quality": 85}),
])
@pytest.mark.parametrize("channels", [3, 1])
def test_a_plain_jpeg_at_the_model_size_decodes_as_pillow_would(size, mode, options, channels):
    data = noise_jpeg(size, mode, **options)
    width, height = size
    fast = images._plain_jpeg_pixels(data, height, width, channels)
    assert fast is not None and fast.shape == (height, width, channels)
    assert np.array_equal(fast, images._pillow_pixels(data, height, width, channels, LIMIT))


def square_with_a_black_top_row():
    image = solid("L", 255, (8, 8))
    image.paste(0, (0, 0, 8, 1))
    return image.convert("RGB")


XMP_ROTATED = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
               b'"http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
               b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
               b'</rdf:RDF></x:xmpmeta>')


@pytest.mark.parametrize("how", ["exif", "xmp"])
def test_a_jpeg_at_the_model_size_tagged_to_turn_is_turned(how):
    exif = Image.Exif()
    exif[0x0112] = 6
    options = {"exif": exif.tobytes()} if how == "exif" else {"xmp": XMP_ROTATED}
    data = encode(square_with_a_black_top_row(), "JPEG", quality=95, **options)
    assert images._plain_jpeg_pixels(data, 8, 8, 1) is None
    upright = decode(data, channels=1)[..., 0]
    # Turned 90 degrees clockwise, the black top row becomes the right-hand column.
    assert upright[:, -1].mean() < 60 and upright[:, :-1].mean() > 190


def test_a_multi_picture_jpeg_at_the_model_size_is_still_refused():
    buffer = io.BytesIO()
    square_with_a_black_top_row().save(buffer, "MPO", save_all=True,
                                       append_images=[solid("RGB", (0, 0, 0))])
    assert images._plain_jpeg_pixels(buffer.getvalue(), 8, 8, 3) is None
    assert error_of(buffer.getvalue()) == (415, "unsupported_image")


def test_a_cmyk_jpeg_at_the_model_size_is_left_to_pillow():
    data = encode(solid("CMYK", (0, 255, 255, 0)), "JPEG")
    assert images._plain_jpeg_pixels(data, 8, 8, 3) is None
    assert np.allclose(decode(data).reshape(-1, 3).mean(axis=0), (255, 0, 0), atol=3)


def test_a_truncated_jpeg_at_the_model_size_is_a_bad_request():
    data = noise_jpeg((8, 8), quality=95)
    assert images._plain_jpeg_pixels(data[:-40], 8, 8, 3) is None
    assert error_of(data[:-40]) == (400, "corrupt_image")


def test_a_jpeg_at_the_model_size_over_the_pixel_limit_is_refused():
    assert error_of(noise_jpeg((8, 8)), max_pixels=63) == (413, "image_too_large")
