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
"""

import select

from gunicorn.workers.gthread import ThreadWorker

# Long enough for a client that sends its next request as soon as it has the answer;
# short enough that a thread lingering for a quiet client is soon free for others.
LINGER_SECONDS = 0.002


class LingeringThreadWorker(ThreadWorker):
    """gthread, except that a thread serves a connection's back-to-back requests itself."""

    def handle(self, conn) -> object:
        """Answer requests on `conn` while they follow each other closely (a pool thread)."""
        keepalive = super().handle(conn)
        while (keepalive is True and self.alive and not conn.is_http2
               and self.nr_conns <= self.cfg.threads and _next_request_soon(conn)):
            keepalive = super().handle(conn)
        return keepalive


def _next_request_soon(conn) -> bool:
    """Whether the next request is already read ahead, or arrives within LINGER_SECONDS."""
    if conn.parser.unreader.buf.getvalue():
        return True
    try:
        readable, _, _ = select.select([conn.sock], [], [], LINGER_SECONDS)
    except (OSError, ValueError):  # the socket was closed meanwhile
        return False
    return bool(readable)
