"""Gunicorn settings: gunicorn -c service/process/gunicorn_conf.py (the container runs the same)."""

import logging
import os
import shutil
import sys
import tempfile

from gunicorn.glogging import Logger

from service.api_keys import ApiKeyError, ApiKeys
from service.config import Settings, SettingsError
from service.observability.json_log import JsonFormatter, StderrRelay, gunicorn_logging
from service.process.cpus import pin_worker
from service.process.gunicorn_worker import assign_index
from service.process.worker_activity import activity

try:
    settings = Settings.from_env()
    # Read once here so that an unusable key file stops the master before any worker
    # starts (each worker reads it again, and then whenever it changes).
    ApiKeys(settings.api_key, settings.api_key_file)
except (SettingsError, ApiKeyError) as refusal:
    # One JSON line that says why, instead of gunicorn's traceback of its config file.
    record = logging.makeLogRecord({"name": "service", "levelno": logging.CRITICAL,
                                    "levelname": "CRITICAL", "msg": f"not starting: {refusal}"})
    print(JsonFormatter().format(record), file=sys.stderr, flush=True)
    sys.exit(2)

# Metrics from every worker are summed through files in one folder.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR",
                      os.path.join(tempfile.gettempdir(), f"prometheus-{os.getpid()}"))

wsgi_app = "service.wsgi:app"
bind = f"{settings.host}:{settings.port}"
# gunicorn's gthread worker, except that a thread answers a connection's back-to-back
# requests itself while every connection can have a thread, and the workers share the
# connections evenly; they all accept on the master's one socket, so no reuse_port
# (service/process/gunicorn_worker.py). Each worker also serves the Open Inference Protocol
# over gRPC, from a thread of its own (service/grpc/thread.py).
worker_class = "service.process.gunicorn_worker.ServiceWorker"
workers = settings.workers
threads = settings.threads
# No preload: each worker loads the model after the fork, so no interpreter or thread
# pool is ever shared across a fork.
preload_app = False
# A worker silent for this long is restarted; loading happens in the background.
timeout = 120
# On SIGTERM, requests in flight get this long to finish; no new ones are accepted.
graceful_timeout = 30
keepalive = 5
loglevel = settings.log_level
accesslog = None
errorlog = "-"
# gunicorn's own lines (start, workers, signals, errors) as JSON on stdout, like the app's.
logconfig_dict = gunicorn_logging(settings.log_level)


class QuietAccessLogger(Logger):
    """gunicorn's logger without access lines: the app logs every request itself, with more."""

    def access(self, resp, req, environ, request_time):
        """Nothing: a log config would otherwise make gunicorn format a line per request."""


logger_class = QuietAccessLogger

# In a worker, what native libraries print on stderr (TensorFlow, XNNPACK), relayed as JSON.
stderr_relay = StderrRelay()


def on_starting(server):
    """Start with an empty metrics folder, so files of earlier runs are not counted."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)


def pre_fork(server, worker):
    """Give the worker about to be forked its share of the CPUs and a slot of its own: its
    busy flag and connection count (service/process/worker_activity.py)."""
    assign_index(server, worker, settings.workers)
    worker.activity_slot = activity.take_slot()


def post_fork(server, worker):
    """Put the worker on its own CPUs before it starts a thread; relay its stderr before it
    imports anything that prints there."""
    if settings.pin_workers:
        try:
            pin_worker(worker.index, settings.workers)
        except OSError as error:  # a sandbox may refuse; the worker then runs anywhere
            server.log.warning("worker not pinned to its CPUs: %s", error.strerror)
    stderr_relay.start()
    activity.slot = worker.activity_slot


def worker_exit(server, worker):
    """Write out what the worker printed last."""
    stderr_relay.drain()


def child_exit(server, worker):
    """Forget a dead worker's live gauges and its slot (busy flag and connection count)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    activity.release_slot(worker.activity_slot)

