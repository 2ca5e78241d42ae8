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

Under overload the worker says no early (service/runtime/admission.py). gunicorn queues every
readable connection for its thread pool without bound, and a request waiting there is
one the app never sees. Here, once MAX_WAITING_REQUESTS requests wait for a thread, the
worker refuses a simple prediction on its own thread, from the request's bytes
(service/process/early_refusal.py), and sends every other readable connection to a small
refusal lane: REFUSAL_THREADS threads on which the app answers 503 `overloaded` to a
prediction before reading its body, and health, metrics and every other route as usual
(so liveness answers under overload). The main thread runs ahead of the request threads for a
CPU where the system allows it (REALTIME_MAIN_THREAD, service/process/cpus.py), so that a
refusal does not wait behind them.
"""

import collections
import functools
import select
import selectors
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gunicorn.arbiter import Arbiter
from gunicorn.http import get_parser
from gunicorn.workers.gthread import ThreadWorker

from service.config import Settings
from service.process.cpus import run_this_thread_first
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
# Threads that answer requests beyond MAX_WAITING_REQUESTS (a refusal takes well under a
# millisecond of Python; two keep one slow client from holding the lane).
REFUSAL_THREADS = 2
# New connections a worker takes in one turn of its loop while overloaded.
OVERLOAD_ACCEPT_BATCH = 64


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
        self._waiting_limit = 0  # requests that may wait for a thread; 0: no limit
        self._handed_out = 0  # requests given to the pool (main thread only)
        self._taken_up = 0  # of those, the ones a thread has begun (pool threads)
        self._taken_lock = threading.Lock()
        self._refusals = None
        self._main_thread_first = False  # REALTIME_MAIN_THREAD
        self._refuse_from_bytes = None  # service/process/early_refusal.py's, when it may
        self._note_arrival = lambda arrived: None  # service/runtime/admission.py's, once imported

    def init_process(self) -> None:
        """Read the waiting limit and start the refusal lane, then run as gunicorn does."""
        # Imported here, in the worker: the master imports this module before it sets
        # PROMETHEUS_MULTIPROC_DIR, and prometheus_client must first be imported after that.
        from service.process.early_refusal import refuse_from_bytes
        from service.runtime.admission import (
            OverloadAnswer,
            count_caller_gone,
            note_arrival,
            refuse_on_this_thread,
            socket_closed,
        )

        self._note_arrival, self._caller_gone = note_arrival, socket_closed
        self._count_caller_gone = count_caller_gone
        settings = Settings.from_env()
        self._main_thread_first = bool(settings.realtime_main_thread)
        if settings.admission:
            self._waiting_limit = settings.max_waiting_requests
            self._refusals = ThreadPoolExecutor(REFUSAL_THREADS, "refusal",
                                                initializer=refuse_on_this_thread)
            # Not for TLS, whose bytes cannot be read unwrapped, nor where gunicorn looks
            # for HTTP/2's preface in a new connection's first bytes.
            if not self.cfg.is_ssl and self.cfg.http2_cleartext not in ("prior-knowledge",
                                                                        "both"):
                self._refuse_from_bytes = functools.partial(
                    refuse_from_bytes, answer=OverloadAnswer(settings.retry_after_seconds))
        super().init_process()

    def run(self) -> None:
        """Put this, the main thread, ahead of the request threads for a CPU (where the system
        allows it: service/process/cpus.py), then run gunicorn's loop. The request threads,
        started from here, are ordinary ones."""
        if self._main_thread_first:
            try:
                run_this_thread_first()
            except OSError as error:
                self.log.info("the worker's main thread runs at ordinary priority: the system "
                              "refused it real-time priority (%s); docs/deployment.md says "
                              "how to allow it", error.strerror)
        super().run()

    def on_client_socket_readable(self, conn, client) -> None:
        """A kept-alive connection's next request: refused in place while overloaded (the
        connection stays in the poller), else handed on as gunicorn does."""
        if self._waiting_full() and self._refused_here(conn, self.keepalived_conns):
            return
        super().on_client_socket_readable(conn, client)

    def on_pending_socket_readable(self, conn, client) -> None:
        """A new connection's first request: the same."""
        if self._waiting_full() and self._refused_here(conn, self.pending_conns):
            return
        super().on_pending_socket_readable(conn, client)

    def enqueue_req(self, conn) -> None:
        """Hand the connection's request to a thread. Once MAX_WAITING_REQUESTS wait for
        one, a simple request is refused here, any other whose request is here goes to the
        refusal lane, and one whose request is not here yet waits for it in the poller, not
        in the pool's queue."""
        full = self._waiting_full()
        if full and self._refused_here(conn):
            return
        if self._waiting_limit and self._caller_gone(conn.sock):
            self._drop(conn)
            return
        if full and not (_read_ahead(conn) or _readable([conn.sock], 0)):
            self._wait_for_request(conn)
            return
        conn.arrived = time.monotonic()  # its request is here, or arrives next
        if full:
            future = self._refusals.submit(super().handle, conn)
        else:
            self._handed_out += 1
            future = self.tpool.submit(self._take_up, conn)
        future.add_done_callback(
            lambda done: self.method_queue.defer(self.finish_request, conn, done))

    def _refused_here(self, conn, polled: collections.deque | None = None) -> bool:
        """Refuse a simple request on this thread, from its bytes
        (service/process/early_refusal.py), and keep the connection in the poller for the
        next; or, with nothing to read yet, leave it there to wait for its request. True
        when taken care of; False when the refusal lane must parse the request (its bytes
        are in gunicorn's parser then), or answer it with `Connection: close` as the worker
        stops. `polled`: the queue of connections in the poller that holds it already
        (kept-alive or pending), if any: a connection stays in the poller without a call."""
        if (self._refuse_from_bytes is None or not self.alive or conn.is_http2
                or _read_ahead(conn)):
            return False
        try:
            answered, data = self._refuse_from_bytes(conn.sock)
        except BlockingIOError:  # its request is not here yet
            if polled is not None:
                return False
            self._wait_for_request(conn)
            return True
        except OSError:  # the client went, or does not read its answers
            self._forget(conn, polled)
            self.nr_conns -= 1
            conn.close()
            return True
        if answered < len(data):  # the rest is the parser's, as if it had read it
            if conn.parser is None:
                conn.parser = get_parser(self.cfg, conn.sock, conn.client)
            conn.parser.unreader.unread(data[answered:])
            conn.data_ready = True  # a thread must not wait for the socket to say so
        if not answered:
            return False
        if _read_ahead(conn):  # a next request came with it: to a thread, as gunicorn does
            self._forget(conn, polled)
            self.enqueue_req(conn)
            return True
        next_request = functools.partial(self.on_client_socket_readable, conn)
        if polled is None:
            self.poller.register(conn.sock, selectors.EVENT_READ, next_request)
        else:  # a new callback, no system call (selectors keeps it)
            polled.remove(conn)
            self.poller.modify(conn.sock, selectors.EVENT_READ, next_request)
        conn.set_timeout()
        self.keepalived_conns.append(conn)  # in the order of their timeouts
        return True

    def _forget(self, conn, polled: collections.deque | None) -> None:
        """Take a connection out of the poller and its queue, if it is there."""
        if polled is not None:
            self.poller.unregister(conn.sock)
            polled.remove(conn)

    def _drop(self, conn) -> None:
        """Close a connection whose client has gone, unread: a request it left behind would
        only take a thread from one still waited for (counted as refused, caller_gone)."""
        try:
            left_a_request = _readable([conn.sock], 0) and bool(
                conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:  # reset, or nothing there after all
            left_a_request = False
        if left_a_request:
            self._count_caller_gone()
        self.nr_conns -= 1
        conn.close()

    def _wait_for_request(self, conn) -> None:
        """Leave a connection in the poller until its request arrives, as gunicorn does
        with one that sent nothing in time (enqueue_req again once it is readable). Its
        socket is non-blocking already: gunicorn makes it so when it accepts it and when it
        puts a connection back in the poller."""
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ,
                             functools.partial(self.on_pending_socket_readable, conn))

    def _waiting_full(self) -> bool:
        """Whether MAX_WAITING_REQUESTS requests wait for a thread (admission on)."""
        return bool(self._waiting_limit) and (
            self._handed_out - self._taken_up >= self._waiting_limit)

    def _take_up(self, conn) -> object:
        """handle(), counted out of the waiting requests as a thread begins it."""
        with self._taken_lock:
            self._taken_up += 1
        return self.handle(conn)

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
        overloaded = self._waiting_full()
        if not overloaded and not self._least_full():
            self._resting_until = time.monotonic() + BALANCE_RECHECK_SECONDS
            self._update_listening()
            return
        super().accept(listener)
        # Overloaded, take every connection already waiting (up to OVERLOAD_ACCEPT_BATCH):
        # one a turn of the loop leaves the others in the kernel's backlog, unseen, until
        # their clients give up and connect again (each time a new connection to accept).
        for _ in range(OVERLOAD_ACCEPT_BATCH - 1 if overloaded else 0):
            before = self.nr_conns
            if before >= self.worker_connections:
                break
            super().accept(listener)
            if self.nr_conns == before:  # none was waiting
                break
        self._left_waiting_since = None
        activity.set_connections(self.nr_conns)

    def handle_request(self, req, conn) -> bool:
        """Answer as gunicorn does; close the connection afterwards if this worker holds
        more than its share (a pool thread)."""
        fewest = activity.fewest_connections_elsewhere()
        if (fewest is not None and self.nr_conns > fewest + 1
                and time.monotonic() - self._others_failed_at > BALANCE_TRUST_SECONDS):
            req.must_close = True
        # The wait for a thread counts against the request's deadline
        # (service/runtime/admission.py); a next request on the same connection arrives
        # about now.
        self._note_arrival(getattr(conn, "arrived", None))
        conn.arrived = None
        try:
            return super().handle_request(req, conn)
        finally:
            self._note_arrival(None)

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
    return _read_ahead(conn) or _readable([conn.sock], LINGER_SECONDS)


def _read_ahead(conn) -> bool:
    """Whether gunicorn's parser already holds bytes of the connection's next request (which
    no longer make its socket readable)."""
    return conn.parser is not None and bool(conn.parser.unreader.buf.getvalue())


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
