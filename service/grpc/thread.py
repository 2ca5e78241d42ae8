"""The gRPC face in a thread of every gunicorn worker, beside the HTTP face.

One process serves both faces from one copy of each model version, and calls from both
fill the same batches of the one batcher per process (the figures that chose this over
gRPC server processes of their own are in docs/performance.md). The thread runs the
grpc.aio server of service/grpc/server.py on an event loop of its own; every worker
listens on GRPC_PORT (SO_REUSEPORT), so the kernel spreads new connections over them.

gRPC is imported only here, after the fork: gunicorn's master never starts gRPC's
threads, which must not cross a fork.
"""

import asyncio
import threading

from service.config import Settings
from service.grpc import server
from service.grpc.server import BindError
from service.serving import Serving

__all__ = ["BindError", "GrpcThread"]

# How long a worker waits for its gRPC server to listen before it gives up starting.
START_SECONDS = 30.0


class GrpcThread:
    """The gRPC server of one worker process, run and stopped from its main thread."""

    def __init__(self, serving: Serving, settings: Settings, grace: float):
        self._serving, self._settings, self._grace = serving, settings, grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="grpc-server", daemon=True)

    def start(self) -> None:
        """Start serving; return once the port listens, or raise BindError."""
        self._thread.start()
        self._listening.wait(START_SECONDS)
        if self._error is not None:
            raise self._error
        if not self._listening.is_set():
            raise BindError(f"gRPC did not start listening within {START_SECONDS:.0f} s")

    def stop(self) -> None:
        """Begin the two-step stop (port closed, then drain); safe from a signal handler."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    def join(self, timeout: float) -> None:
        """Wait for the stop begun by `stop()` to finish, at most `timeout` seconds."""
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self._error = error
        finally:
            self._listening.set()

    async def _serve(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        await server.serve(self._serving, self._settings, self._stopping, self._grace,
                           on_listening=self._listening.set)
