"""Decode and check uploaded images: bytes in, model-ready uint8 pixels out.

Training reads its image folders through this module too, so a picture is
turned into pixels the same way when the model learns and when it serves.
"""

import contextlib
import functools
import io
import struct
import warnings

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

# The formats a client may send; anything else Pillow happens to read is refused.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "AVIF", "HEIF")

# AVIF and HEIF (HEIC) are pictures in an ISO base media file: its first box, `ftyp`, names
# the brands of the file, and the brand says which codec a reader needs (AV1 or HEVC).
# mif1/msf1 say only "a HEIF structure" and go to libheif, which reads the items' codec.
CONTAINER_BRANDS = {b"avif": "AVIF", b"avis": "AVIF",
                    b"heic": "HEIF", b"heix": "HEIF", b"heim": "HEIF", b"heis": "HEIF",
                    b"hevc": "HEIF", b"hevx": "HEIF", b"hevm": "HEIF", b"hevs": "HEIF",
                    b"mif1": "HEIF", b"msf1": "HEIF"}

# An `ispe` property box, 20 bytes: size, type, version and flags, then width and height.
# Each image item of the file has one; they are read to refuse an oversized picture before
# any decoder sees the file (libavif's own limit, 268 million pixels, only makes Pillow call
# the file unreadable).
SPATIAL_EXTENTS = b"\x00\x00\x00\x14ispe"

# Uncompressed pictures (ISO 23001-17: item type unci, configured by an uncC box), which no
# phone or browser writes: the decoder for them in pi-heif's libheif 1.23.0 has a heap
# overflow fixed in 1.23.3 (docs/security.md), so a HEIF whose metadata names one is refused
# before libheif parses it.
REFUSED_HEIF_ITEMS = (b"unci", b"uncC")

# Transparent pixels are composited on white, the colour a viewer shows them on.
BACKGROUND = (255, 255, 255)

UNDECODABLE = "The image data is damaged or truncated and could not be decoded."

# Modes a TIFF may decode to that Pillow converts to just one other mode: grey with
# premultiplied alpha, and CIELab colour.
ONLY_CONVERTS_TO = {"La": "LA", "LAB": "RGB"}

# Pillow refuses pictures of more than twice this many pixels (100 million, training's
# limit) from inside its readers, before the caller's own limit can be checked: a GIF of
# 729 bytes can declare a frame canvas of billions of pixels that Pillow would allocate.
Image.MAX_IMAGE_PIXELS = 50_000_000

# A JPEG without any of these bytes is one Pillow reads as a plain, upright picture. They
# begin an EXIF block (APP1, which may say to turn the picture), an XMP orientation (Pillow's
# getexif() reads that too) and a multi-picture index (APP2: Pillow calls such a file MPO, a
# format the service refuses). Found elsewhere by chance, they only send a JPEG the slow way.
NOT_PLAIN_JPEG = (b"Exif\x00\x00", b"tiff:Orientation", b"MPF\x00")

# Pillow warns about odd bytes (a picture near its pixel limit, a damaged EXIF block, ...);
# the client gets its answer or a precise error instead, so its warnings are ignored. Once,
# here: `warnings.catch_warnings()` swaps the whole process's filters and is not
# thread-safe, and around each decode it let concurrent requests' warnings out and left an
# ignore-everything filter behind.
warnings.filterwarnings("ignore", module=r"PIL\.")


class ImageError(Exception):
    """Bytes that are no usable picture; `kind`: empty, unsupported, too_large or undecodable."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def decode_image(data: bytes, height: int, width: int, channels: int,
                 max_pixels: int) -> np.ndarray:
    """Return the image in `data` as a (height, width, channels) uint8 array."""
    if not data:
        raise ImageError("empty", "The image is empty: send the bytes of a picture.")
    container = _container_format(data)
    if container is not None:
        _check_container(data, container, max_pixels)
        # libheif, libde265 and libavif parse the bytes in C, out of harm's way: a crash
        # there costs only this image (service/runtime/isolated_decoding.py, docs/security.md).
        # Imported here because that module imports this one.
        from service.runtime.isolated_decoding import decode_isolated

        return decode_isolated(data, container, height, width, channels, max_pixels)
    if height * width <= max_pixels:
        pixels = _plain_jpeg_pixels(data, height, width, channels)
        if pixels is not None:
            return pixels
    return _pillow_pixels(data, height, width, channels, max_pixels)


def _plain_jpeg_pixels(data, height, width, channels):
    """The pixels of a JPEG already at the model's size with nothing to turn, decoded by
    libjpeg-turbo straight into an array; None for any other picture.

    Pillow reads a JPEG's markers in Python: about 100 µs for a 32x32 picture, where this
    takes 10-20 (docs/performance.md, "Single steps"). Pillow decodes with libjpeg-turbo too, so the
    pixels are the same, which tests/unit/test_images.py and the decode_image fuzz target
    check; training reads its images here as well.
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    try:
        rows, columns, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # damaged: Pillow's reading tells the client how
        return None
    # Colour (YCbCr) and grey only: Pillow converts CMYK and YCCK in its own way.
    if (rows, columns) != (height, width) or colorspace not in ("YCbCr", "Gray"):
        return None
    if any(marker in data for marker in NOT_PLAIN_JPEG):
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB" if channels == 3 else "GRAY")
    except ValueError:  # strict: a libjpeg warning, such as data cut short, is an error too
        return None
    return pixels.reshape(height, width, channels)


def _container_format(data):
    """"AVIF" or "HEIF" for a file that starts with an `ftyp` box naming either; None for
    a file without one; an ImageError for any other brand (an MP4 video, a JPEG 2000)."""
    if data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[:4], "big")
    # The major brand, then the compatible brands after the minor version: the first
    # AVIF brand wins (a phone's AVIF may name mif1 first), then the first HEIF one.
    brands = [data[8:12]] + [data[i:i + 4] for i in range(16, min(size, len(data), 256) - 3, 4)]
    named = [CONTAINER_BRANDS[brand] for brand in brands if brand in CONTAINER_BRANDS]
    if not named:
        shown = data[8:12].decode("latin-1").strip("\x00") or "none"
        raise ImageError("unsupported", f"This ISO media file (brand {shown!r}) is no AVIF or HEIF "
                                        f"picture; send one of {', '.join(SUPPORTED_FORMATS)}.")
    return "AVIF" if "AVIF" in named else "HEIF"


def _check_container(data, container, max_pixels):
    """What is checked of an AVIF or HEIF before any decoder parses it."""
    _check_declared_sizes(data, max_pixels)
    if container == "HEIF":
        _check_heif_items(data)


def _check_declared_sizes(data, max_pixels):
    """Refuse a HEIF or AVIF any of whose images declares more than `max_pixels` pixels."""
    start = data.find(SPATIAL_EXTENTS)
    while start != -1:
        width, height = struct.unpack_from(">II", data.ljust(start + 20, b"\0"), start + 12)
        if width * height > max_pixels:
            raise ImageError("too_large", f"The image declares {width}x{height} pixels; "
                                          f"the limit is {max_pixels} pixels in all.")
        start = data.find(SPATIAL_EXTENTS, start + 1)


def _check_heif_items(data):
    """Refuse a HEIF whose metadata (its top-level meta box) names an uncompressed picture."""
    offset, meta = 0, b""
    while offset + 8 <= len(data) and not meta:
        size, kind = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8]
        if size == 1:  # a 64-bit size follows the type
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        elif size == 0:  # the box runs to the end of the file
            size = len(data) - offset
        if kind == b"meta":
            meta = data[offset:offset + size]
        offset += max(size, 8)
    if any(item in meta for item in REFUSED_HEIF_ITEMS):
        raise ImageError("unsupported", "This HEIF holds an uncompressed picture, which is not "
                                        "read; send the photo as the camera wrote it.")


def _contained_pixels(data, container, height, width, channels, max_pixels):
    """Decode an AVIF or a HEIF already named by its brand: service/runtime/isolated_decoding.py's
    decoding process runs this, never a worker, and the decode_image fuzz target."""
    if container == "HEIF":
        _register_heif_reader()
    try:
        return _pillow_pixels(data, height, width, channels, max_pixels, (container,))
    except ImageError as error:
        if error.kind != "unsupported":
            raise
        # The brand said what it is, so a reader that cannot parse it found it damaged.
        raise ImageError("undecodable", f"The {container} image could not be read: its boxes "
                                        "are damaged or cut short.") from None


@functools.cache
def _register_heif_reader():
    """Teach Pillow HEIF, through pi-heif: libheif and libde265, decoding only (no encoder,
    so nothing GPL in the image; docs/security.md). Imported here, in the decoding process
    alone, so no worker pays its import or memory."""
    import pi_heif

    pi_heif.register_heif_opener()


def _pillow_pixels(data, height, width, channels, max_pixels, formats=None):
    """Decode any supported picture with Pillow: checked, upright, flattened and resized;
    `formats` narrows the readers Pillow tries (None: all, so a refusal can name the format)."""
    with _reading_untrusted_bytes("The image header could not be read."):
        image = Image.open(io.BytesIO(data), formats=formats)
    if image.format not in SUPPORTED_FORMATS:
        raise ImageError("unsupported", f"{image.format} images are not supported; "
                                        f"send one of {', '.join(SUPPORTED_FORMATS)}.")
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageError("too_large", f"The image has {image.width}x{image.height} pixels; "
                                      f"the limit is {max_pixels} pixels in all.")
    mode = "RGB" if channels == 3 else "L"
    with _reading_untrusted_bytes(UNDECODABLE):
        image = _first_frame_upright(image, mode, (width, height))
    image = _to_mode(image, mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(height, width, channels)


@contextlib.contextmanager
def _reading_untrusted_bytes(message):
    """Turn whatever Pillow raises while it parses a client's bytes into an ImageError.

    Its decoders raise nearly any type on crafted input (OSError, ValueError, TypeError,
    struct.error, SyntaxError, EOFError, IndexError, ...), so only calls into Pillow run here:
    our own code stays outside, where a bug still shows as a bug.
    """
    try:
        yield
    except Image.DecompressionBombError:
        raise ImageError("too_large", f"The image declares more than {2 * Image.MAX_IMAGE_PIXELS} "
                                      "pixels in one frame; send a smaller picture.") from None
    except UnidentifiedImageError:
        raise ImageError("unsupported", "This is not an image in a supported format "
                                        f"({', '.join(SUPPORTED_FORMATS)}).") from None
    except Exception:
        raise ImageError("undecodable", message) from None


def _first_frame_upright(image, mode, size):
    """Decode the first frame (a HEIF's primary image) into memory, turned the way its
    EXIF orientation says."""
    if image.format == "JPEG":
        # Let libjpeg decode at a reduced scale when the picture is much larger than needed.
        image.draft(mode, size)
    if image.format != "HEIF":
        # A HEIF opens at its primary image, which need not be the first in the file.
        image.seek(0)
    # A HEIF's or AVIF's own rotation and mirroring (irot, imir) are applied once: libheif
    # applies them while decoding and pi-heif then sets the EXIF orientation to 1; Pillow's
    # AVIF reader puts them in the EXIF orientation in place of the file's own, as HEIF
    # says (its EXIF orientation is only informative).
    # In place: for the usual picture without an orientation tag this is a no-op, where
    # the default returns a decoded copy (about a tenth of a small JPEG's decoding time).
    ImageOps.exif_transpose(image, in_place=True)
    image.load()
    return image


def _to_mode(image, mode):
    """Convert any Pillow mode to `mode` ("RGB" or "L"), flattening transparency."""
    if image.mode in ONLY_CONVERTS_TO:
        image = image.convert(ONLY_CONVERTS_TO[image.mode])
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # Wide integer and float pixels: scale 16-bit ranges down instead of clipping them.
        values = np.asarray(image, dtype=np.float32)
        if image.mode != "F" and values.max(initial=0) > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, BACKGROUND + (255,))
        image = Image.alpha_composite(background, image)
    if image.mode != mode:
        image = image.convert(mode)
    return image
