"""Admission and deadlines: say no before the work, not after the caller has left.

Both faces (HTTP's /predict and /v2 routes, and the gRPC servicer) call the same things:

- `deadline_of` reads a request's deadline: X-Request-Timeout (milliseconds), or a gRPC
  call's own deadline, or DEFAULT_DEADLINE_MS; counted from the request's arrival, which
  the proxy stamps in X-Request-Start ("t=<seconds since the epoch>", nginx's $msec) so
  that the time a request spent in the proxy counts too.
- `Admission.admit` lets a request in for one model version, or refuses it at once: when
  the version already holds MAX_REQUESTS_PER_VERSION requests in this worker, when the
  worker's dispatch path is over its bound (service/process/gunicorn_worker.py runs such requests
  on a refusal lane), or when its deadline has already passed. It happens before the body
  is decoded, so a refusal costs next to nothing.
- The `Ticket` it gives follows the request into the batcher, which drops it before any
  model time when its deadline passes or its caller has gone (service/runtime/batcher.py).

Every refusal is an AdmissionError, a domain error that the edges map: service/http/errors.py
(503 `overloaded` with Retry-After, 504 `deadline_exceeded`) and service/grpc/status.py
(UNAVAILABLE with gRPC's retry pushback, DEADLINE_EXCEEDED). Each is counted by reason.
"""

import collections
import json
import math
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.config import MAX_DEADLINE_MS
from service.observability import metrics

DEADLINE_HEADER = "X-Request-Timeout"
ARRIVAL_HEADER = "X-Request-Start"
# An arrival stamp further off than this is from a clock not to be believed; ignored.
ARRIVAL_STAMP_TRUSTED_SECONDS = 600
_DEADLINE_MS = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,6})?$")
_ARRIVAL_STAMP = re.compile(r"^(t=)?([0-9]{9,11}(\.[0-9]{1,6})?)$")

OVERLOADED, DEADLINE_EXCEEDED = "overloaded", "deadline_exceeded"
OVERLOADED_STATUS = "503 SERVICE UNAVAILABLE"
CALLER_GONE, INVALID_DEADLINE = "caller_gone", "invalid_deadline"


class AdmissionError(Exception):
    """A request refused before any model time, and why (`kind`)."""

    def __init__(self, kind: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


def refusal(kind: str, message: str, retry_after: int | None = None) -> AdmissionError:
    """An AdmissionError of `kind`, counted in the refusals by reason."""
    metrics.REFUSALS.labels(reason=kind).inc()
    return AdmissionError(kind, message, retry_after)


_lane = threading.local()


def note_arrival(arrived: float | None) -> None:
    """Note when the request this thread is about to answer arrived (time.monotonic(), as
    the gunicorn worker saw its connection turn readable), so that its wait for a thread
    counts against its deadline; None once it is answered."""
    _lane.arrived = arrived


def refuse_on_this_thread() -> None:
    """Make the calling thread a refusal lane: every request it admits is refused as
    overloaded (service/process/gunicorn_worker.py, its refusal threads' initializer)."""
    _lane.refusing = True


@dataclass(frozen=True)
class Deadline:
    """When a request must be answered by: `seconds` after it `arrived` (time.monotonic())."""

    arrived: float
    seconds: float

    @property
    def at(self) -> float:
        """The moment, on time.monotonic(), the deadline passes."""
        return self.arrived + self.seconds

    def remaining(self) -> float:
        """Seconds left, negative once passed."""
        return self.at - time.monotonic()

    def tightened(self, seconds: float) -> "Deadline":
        """This deadline, or `seconds` from the same arrival when that is sooner."""
        return Deadline(self.arrived, min(self.seconds, seconds))


def deadline_of(timeout_ms: str | None, arrival_stamp: str | None, default_ms: float,
                call_remaining: float | None = None) -> Deadline:
    """The deadline a request asks for, from its arrival.

    `timeout_ms` is the X-Request-Timeout header (None when absent; bad values are an
    AdmissionError of kind invalid_deadline, a 400), `arrival_stamp` the proxy's
    X-Request-Start (None when the proxy is not trusted), `call_remaining` the seconds a
    gRPC call's own deadline leaves (None without one). Without either, `default_ms`.
    """
    now = time.monotonic()
    arrived = min(now - _seconds_since(arrival_stamp), getattr(_lane, "arrived", None) or now)
    seconds = default_ms / 1000
    if timeout_ms is not None and timeout_ms.strip():
        seconds = _header_seconds(timeout_ms.strip())
    if call_remaining is not None:
        seconds = min(seconds, max(0.0, call_remaining + now - arrived))
    return Deadline(arrived, seconds)


def _header_seconds(raw: str) -> float:
    """X-Request-Timeout's milliseconds as seconds, from 0 to MAX_DEADLINE_MS."""
    if not _DEADLINE_MS.match(raw) or float(raw) > MAX_DEADLINE_MS:
        raise refusal(INVALID_DEADLINE,
                      f"{DEADLINE_HEADER} must be a number of milliseconds from 0 to "
                      f"{MAX_DEADLINE_MS}, not {raw[:40]!r}.")
    return float(raw) / 1000


def _seconds_since(stamp: str | None) -> float:
    """How long ago the proxy's arrival stamp was; 0 without a believable one."""
    match = _ARRIVAL_STAMP.match(stamp.strip()) if stamp else None
    if not match:
        return 0.0
    waited = time.time() - float(match.group(2))
    return waited if 0 < waited < ARRIVAL_STAMP_TRUSTED_SECONDS else 0.0


def timeout_seconds(timeout_us: int | None) -> float | None:
    """The V2 "timeout" parameter (Triton's schedule policy: microseconds) as seconds."""
    return None if timeout_us is None else timeout_us / 1_000_000


class Ticket:
    """An admitted request: its deadline, and a way to tell that its caller has gone."""

    def __init__(self, deadline: Deadline, gone: Callable[[], bool]):
        self.deadline = deadline
        self._gone = gone

    def tighten(self, seconds: float | None) -> None:
        """Apply a deadline the request gives in its body (V2 "timeout"); check it at once."""
        if seconds is not None:
            self.deadline = self.deadline.tightened(seconds)
        self.check()

    def check(self) -> None:
        """Raise the AdmissionError that stops this request before model time, if any."""
        if self.deadline.remaining() <= 0:
            raise refusal(DEADLINE_EXCEEDED,
                          f"The request's deadline ({self.deadline.seconds * 1000:.0f} ms "
                          "from its arrival) passed before it could be run.")
        if self._gone():
            raise refusal(CALLER_GONE, "The caller went away before the request was run.")


class Admission:
    """Per model version, how many requests this worker holds; more are refused at once."""

    def __init__(self, per_version: int, retry_after: int, enabled: bool = True):
        self.per_version = per_version
        self.retry_after = retry_after
        self.enabled = enabled
        self._held = collections.Counter()
        self._lock = threading.Lock()

    def admit(self, name: str, version: int, deadline: Deadline,
              gone: Callable[[], bool] = lambda: False) -> "_Admitted":
        """Let a request for version `version` of model `name` in, as a context manager
        that holds its place until it is answered; or raise AdmissionError at once."""
        ticket = Ticket(deadline, gone)
        ticket.check()
        key = (name, str(version))
        if self.enabled:
            with self._lock:
                full = getattr(_lane, "refusing", False) or self._held[key] >= self.per_version
                if not full:
                    self._held[key] += 1
            if full:
                raise refusal(OVERLOADED, "The service is at capacity; try again after "
                              f"{self.retry_after} s.", self.retry_after)
        return _Admitted(self, key, ticket)

    def overloaded(self) -> bool:
        """Whether some version holds as many requests as it may (shadow copies wait then)."""
        with self._lock:
            return any(count >= self.per_version for count in self._held.values())

    def _leave(self, key) -> None:
        if self.enabled:
            with self._lock:
                self._held[key] -= 1


class _Admitted:
    """An admitted request's place, counted in the queue depth until it is answered."""

    def __init__(self, admission: Admission, key: tuple, ticket: Ticket):
        self._admission, self._key, self.ticket = admission, key, ticket

    def __enter__(self) -> Ticket:
        metrics.QUEUE_DEPTH.labels(*self._key).inc()
        return self.ticket

    def __exit__(self, *exc) -> None:
        metrics.QUEUE_DEPTH.labels(*self._key).dec()
        metrics.DEADLINE.observe(self.ticket.deadline.seconds)  # as finally applied
        self._admission._leave(self._key)


class OverloadAnswer:
    """The 503 `overloaded` that a refusal lane gives a classifying request, in the API's
    error shape (the V2 one on /v2 routes), with Retry-After and the security headers."""

    def __init__(self, retry_after: int):
        from service.http.security_headers import HEADERS, OTHER_POLICY
        from service.observability.request_log import REQUEST_ID_HEADER, request_id

        self._request_id, self._request_id_header = request_id, REQUEST_ID_HEADER
        message = f"The service is at capacity; try again after {retry_after} s."
        self._bodies = {
            False: json.dumps({"error": {"code": OVERLOADED, "message": message}}).encode(),
            True: json.dumps({"error": message}).encode()}
        self._headers = [("Content-Type", "application/json"),
                         ("Retry-After", str(retry_after)), *HEADERS.items(),
                         ("Content-Security-Policy", OTHER_POLICY)]

    def __call__(self, path: str, given_request_id: str) -> tuple[list, bytes]:
        """The headers and body for a request to `path` with X-Request-ID
        `given_request_id` ("" without one), counted in the refusals."""
        metrics.REFUSALS.labels(reason=OVERLOADED).inc()
        body = self._bodies[path.startswith("/v2/")]
        return [*self._headers, ("Content-Length", str(len(body))),
                (self._request_id_header, self._request_id(given_request_id))], body


def lane_refusals(app: Callable, retry_after: int) -> Callable:
    """WSGI middleware for a refusal lane: a classifying request (a POST to a /predict or
    /v2 infer route) is answered 503 `overloaded` at once, without the app (whose routing,
    hooks and log line would cost a refusal as much as an answer); it is counted in the
    refusals, not logged. Everything else goes to the app, so health and metrics answer as
    usual."""
    answer = OverloadAnswer(retry_after)

    def middleware(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not (getattr(_lane, "refusing", False) and environ.get("REQUEST_METHOD") == "POST"
                and classifying(path)):
            return app(environ, start_response)
        headers, body = answer(path, environ.get("HTTP_X_REQUEST_ID", ""))
        start_response(OVERLOADED_STATUS, headers)
        return [body]

    return middleware


def classifying(path: str) -> bool:
    """Whether `path` is one of the routes that classify (service/http/routes.py,
    service/http/v2.py)."""
    return (path == "/predict" or (path.startswith("/models/") and path.endswith("/predict"))
            or (path.startswith("/v2/models/") and path.endswith("/infer")))


def socket_closed(sock: socket.socket | None) -> bool:
    """Whether the peer of `sock` has closed it or shut down its sending side, as nginx
    takes a client's half-close (EPOLLRDHUP) for an abort; a next request waiting to be
    read does not count."""
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLRDHUP)  # POLLHUP and POLLERR come with any mask
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed here meanwhile
        return True


def count_caller_gone() -> None:
    """Count a request dropped unread because its caller had gone (the gunicorn worker)."""
    metrics.REFUSALS.labels(reason=CALLER_GONE).inc()


def retry_after_ms(error: AdmissionError) -> int | None:
    """The Retry-After of a refusal in milliseconds (gRPC's grpc-retry-pushback-ms)."""
    return None if error.retry_after is None else int(math.ceil(error.retry_after * 1000))
