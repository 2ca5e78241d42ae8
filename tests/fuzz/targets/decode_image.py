"""Fuzz target: the bytes of an uploaded image, decoded as /predict and training decode them."""

import requests
from PIL import Image

from service.images import decode_image

# Below the service's limit (40 million), so that a few-byte header declaring a huge picture
# costs milliseconds, not seconds: the fuzzer's time goes to the decoders' branches instead.
MAX_PIXELS = 1_000_000

# Pillow imports its format plugins on first use: import them now, while the runner
# instruments imports, so the fuzzer sees the branches of the TIFF, PNG, ... readers.
Image.init()


def test_one_input(data):
    """Decode for a colour and for a grey model: the two differ in Pillow's draft and convert."""
    for channels in (3, 1):
        decode_image(data, 32, 32, channels, MAX_PIXELS)


def replay(base_url, data):
    """Send the input to a running service, as one raw image body."""
    return requests.post(f"{base_url}/predict", data=data, timeout=30,
                         headers={"Content-Type": "application/octet-stream"})
