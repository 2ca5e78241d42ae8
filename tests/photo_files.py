"""AVIF and HEIF files as phones write them, made by the tests themselves.

Pillow writes AVIF; pillow-heif (test requirements only: its wheel carries the x265 encoder)
writes HEIF. Its opener is never registered, so the service's reader, pi-heif, is the one
Pillow uses for HEIF in the tests' process too.
"""

import io

import numpy as np
import pillow_heif
from PIL import Image

from tests import support

ORIENTATION = 0x0112
# EXIF entries "ResolutionUnit: 6" and "Orientation: 6" (type SHORT, one value), big- and
# little-endian. Pillow's AVIF writer turns an EXIF orientation into the file's rotation box
# and leaves none in the EXIF, so a decoy entry is written beside it and renamed afterwards.
RENAMED = {b"\x01\x28\x00\x03\x00\x00\x00\x01\x00\x06": b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06",
           b"\x28\x01\x03\x00\x01\x00\x00\x00\x06\x00": b"\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00"}


def turned_exif(decoy=False):
    """EXIF that says "turn 90 degrees clockwise to show", and the decoy entry if asked."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    if decoy:
        exif[0x0128] = 6
    return exif


def avif(image, **options):
    """`image` as an AVIF (the fastest AV1 encoding: the tests need files, not small ones)."""
    return support.encode(image, "AVIF", **{"quality": 85, "speed": 10, **options})


def heif(images, primary_index=0, **options):
    """`images` (one or a list) as a HEIC, pillow-heif's encoder at its fastest."""
    images = images if isinstance(images, list) else [images]
    container = pillow_heif.HeifFile()
    for image in images:
        added = container.add_frombytes(image.mode, image.size, image.tobytes())
        added.info.update({key: value for key, value in image.info.items() if key == "exif"})
    buffer = io.BytesIO()
    container.save(buffer, format="HEIF", primary_index=primary_index,
                   enc_params={"preset": "ultrafast"}, **{"quality": 85, **options})
    return buffer.getvalue()


def turned_both_ways(write, upright):
    """`upright` stored turned back, with a rotation box AND an EXIF orientation that each
    say "turn 90 degrees clockwise": a reader that applies both shows it upside down."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    if write is avif:
        data = avif(stored, exif=turned_exif(decoy=True))
        for decoy, orientation in RENAMED.items():
            data = data.replace(decoy, orientation)
    else:
        # pillow-heif writes the rotation box from the EXIF orientation and keeps both.
        stored.info["exif"] = turned_exif().tobytes()
        data = heif(stored)
    assert b"irot" in data and sum(map(data.count, RENAMED.values())) == 1, "no irot or EXIF"
    return data


def twelve_megapixel_photo(colour):
    """A 4000x3000 picture of the tests' drawn shapes, as a phone's photo is sized."""
    return support.draw_picture(colour, 24, seed=3).resize((4000, 3000), Image.Resampling.BILINEAR)


def high_bit_depth_heif(image, bits):
    """`image` as a 10- or 12-bit HEIC, as phones write them, from 16-bit samples."""
    wide = np.asarray(image.convert("RGB"), dtype=np.uint16) * 257
    container = pillow_heif.from_bytes("RGB;16", image.size, wide.tobytes())
    buffer = io.BytesIO()
    pillow_heif.options.SAVE_HDR_TO_12_BIT = bits == 12
    try:
        container.save(buffer, format="HEIF", quality=90, enc_params={"preset": "ultrafast"})
    finally:
        pillow_heif.options.SAVE_HDR_TO_12_BIT = False
    return buffer.getvalue()
