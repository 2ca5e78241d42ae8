"""Fuzz target: the bytes of an uploaded image, decoded as /predict and training decode them."""

import numpy as np
import requests
from PIL import Image

from service.runtime import images
from service.runtime.images import ImageError, decode_image

# AVIF and HEIF box types and brands, which the C readers compare against.
DICTIONARY = "isobmff.dict"

# Below the service's limit (40 million), so that a few-byte header declaring a huge picture
# costs milliseconds, not seconds: the fuzzer's time goes to the decoders' branches instead.
MAX_PIXELS = 1_000_000

# Pillow imports its format plugins on first use: import them now, while the runner
# instruments imports, so the fuzzer sees the branches of the TIFF, PNG, ... readers.
Image.init()


def test_one_input(data):
    """Decode for a colour and for a grey model: the two differ in Pillow's draft and convert."""
    if data[4:8] == b"ftyp":
        decode_contained_here(data)
    for channels in (3, 1):
        decode_image(data, 32, 32, channels, MAX_PIXELS)
        check_plain_jpeg_pixels_are_pillows(data, channels)


def decode_contained_here(data):
    """An AVIF or HEIF decoded in this process too: decode_image hands them to a decoding
    process, where a crash of libheif or libavif is only a client error; here it is a finding."""
    container = images._container_format(data)
    images._check_container(data, container, MAX_PIXELS)
    images._contained_pixels(data, container, 32, 32, 3, MAX_PIXELS)


def check_plain_jpeg_pixels_are_pillows(data, channels):
    """A JPEG decoded without Pillow must give Pillow's pixels, where Pillow reads it at all
    (its marker parser refuses some damage that libjpeg-turbo lets pass)."""
    fast = images._plain_jpeg_pixels(data, 32, 32, channels)
    if fast is None:
        return
    try:
        pillows = images._pillow_pixels(data, 32, 32, channels, MAX_PIXELS)
    except ImageError:
        return
    if not np.array_equal(fast, pillows):
        raise AssertionError(f"libjpeg-turbo's pixels differ from Pillow's ({channels} channels)")


def replay(base_url, data):
    """Send the input to a running service, as one raw image body."""
    return requests.post(f"{base_url}/predict", data=data, timeout=30,
                         headers={"Content-Type": "application/octet-stream"})
