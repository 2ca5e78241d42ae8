"""Read the images out of a /predict request, in any of its three accepted forms."""

import base64
import json
import re

import multipart
from flask import Request

DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[^,]*)?,", re.ASCII)

# Text fields a form may carry beside its images (they are ignored). Parsing stops at more
# parts than images and these allow: a body of many tiny parts costs time per part.
MAX_TEXT_FIELDS = 16


class UploadError(Exception):
    """A request whose body holds no usable images; `kind` is the snake_case error code."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def read_uploads(request: Request, max_images: int) -> list[tuple[str | None, bytes]]:
    """Return [(filename or None, bytes)] from multipart, raw-image or JSON bodies."""
    content_type = request.mimetype
    if content_type == "multipart/form-data":
        uploads = _from_form(request, max_images)
    elif content_type.startswith("image/") or content_type == "application/octet-stream":
        uploads = [(None, request.get_data(cache=False))]
    elif content_type == "application/json":
        uploads = _from_json(request)
    else:
        raise UploadError("unsupported_media_type",
                          f"Content-Type {content_type or '(none)'!r} is not accepted: send "
                          "multipart/form-data file parts, a raw image/* body, or JSON "
                          '{"images": ["<base64>"]}.')
    if not uploads:
        raise UploadError("no_images", "The request holds no image.")
    if len(uploads) > max_images:
        raise UploadError("too_many_images",
                          f"The request holds {len(uploads)} images; the limit is {max_images}.")
    return uploads


def _from_form(request, max_images):
    """Every file part of a multipart form, in the order sent.

    The `multipart` package parses the body rather than werkzeug's form parser (Flask's
    `request.files`), which took 4 times as long for a small image, and 15 times with a
    new boundary per request, as real clients send (docs/performance.md, "Single steps"). It holds
    forms to RFC 7578, so a malformed one is refused with its reason where werkzeug read
    no parts from it.
    """
    boundary = request.mimetype_params.get("boundary")
    if not boundary:
        raise UploadError("invalid_multipart",
                          "The multipart/form-data Content-Type has no boundary parameter; let "
                          "the HTTP client write that header for the form it sends.")
    max_parts = max_images + MAX_TEXT_FIELDS
    uploads, fields = [], []
    try:
        parser = multipart.PushMultipartParser(boundary)
        for event in parser.parse_blocking(request.stream.read):
            if isinstance(event, multipart.MultipartSegment):  # a part begins: its headers
                if len(uploads) + len(fields) == max_parts:
                    raise UploadError("too_many_parts",
                                      f"The form has more than {max_parts} parts; send at most "
                                      f"{max_images} images.")
                part, chunks = event, []
            elif event is not None:  # a piece of the part's body
                chunks.append(event)
            elif part.filename is None:  # the part is over: a text field
                fields.append(part.name)
            else:  # the part is over: a file
                uploads.append((part.filename or None, b"".join(chunks)))
    except multipart.MultipartError as error:
        raise UploadError("invalid_multipart",
                          f"The multipart/form-data body is malformed: {error}.") from None
    if not uploads:
        fields = ", ".join(sorted(name for name in fields if name)) or "none"
        raise UploadError("no_images",
                          f"The form has no file parts (text fields: {fields}); attach each image "
                          "as a file, e.g. curl -F file=@cat.jpg.")
    return uploads


def _from_json(request):
    """The base64 strings or data: URLs of a JSON body's "images" list."""
    try:
        body = json.loads(request.get_data(cache=False))
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        body = None
    if not isinstance(body, dict):
        raise UploadError("invalid_json",
                          'The body is not a JSON object; send {"images": ["<base64>", ...]}.')
    images = body.get("images")
    if not isinstance(images, list) or not all(isinstance(item, str) for item in images):
        keys = ", ".join(sorted(map(str, body.keys()))) or "none"
        raise UploadError("invalid_json",
                          'The JSON needs "images": a list of base64 strings '
                          f"(found keys: {keys}).")
    return [(None, _decode_base64(item, index)) for index, item in enumerate(images)]


def _decode_base64(text, index):
    """Decode one base64 string or data: URL, naming its position when it is not valid."""
    try:
        return decode_base64(text)
    except ValueError:
        raise UploadError("invalid_base64",
                          f"images[{index}] is not valid base64.") from None


def decode_base64(text: str) -> bytes:
    """The bytes of a base64 string or data: URL (whitespace ignored); ValueError if invalid."""
    match = DATA_URL.match(text)
    if match:
        text = text[match.end():]
    # binascii.Error is a ValueError, and so is a non-ASCII character in the text.
    return base64.b64decode("".join(text.split()), validate=True)
