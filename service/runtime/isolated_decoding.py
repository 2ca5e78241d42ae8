"""Decode AVIF and HEIF in a process of their own, where a crash costs only that image.

libheif, libde265 and libavif parse a client's bytes in C, and crafted files have crashed
libheif and libde265 before (docs/security.md). A worker answers several requests at once on
its threads and batches their images: a crash in it would drop every one of them. So each
worker keeps one decoding process, started at its first AVIF or HEIF (a worker that never
sees one pays nothing), and hands it one image at a time; the process sends back the pixels
at the model's size. If it dies or overruns TIMEOUT_SECONDS, that image is refused (400) and
the next one starts a fresh process. One process per worker is enough: workers are as many
as the CPUs, and a decode keeps one busy.

The answer is raw pixels checked against the shape asked for, or an error's kind and text,
never a pickle: a process that a crafted file took over could otherwise run code here.
"""

import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from service.process.pipes import write_all
from service.runtime import images
from service.runtime.images import ImageError

log = logging.getLogger("service.runtime.isolated_decoding")

# The longest one image may take. A 12-megapixel HEIC of 6.5 MB took 0.8-3.8 s on two
# shared cores, a picture at the 40-million-pixel limit takes about three times that
# (docs/performance.md); more than this is a file built to stall the decoder, refused so that
# its worker thread is free again (gunicorn restarts a worker silent for 120 s).
TIMEOUT_SECONDS = 30

# A decoding process idle this long leaves, and gives back its memory (about 60 MiB after a
# photo, docs/performance.md); the next AVIF or HEIF starts another, in about 0.2 s.
IDLE_SECONDS = 60

# A request: container ("AVIF" or "HEIF"), height, width, channels, max_pixels, data length.
REQUEST = struct.Struct(">4sIIIQQ")
# An error answer: the kind's index in ERROR_KINDS and the length of the message after it.
ERROR = struct.Struct(">BI")
ERROR_KINDS = ("empty", "unsupported", "too_large", "undecodable")
PIXELS, REFUSED, FAILED = b"P", b"E", b"X"

STOPPED = ("The image could not be decoded: the decoder stopped on it (the file is "
           "damaged or made to crash it).")


class DecodingProcess:
    """One child process that decodes AVIF and HEIF for this process's threads, in turn."""

    def __init__(self):
        self._lock = threading.Lock()
        self._child = None
        self._owner = os.getpid()

    def decode(self, data, container, height, width, channels, max_pixels):
        """The (height, width, channels) uint8 pixels of `data`, decoded in the child."""
        request = REQUEST.pack(container.encode(), height, width, channels, max_pixels,
                               len(data))
        with self._lock:
            if os.getpid() != self._owner:  # forked: the child and its pipes are the parent's
                self._child, self._owner = None, os.getpid()
            for attempt in range(2):
                if self._child is None or self._child.poll() is not None:
                    self._child = _start_child()
                try:
                    write_all(self._child.stdin.fileno(), request + data)
                    return _read_answer(self._child.stdout.fileno(), (height, width, channels),
                                        time.monotonic() + TIMEOUT_SECONDS)
                except (OSError, EOFError, TimeoutError) as failure:
                    # A child that left, idle, just as this image came never read it: a
                    # fresh one gets it, once. Any other end refuses the image.
                    if attempt == 0 and not isinstance(failure, TimeoutError) \
                            and _left_idle(self._child):
                        self._child = None
                        continue
                    self._stop_child(failure)
                    raise ImageError("undecodable", STOPPED) from None

    def _stop_child(self, failure):
        """Kill and reap the child after it died or overran; the next image starts another."""
        child, self._child = self._child, None
        child.kill()
        status = child.wait()
        log.warning("image decoding process stopped (%s, exit status %s); the image was "
                    "refused and the next one starts a new process",
                    type(failure).__name__, status)


def _left_idle(child):
    """Whether `child` ended on its own with status 0: idle, not crashed (a signal) or
    failed (1)."""
    try:
        return child.wait(timeout=1) == 0
    except subprocess.TimeoutExpired:
        return False


def _start_child():
    """A fresh decoding process: this interpreter, running this module's main(), found from
    the folder that holds the `service` package whatever the working directory."""
    root = Path(__file__).resolve().parents[__name__.count(".")]
    path = os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))
    return subprocess.Popen([sys.executable, "-m", __name__, str(IDLE_SECONDS)],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path})


def _read_exactly(fd, size, deadline):
    """`size` bytes from `fd`; EOFError if it closes first, TimeoutError past `deadline`
    (None: wait as long as it takes)."""
    chunks, left = [], size
    while left:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_answer(fd, shape, deadline):
    """The child's answer: the pixels, or the ImageError it raised, or its bug as ours."""
    status = _read_exactly(fd, 1, deadline)
    if status == PIXELS:
        pixels = _read_exactly(fd, shape[0] * shape[1] * shape[2], deadline)
        return np.frombuffer(pixels, dtype=np.uint8).reshape(shape)
    if status not in (REFUSED, FAILED):
        raise EOFError
    kind, length = ERROR.unpack(_read_exactly(fd, ERROR.size, deadline))
    message = _read_exactly(fd, length, deadline).decode("utf-8", "replace")
    if status == FAILED:
        raise RuntimeError(f"the image decoding process failed: {message}")
    if kind >= len(ERROR_KINDS):
        raise EOFError
    raise ImageError(ERROR_KINDS[kind], message)


def _answer(data, container, height, width, channels, max_pixels):
    """The bytes that answer one request, in the child."""
    try:
        pixels = images._contained_pixels(data, container, height, width, channels, max_pixels)
    except ImageError as error:
        message = str(error).encode()
        return REFUSED + ERROR.pack(ERROR_KINDS.index(error.kind), len(message)) + message
    except Exception as bug:  # a bug, not the image: the worker answers 500 and logs it
        message = repr(bug).encode()[:2000]
        return FAILED + ERROR.pack(0, len(message)) + message
    return PIXELS + np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()


def main(idle_seconds):
    """The child: answer requests from stdin on stdout until the worker closes the pipe, or
    none came for `idle_seconds`."""
    requests, answers = sys.stdin.buffer.fileno(), os.dup(sys.stdout.fileno())
    # The answers' pipe is for answers alone: whatever a library prints goes to stderr.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    while select.select([requests], [], [], idle_seconds)[0]:
        try:
            header = _read_exactly(requests, REQUEST.size, None)
        except EOFError:
            return
        container, height, width, channels, max_pixels, length = REQUEST.unpack(header)
        data = _read_exactly(requests, length, None)
        write_all(answers, _answer(data, container.decode(), height, width, channels,
                                   max_pixels))


_shared = DecodingProcess()


def decode_isolated(data, container, height, width, channels, max_pixels):
    """Decode an AVIF or HEIF (`container`) in this process's decoding process."""
    return _shared.decode(data, container, height, width, channels, max_pixels)


if __name__ == "__main__":
    main(float(sys.argv[1]))
