"""AVIF and HEIF (HEIC) photos: decoded like the other formats, with the same guards, and in
a process of their own (service/runtime/isolated_decoding.py)."""

import os
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pi_heif
import pytest
from PIL import Image

from service.http.errors import as_api_error
from service.runtime import isolated_decoding
from service.runtime.images import ImageError, decode_image
from tests import photo_files
from tests.fuzz.runner import REGRESSIONS_DIR
from tests.photo_files import avif, heif
from tests.support import ROOT

LIMIT = 40_000_000
WRITERS = [avif, heif]


def decode(data, height=8, width=8, channels=3, max_pixels=LIMIT):
    return decode_image(data, height, width, channels, max_pixels)


def error_of(data, **limits):
    with pytest.raises(ImageError) as caught:
        decode(data, **limits)
    answer = as_api_error(caught.value)
    return answer.status, answer.code


def left_black_right_white(size=(8, 4)):
    image = Image.new("RGB", size, (0, 0, 0))
    image.paste((255, 255, 255), (size[0] // 2, 0, *size))
    return image


@pytest.mark.parametrize("write", WRITERS)
def test_each_format_decodes_to_the_model_input(write):
    pixels = decode(write(Image.new("RGB", (40, 24), (200, 30, 30))))
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    red, green, blue = pixels.reshape(-1, 3).mean(axis=0)
    assert red > 170 and green < 60 and blue < 60


@pytest.mark.parametrize("write", WRITERS)
def test_a_rotation_box_beside_an_exif_orientation_turns_the_picture_once(write):
    data = photo_files.turned_both_ways(write, left_black_right_white())
    upright = decode(data, height=4, width=8, channels=1)[..., 0]
    # Turned once it is as drawn; not at all, it would stand 4 wide; twice, white on the left.
    assert upright[:, :4].mean() < 40 and upright[:, 4:].mean() > 215


def test_the_primary_image_of_a_heif_is_decoded_even_when_it_is_not_the_first():
    data = heif([Image.new("RGB", (16, 16), (0, 0, 230)), Image.new("RGB", (16, 16), (230, 0, 0))],
                primary_index=1)
    assert pi_heif.open_heif(data).primary_index == 1
    red, _, blue = decode(data).reshape(-1, 3).mean(axis=0)
    assert red > 180 and blue < 50


@pytest.mark.parametrize("bits", [10, 12])
def test_ten_and_twelve_bit_heic_is_decoded(bits):
    data = photo_files.high_bit_depth_heif(Image.new("RGB", (64, 48), (200, 30, 30)), bits)
    assert pi_heif.open_heif(data).info["bit_depth"] == bits
    red, green, blue = decode(data).reshape(-1, 3).mean(axis=0)
    assert abs(red - 200) < 8 and green < 45 and blue < 45


@pytest.mark.parametrize("write", WRITERS)
def test_transparent_pixels_are_composited_on_white(write):
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (0, 0, 16, 8))
    grey = decode(write(image), height=2, width=1, channels=1)[:, 0, 0]
    assert grey[0] < 40 and grey[1] > 215


# Bad input: every way a file can be wrong is a 4xx, and the next image still decodes.

def with_spatial_extents(data, width, height):
    """`data` with every image's declared size (its ispe box) replaced."""
    start = data.find(b"ispe")
    assert start > 0
    while start != -1:
        data = data[:start + 8] + struct.pack(">II", width, height) + data[start + 16:]
        start = data.find(b"ispe", start + 1)
    return data


@pytest.mark.parametrize("write", WRITERS)
def test_a_huge_declared_size_is_refused_before_decoding(write):
    data = with_spatial_extents(write(Image.new("RGB", (16, 16))), 60000, 60000)
    assert error_of(data) == (413, "image_too_large")
    assert error_of(with_spatial_extents(data, 100, 100), max_pixels=9999) == (413,
                                                                             "image_too_large")


def test_a_heif_that_holds_another_size_than_it_declares_is_a_bad_request():
    data = heif(Image.effect_noise((64, 48), 40).convert("RGB"))
    for width, height in ((32, 24), (128, 96)):
        assert error_of(with_spatial_extents(data, width, height)) == (400, "corrupt_image")


def test_an_avif_that_holds_another_size_is_scaled_to_the_size_it_declares():
    # libavif, the reference reader that browsers use, scales the coded picture to the
    # declared size; memory is bounded by the declared size, which the limit has checked.
    data = with_spatial_extents(avif(Image.new("RGB", (64, 48), (200, 30, 30))), 128, 96)
    red, green, _ = decode(data).reshape(-1, 3).mean(axis=0)
    assert red > 170 and green < 60


@pytest.mark.parametrize("write", WRITERS)
def test_truncated_files_are_bad_requests(write):
    data = write(Image.effect_noise((64, 48), 40).convert("RGB"))
    for length in (20, 100, len(data) // 2, len(data) - 10):
        assert error_of(data[:length]) == (400, "corrupt_image"), length


@pytest.mark.parametrize("brand", [b"isom", b"mp42", b"jp2 ", b"\0\0\0\0"])
def test_an_iso_media_file_of_another_brand_is_unsupported(brand):
    data = avif(Image.new("RGB", (16, 16)))
    data = data[:8] + brand + data[12:].replace(b"avif", b"xxxx").replace(b"mif1", b"xxxx")
    assert error_of(data) == (415, "unsupported_image")


def test_a_heic_brand_on_an_avif_is_a_bad_request():
    data = avif(Image.new("RGB", (16, 16)))
    data = data[:8] + b"heic" + data[12:].replace(b"avif", b"heic")
    assert error_of(data) == (400, "corrupt_image")


# The decoding process: a crash or a stall costs that image alone.

def twelve_megapixel_heic():
    return heif(photo_files.twelve_megapixel_photo((220, 40, 40)))


def test_a_crash_of_the_decoding_process_fails_only_the_image_it_was_decoding():
    decoder = isolated_decoding.DecodingProcess()
    small, big = heif(Image.new("RGB", (16, 16), (0, 200, 0))), twelve_megapixel_heic()
    decoder.decode(small, "HEIF", 8, 8, 3, LIMIT)
    first, outcome = decoder._child.pid, {}

    def decode_big():
        try:
            outcome["pixels"] = decoder.decode(big, "HEIF", 8, 8, 3, LIMIT)
        except ImageError as error:
            outcome["error"] = error
    thread = threading.Thread(target=decode_big)
    thread.start()
    time.sleep(0.1)
    os.kill(first, signal.SIGSEGV)
    thread.join(30)
    assert outcome["error"].kind == "undecodable"
    green = decoder.decode(small, "HEIF", 8, 8, 3, LIMIT)[..., 1].mean()
    assert green > 180 and decoder._child.pid != first


def test_an_image_that_stalls_the_decoder_is_refused_and_the_process_replaced(monkeypatch):
    decoder = isolated_decoding.DecodingProcess()
    monkeypatch.setattr(isolated_decoding, "TIMEOUT_SECONDS", 0.01)
    with pytest.raises(ImageError) as caught:
        decoder.decode(twelve_megapixel_heic(), "HEIF", 8, 8, 3, LIMIT)
    assert caught.value.kind == "undecodable" and decoder._child is None
    monkeypatch.setattr(isolated_decoding, "TIMEOUT_SECONDS", 30)
    pixels = decoder.decode(avif(Image.new("RGB", (16, 16))), "AVIF", 8, 8, 3, LIMIT)
    assert pixels.shape == (8, 8, 3)


def test_a_worker_that_decodes_a_heif_does_not_load_libheif_itself(tmp_path):
    path = tmp_path / "photo.heic"
    path.write_bytes(heif(Image.new("RGB", (16, 16))))
    code = ("import sys; from service.runtime.images import decode_image; "
            "decode_image(open(sys.argv[1], 'rb').read(), 8, 8, 3, 10**6); "
            "print('pi_heif' in sys.modules, 'PIL.AvifImagePlugin' in sys.modules)")
    answer = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    assert answer.split() == ["False", "False"]


def test_every_malformed_photo_kept_as_a_regression_is_a_client_error():
    # tests/fuzz/make_corpus.py writes them; tests/fuzz/test_regressions.py sends them to a
    # running service as well.
    paths = sorted(path for path in (REGRESSIONS_DIR / "decode_image").iterdir()
                   if path.suffix in (".avif", ".heic"))
    assert len(paths) >= 16
    for path in paths:
        status, _ = error_of(path.read_bytes())
        assert 400 <= status < 500, path.name


def test_a_heif_that_names_an_uncompressed_picture_is_refused_before_libheif_reads_it():
    data = heif(Image.new("RGB", (16, 16)))
    assert data.count(b"hvc1") == 1  # the item type in the metadata
    assert error_of(data.replace(b"hvc1", b"unci")) == (415, "unsupported_image")
    # The same bytes past the metadata, in the coded picture, are only pixels.
    assert decode(data + b"\0\0\0\x10freeunciuncC").shape == (8, 8, 3)


def test_an_idle_decoding_process_leaves_and_the_next_image_starts_another(monkeypatch):
    monkeypatch.setattr(isolated_decoding, "IDLE_SECONDS", 0.3)
    decoder, data = isolated_decoding.DecodingProcess(), avif(Image.new("RGB", (16, 16)))
    decoder.decode(data, "AVIF", 8, 8, 3, LIMIT)
    first = decoder._child
    assert first.wait(timeout=10) == 0  # it left on its own, having nothing to do
    assert decoder.decode(data, "AVIF", 8, 8, 3, LIMIT).shape == (8, 8, 3)
    assert decoder._child.pid != first.pid


def test_an_image_sent_as_the_idle_process_leaves_goes_to_a_fresh_one(monkeypatch):
    monkeypatch.setattr(isolated_decoding, "IDLE_SECONDS", 0.3)
    decoder, data = isolated_decoding.DecodingProcess(), avif(Image.new("RGB", (16, 16)))
    decoder.decode(data, "AVIF", 8, 8, 3, LIMIT)
    decoder._child.wait(timeout=10)
    # As if it had left between the check that it runs and the write of the image.
    monkeypatch.setattr(decoder._child, "poll", lambda: None)
    assert decoder.decode(data, "AVIF", 8, 8, 3, LIMIT).shape == (8, 8, 3)


def test_training_reads_a_folder_of_avif_and_heic_photos(tmp_path):
    from model_training.data import load_image_folder

    for name, colour in (("red", (220, 40, 40)), ("blue", (40, 60, 220))):
        (tmp_path / name).mkdir()
        picture = Image.new("RGB", (24, 24), colour)
        (tmp_path / name / "phone.heic").write_bytes(heif(picture))
        (tmp_path / name / "browser.avif").write_bytes(avif(picture))
    data = load_image_folder(str(tmp_path), image_size=8, channels=3)
    assert data.skipped == [] and data.images.shape == (4, 8, 8, 3)
    reds = data.images[data.labels == data.class_names.index("red")]
    assert reds[..., 0].mean() > 180 and reds[..., 2].mean() < 80
