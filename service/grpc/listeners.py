"""Closing a worker's gRPC port to new connections while the calls already sent are served.

Why: nginx streams a gRPC call's body to a replica as it arrives, so once it has written
any of a call it cannot send it again to another replica (nginx's ngx_http_upstream_next:
no retry when the request was sent and its body is not buffered). gRPC's own stop closes
the port and, in the same step, cancels every call that has reached the server but that
the servicer has not yet taken up (under load there are several): each is a lost call,
answered CANCELLED, though the client did nothing wrong.

So a stopping worker's gRPC server first shuts its listening sockets down itself: the kernel takes
them out of listening, a new connection is refused at once, and nginx, having sent nothing
on it, tries another replica. The connections already made stay open, and the worker
serves their calls as usual for a moment (server.DRAIN_SECONDS) before gRPC's own stop,
which then finds nothing waiting. Only a connection the kernel has queued but gRPC has not
yet accepted, at the very instant of the shutdown, is reset: gRPC accepts on threads of
its own, so that window is a matter of microseconds. gRPC logs one line as its acceptor
sees the socket go ("Closing acceptor. Failed accept4: Invalid argument").
"""

import os
import socket


def close_to_new_connections(port: int) -> int:
    """Stop this process's TCP sockets listening on `port` from taking new connections,
    leaving the connections made open; the number of sockets so closed."""
    closed = 0
    for listener in _listening_sockets(port):
        with listener:
            listener.shutdown(socket.SHUT_RD)
            closed += 1
    return closed


def _listening_sockets(port: int) -> list[socket.socket]:
    """Duplicates of this process's TCP sockets listening on `port` (gRPC opened them and
    keeps them to itself; shutting a duplicate down shuts down the one socket)."""
    found, seen = [], set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            # One socket once, though its duplicates (ours too) have descriptors of their own.
            if not target.startswith("socket:") or target in seen:
                continue
            seen.add(target)
            duplicate = socket.socket(fileno=os.dup(int(name)))
        except OSError:  # closed meanwhile (the listing's own descriptor among them)
            continue
        try:
            listening = (duplicate.type == socket.SOCK_STREAM
                         and duplicate.family in (socket.AF_INET, socket.AF_INET6)
                         and duplicate.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                         and duplicate.getsockname()[1] == port)
        except OSError:
            listening = False
        if listening:
            found.append(duplicate)
        else:
            duplicate.close()
    return found
