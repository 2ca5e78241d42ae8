"""Refusing a prediction from its bytes, on the worker's main thread, without a thread.

Overloaded, the gunicorn worker (service/process/gunicorn_worker.py) refuses the requests
beyond its bound. Handed to the refusal lane, each refusal costs two thread switches, a
wait for the GIL among the request threads, and gunicorn's parser in Python: under 1,000
clients that put the refusals' p99 in the hundreds of milliseconds. Most requests a
refusal is for are simple: one HTTP/1.1 POST to a classifying route, its headers and its
small body already in the socket. Those the main thread answers at once, from the bytes
it reads: it writes the lane's own answer (service/runtime/admission.py,
OverloadAnswer), and the connection stays open. A refusal makes two system calls, one read
and one write (a peek first, or the two calls made without letting go of the GIL, made no
difference: docs/performance.md).

Anything else goes to the lane, which parses it in full: a request not wholly here yet, a
body sent in chunks, `Expect: 100-continue`, an upgrade, `Connection: close`, a header
folded over lines, Content-Length given twice, HTTP/1.0, TLS. The bytes of a request it
declines go to gunicorn's parser, as if it had read them itself. A request misread here
would desynchronise the connection, so any doubt declines.
"""

import re
import socket

from gunicorn.util import http_date

from service.runtime.admission import OVERLOADED_STATUS, classifying

# The most of a connection's waiting bytes read at once; a larger request goes to the lane.
READ_BYTES = 65536
# A header's name (RFC 9110's token).
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers that change how the request's end is found or what the answer must be.
_DECLINED_HEADERS = {b"transfer-encoding", b"expect", b"upgrade"}


def refuse_from_bytes(sock: socket.socket, answer) -> tuple[int, bytes]:
    """Read what waits on `sock`; if it begins with a simple request, send `answer`'s 503
    for it. Returns the length of the request answered (0: none, nothing sent) and the
    bytes read, whose rest belongs to the connection's parser. BlockingIOError: nothing
    waits; another OSError: the connection broke (close it)."""
    data = sock.recv(READ_BYTES, socket.MSG_DONTWAIT)
    request = simple_request(data)
    if request is None:
        return 0, data
    length, path, given_request_id = request
    headers, body = answer(path, given_request_id)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    reply = (f"HTTP/1.1 {OVERLOADED_STATUS}\r\nDate: {http_date()}\r\n"
             f"Connection: keep-alive\r\n{head}\r\n").encode("latin-1") + body
    if sock.send(reply, socket.MSG_DONTWAIT) < len(reply):
        # A client that does not read its answers: not worth a thread to finish this one.
        raise BrokenPipeError("the answer did not fit in the socket's buffer")
    return length, data


def simple_request(data: bytes) -> tuple[int, str, str] | None:
    """(its length in bytes, its path, its X-Request-ID or "") if `data` begins with a whole
    HTTP/1.1 POST to a classifying route with one Content-Length and nothing that asks for
    more than a plain answer; else None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    breaks = head.count(b"\r\n")
    if b"\0" in head or head.count(b"\n") != breaks or head.count(b"\r") != breaks:
        return None  # a lone CR or LF, or a NUL: gunicorn's parser decides (a 400)
    request_line, *lines = head.split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    path = target.split(b"?", 1)[0].decode("latin-1")
    if method != b"POST" or version != b"HTTP/1.1" or not classifying(path):
        return None
    length, given_request_id = None, ""
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):  # folded, or not a header
            return None
        name, value = name.lower(), value.strip()
        if name in _DECLINED_HEADERS:
            return None
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"connection" and value.lower() != b"keep-alive":
            return None
        elif name == b"x-request-id":
            given_request_id = value.decode("latin-1")
    if length is None or end + 4 + length > len(data):
        return None
    return end + 4 + length, path, given_request_id
