"""gRPC server processes as gunicorn workers: gunicorn's master runs them beside HTTP's.

The master forks WORKERS + GRPC_WORKERS workers of one class; before each fork, `assign_role`
makes it an HTTP worker (service/process/gunicorn_worker.py, unchanged) or a gRPC one, whichever
role is short among the workers that will remain. A gRPC worker loads the app as an HTTP
worker does, so it has the same models (the same folder, polled, hot-swapped), batcher and
metrics, then serves the gRPC face on GRPC_PORT instead of HTTP.

So gunicorn supervises both alike: a worker that dies is forked again in the same role,
one that stops answering is killed (`notify` is the gRPC worker's heartbeat), and on
SIGTERM the master signals every worker at once and waits up to graceful_timeout for all
of them, so HTTP and gRPC drain together (in-flight calls finish, new ones are refused).
A gRPC worker's CPUs are chosen as an HTTP worker's are (service/process/cpus.py): the gRPC workers
split the CPUs among themselves, so each shares its cores with one HTTP worker at most.

gRPC is imported only in a gRPC worker, after the fork: the master never starts gRPC's
threads, which must not cross a fork.
"""

import asyncio
import os
import signal
import sys

from service.process.gunicorn_worker import LingeringThreadWorker

HTTP, GRPC = "http", "grpc"
# The exit status that makes gunicorn's master stop instead of forking the worker again.
WORKER_BOOT_ERROR = 3


def assign_role(server, worker, http_workers: int, grpc_workers: int) -> None:
    """Give `worker`, about to be forked, the first role and index that no remaining worker
    holds (in the master).

    The remaining workers are the youngest `num_workers - 1` besides it: gunicorn stops the
    oldest beyond its count, so during a reload (HUP) the new workers take every role again.
    Workers added beyond the count (TTIN) serve HTTP.
    """
    others = sorted(server.WORKERS.values(), key=lambda other: other.age)
    remaining = others[max(0, len(others) - (server.num_workers - 1)):]
    taken = {(getattr(other, "role", HTTP), getattr(other, "role_index", 0))
             for other in remaining}
    for role, count in ((HTTP, http_workers), (GRPC, grpc_workers)):
        for index in range(count):
            if (role, index) not in taken:
                worker.role, worker.role_index = role, index
                return
    worker.role = HTTP
    worker.role_index = sum(1 for role, _ in taken if role == HTTP)


class ServiceWorker(LingeringThreadWorker):
    """An HTTP worker, or in the gRPC role the gRPC server of service/grpc/server.py."""

    role = HTTP
    role_index = 0

    def init_process(self) -> None:
        """As gunicorn does; a gRPC worker first lets go of the HTTP listeners, so that
        they close when the HTTP workers and the master close theirs."""
        if self.role == GRPC:
            for listener in self.sockets:
                listener.close()
            self.sockets = []
        super().init_process()

    def run(self) -> None:
        """Serve HTTP, or gRPC until SIGTERM (then drain) or until the master is gone."""
        if self.role != GRPC:
            super().run()
            return
        from service.grpc.server import BindError

        try:
            asyncio.run(self._serve_grpc())
        except BindError as error:
            # As when gunicorn cannot bind PORT: the master stops, rather than fork again
            # and again a worker that cannot listen.
            self.log.error("%s", error)
            sys.exit(WORKER_BOOT_ERROR)

    async def _serve_grpc(self) -> None:
        from service.grpc import server
        from service.serving import serving_of

        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)

        def heartbeat():
            self.notify()
            if self.ppid != os.getppid():  # the master is gone: nobody supervises us
                stopping.set()

        serving = serving_of(self.wsgi)
        # Drained within gunicorn's own budget, before the master's SIGKILL.
        grace = max(1.0, self.cfg.graceful_timeout - 2)
        await server.serve(serving, serving.settings, stopping, grace, heartbeat)
