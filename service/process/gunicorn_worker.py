"""gunicorn's threaded worker, with a thread that answered a request staying for the next one.

The stock gthread worker hands every kept-alive connection back to its main thread after
each answer: a wake-up through a pipe, a poll, then a hand-off to a pool thread for the
next request. A client that sends its next request straight away pays for those three
thread switches every time. Here the thread that answered waits a moment
(`LINGER_SECONDS`) for the connection's next request and, if it comes, answers it itself;
otherwise the connection goes back to the main thread as before.

A thread lingers only while the worker has no more connections than threads: then every
connection could have a thread of its own, and no lingering thread keeps another
connection's request waiting. With more connections than threads, the worker is the
stock one, which shares its threads fairly.

The workers also share the connections evenly. They all accept on the one socket the
master opened, and a worker accepts a new connection only while no other accepting
worker holds fewer (the counts are in service/process/worker_activity.py). Left to whichever
worker wakes first, 32 kept-alive clients split 30/2; with a socket per worker
(SO_REUSEPORT), the kernel's hash of the addresses split them anywhere from 16/16 to
22/10, and the clients of the fuller worker waited longer. A fuller worker still wakes
for a new connection, leaves it, and stays out of the poller for
`BALANCE_RECHECK_SECONDS`; if the connection still waits then, it looks again, and once
it has waited `BALANCE_LIMIT_SECONDS` it takes it, so a stuck worker never keeps a
connection out. Without new connections it sleeps: polling for the others' counts would
take the GIL from its own requests (a lone client lost 0.2 ms that way).

Counts can be stale: a client that drops 32 connections and opens 32 new ones at once
finds a worker still counting the old ones, and the new ones split 21/11. So a worker
that holds more than one connection above the emptiest other also answers with
`Connection: close` (as gunicorn does before a restart), and the client's next connection
goes to a worker with fewer; not while other workers have lately left a connection waiting.
"""

import select
import selectors
import sys
import time

from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

from service.process.worker_activity import activity

# Long enough for a client that sends its next request as soon as it has the answer;
# short enough that a thread lingering for a quiet client is soon free for others.
LINGER_SECONDS = 0.002
# How often a worker that leaves new connections to the others looks again, and how long
# a connection may wait for them before this worker takes it anyway.
BALANCE_RECHECK_SECONDS = 0.005
BALANCE_LIMIT_SECONDS = 0.05
# After taking a connection the others left waiting, send none back to them for this long.
BALANCE_TRUST_SECONDS = 1.0


class LingeringThreadWorker(ThreadWorker):
    """gthread, except that a thread serves a connection's back-to-back requests itself, and
    a worker takes new connections only while no other holds fewer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._listening = False  # whether the listeners are in the poller right now
        self._resting_until = 0.0  # out of the poller until then, after leaving a connection
        self._left_waiting_since = None  # when a connection began waiting for the others
        self._left_waiting_seen = 0.0  # when this worker last saw it waiting
        self._others_failed_at = -BALANCE_TRUST_SECONDS  # when they last left one too long

    def handle(self, conn) -> object:
        """Answer requests on `conn` while they follow each other closely (a pool thread)."""
        keepalive = super().handle(conn)
        while (keepalive is True and self.alive and not conn.is_http2
               and self.nr_conns <= self.cfg.threads and _next_request_soon(conn)):
            keepalive = super().handle(conn)
        return keepalive

    def set_accept_enabled(self, enabled: bool) -> None:
        """gunicorn's loop says whether to accept at all."""
        self._accepting = enabled
        self._update_listening()

    def accept(self, listener) -> None:
        """Accept as gunicorn does if no other worker holds fewer connections; otherwise
        leave the connection to them, and look again after a moment."""
        if not self._least_full():
            self._resting_until = time.monotonic() + BALANCE_RECHECK_SECONDS
            self._update_listening()
            return
        super().accept(listener)
        self._left_waiting_since = None
        activity.set_connections(self.nr_conns)

    def handle_request(self, req, conn) -> bool:
        """Answer as gunicorn does; close the connection afterwards if this worker holds
        more than its share (a pool thread)."""
        fewest = activity.fewest_connections_elsewhere()
        if (fewest is not None and self.nr_conns > fewest + 1
                and time.monotonic() - self._others_failed_at > BALANCE_TRUST_SECONDS):
            req.must_close = True
        return super().handle_request(req, conn)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """Each turn of gunicorn's loop: publish the count, end a rest that is over, poll."""
        activity.set_connections(self.nr_conns if self._accepting else None)
        self._update_listening()
        if self._accepting and not self._listening:
            timeout = min(timeout, max(0.0, self._resting_until - time.monotonic()))
        super().wait_for_and_dispatch_events(timeout)

    def _update_listening(self) -> None:
        """Put the listeners in the poller while accepting and not resting; else take them out."""
        listen = self._accepting and time.monotonic() >= self._resting_until
        if listen != self._listening:
            for listener in self.sockets:
                if listen:
                    listener.setblocking(False)
                    self.poller.register(listener, selectors.EVENT_READ, self.accept)
                else:
                    self.poller.unregister(listener)
            self._listening = listen

    def _least_full(self) -> bool:
        """Whether no other accepting worker holds fewer connections, or the connection
        waiting now has waited too long for them to take it."""
        fewest = activity.fewest_connections_elsewhere()
        if fewest is None or self.nr_conns <= fewest:
            return True
        if not _connection_waiting(self.sockets):  # another worker took it meanwhile
            return False
        now = time.monotonic()
        # One seen waiting lately too: count it as the same wait, however late this look is.
        if (self._left_waiting_since is None
                or now - self._left_waiting_seen > BALANCE_LIMIT_SECONDS):
            self._left_waiting_since = now
        self._left_waiting_seen = now
        if now - self._left_waiting_since < BALANCE_LIMIT_SECONDS:
            return False
        self._others_failed_at = now
        return True


def _connection_waiting(listeners) -> bool:
    """Whether a new connection waits on any of `listeners` to be accepted."""
    return _readable(listeners, 0)


def _next_request_soon(conn) -> bool:
    """Whether the next request is already read ahead, or arrives within LINGER_SECONDS."""
    return bool(conn.parser.unreader.buf.getvalue()) or _readable([conn.sock], LINGER_SECONDS)


def _readable(sockets, timeout: float) -> bool:
    """Whether any of `sockets` is readable within `timeout` seconds."""
    try:
        readable, _, _ = select.select(sockets, [], [], timeout)
    except (OSError, ValueError):  # a socket was closed meanwhile
        return False
    return bool(readable)


class ServiceWorker(LingeringThreadWorker):
    """The service's worker: HTTP on gunicorn's threads, and the gRPC face in a thread
    beside them (service/grpc/thread.py), both from the one copy of each model."""

    index = 0  # which share of the CPUs it runs on (`assign_index`)
    grpc = None

    def run(self) -> None:
        """Start gRPC (unless GRPC_ENABLED=0), serve HTTP until stopped, then let gRPC drain."""
        from service.serving import serving_of  # the app's, loaded after the fork

        serving = serving_of(self.wsgi)
        if serving.settings.grpc_enabled:
            from service.grpc.thread import BindError, GrpcThread  # gRPC only after the fork

            # Drained within gunicorn's own budget, before the master's SIGKILL.
            self.grpc = GrpcThread(serving, serving.settings,
                                   grace=max(1.0, self.cfg.graceful_timeout - 2))
            try:
                self.grpc.start()
            except BindError as error:
                # As when gunicorn cannot bind PORT: the master stops, rather than fork
                # again and again a worker that cannot listen.
                self.log.error("%s", error)
                sys.exit(Arbiter.WORKER_BOOT_ERROR)
        try:
            super().run()
        finally:
            if self.grpc is not None:
                self.grpc.stop()
                self.grpc.join(self.cfg.graceful_timeout)

    def handle_exit(self, sig, frame) -> None:
        """SIGTERM: both faces stop at once; in-flight requests and calls finish."""
        super().handle_exit(sig, frame)
        if self.grpc is not None:
            self.grpc.stop()


def assign_index(server, worker, workers: int) -> None:
    """Give `worker`, about to be forked, the first index below `workers` that no remaining
    worker holds (in the master), so each keeps its own share of the CPUs.

    The remaining workers are the youngest `num_workers - 1` besides it: gunicorn stops the
    oldest beyond its count, so during a reload (HUP) the new workers take every index again.
    Workers added beyond the count (TTIN) take the next numbers.
    """
    others = sorted(server.WORKERS.values(), key=lambda other: other.age)
    remaining = others[max(0, len(others) - (server.num_workers - 1)):]
    taken = {getattr(other, "index", 0) for other in remaining}
    worker.index = next(index for index in range(max(workers, len(taken) + 1))
                        if index not in taken)
