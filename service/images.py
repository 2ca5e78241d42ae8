"""Decode and check uploaded images: bytes in, model-ready uint8 pixels out.

Training reads its image folders through this module too, so a picture is
turned into pixels the same way when the model learns and when it serves.
"""

import contextlib
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The formats a client may send; anything else Pillow happens to read is refused.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")

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
    with _reading_untrusted_bytes("The image header could not be read."):
        image = Image.open(io.BytesIO(data))
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
    """Decode the first frame into memory, turned the way its EXIF orientation says."""
    if image.format == "JPEG":
        # Let libjpeg decode at a reduced scale when the picture is much larger than needed.
        image.draft(mode, size)
    image.seek(0)
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
