"""What the prediction store costs /predict: requests/s and p99 at 32 clients with the store
off and on (SQLite, 10% of images kept), side by side.

    python -m benchmarks.prediction_store --archive ../shared/datasets/cifar10-train.tar.gz

Two services run at once on the same models, one with PREDICTION_STORE off and one with it on
(a folder in a temporary directory, PREDICTION_STORE_SAMPLE 0.1); the runs take turns, --rounds
of each, so the two are compared within one run and each ratio is against the neighbouring
run of the other. Only one is under load at a time. The store's own figures follow: rows
written, records dropped, bytes on disk. Every server listens on 127.0.0.1; the load
generator is wrk (apt-get install -y wrk).
"""

import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import urllib.request

import numpy as np

from benchmarks import release_policies
from benchmarks.processes import Server
from benchmarks.release_policies import copy_models, measure, spread
from benchmarks.run_benchmark import prepare_images
from service.models.inference import ServingModel
from service.models.routing import Route
from service.store.database import SQLITE_FILE, Database
from service.store.recorder import Origin, PredictionRecorder

SIDES = ("store off", "store on")
# The canary benchmark's options for the models, load and rounds, then this one's own.
SHARED = ("--models", "--model-name", "--clients", "--seconds", "--rounds")
OPTIONS = (*(option for option in release_policies.OPTIONS if option[0] in SHARED),
           ("--sample-share", float, 0.1, "PREDICTION_STORE_SAMPLE of the store-on side"),
           ("--port", int, 18120, "the store-off service's port; the other has the next"),
           ("--cost-only", int, 0, "1: only the in-process cost per record, no services"))


def parse_args(argv):
    """Read the command line: the image options, then OPTIONS."""
    return release_policies.parse_args(argv, "python -m benchmarks.prediction_store", __doc__,
                                       OPTIONS)


def start(models_dir, port, log_path, store_settings):
    """A service on `models_dir` with its default settings (HTTP only), ready."""
    environment = {"HOST": "127.0.0.1", "PORT": str(port), "MODEL_DIR": models_dir,
                   "GRPC_ENABLED": "0", "LOG_LEVEL": "warning", **store_settings}
    server = Server(log_path, [".venv/bin/gunicorn", "-c", "service/process/gunicorn_conf.py"],
                    port, environment, log_path, "/health/ready")
    server.wait_ready()
    return server


def store_counters(server):
    """(written, dropped) from the service's /metrics."""
    with urllib.request.urlopen(server.url("/metrics"), timeout=10) as answer:
        text = answer.read().decode()
    totals = {"written": 0.0, "dropped": 0.0}
    for line in text.splitlines():
        for key, name in (("written", "prediction_store_records_written_total{"),
                          ("dropped", "prediction_store_records_dropped_total{")):
            if line.startswith(name):
                totals[key] += float(line.rsplit(" ", 1)[1])
    return totals["written"], totals["dropped"]


def main(argv=None):
    """Alternate the two sides --rounds times; print the table and the store's figures."""
    args = parse_args(argv)
    work = tempfile.mkdtemp(prefix="prediction-store-")
    image_list, _ = prepare_images(args, work)
    models_dir = os.path.join(work, "models")
    copy_models(args.models, models_dir, [args.model_name])
    record_cost(models_dir, args, image_list, work)
    if args.cost_only:
        return
    store = os.path.join(work, "store")
    settings = {"store off": {"MODEL_NAME": args.model_name},
                "store on": {"MODEL_NAME": args.model_name, "PREDICTION_STORE": store,
                             "PREDICTION_STORE_SAMPLE": str(args.sample_share)}}
    servers = {}
    figures = {side: [] for side in SIDES}
    try:
        for offset, side in enumerate(SIDES):
            servers[side] = start(models_dir, args.port + offset,
                                  os.path.join(work, f"{side.replace(' ', '-')}.log"),
                                  settings[side])
        for round_number in range(1, args.rounds + 1):
            for side in SIDES:
                rate, p99 = measure(servers[side], image_list, args)
                figures[side].append((rate, p99))
                print(f"round {round_number}, {side}: {rate:.1f} requests/s, p99 {p99:.1f} ms",
                      flush=True)
        written, dropped = store_counters(servers["store on"])
    finally:
        for server in servers.values():
            server.stop()
    report(figures, args)
    with sqlite3.connect(os.path.join(store, SQLITE_FILE)) as database:
        rows = database.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        kept = database.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM images").fetchone()
    size = sum(os.path.getsize(os.path.join(store, name)) for name in os.listdir(store))
    print(f"\nstore: {rows} rows, {kept[0]} images kept ({kept[1] / 2 ** 20:.1f} MiB), "
          f"{size / 2 ** 20:.1f} MiB on disk; {written:.0f} records written, {dropped:.0f} "
          "dropped")
    shutil.rmtree(work, ignore_errors=True)


def record_cost(models_dir, args, image_list, work, count=5000):
    """The store's CPU time per image in one process: on the request thread (ids, hash,
    queue) and on the writer thread (rank, encode, insert), from thread CPU clocks."""
    folder = os.path.join(models_dir, args.model_name)
    version = max(int(name) for name in os.listdir(folder) if name.isdigit())
    model = ServingModel(os.path.join(folder, str(version)), threads=1, all_core_threads=1)
    with open(image_list, encoding="utf-8") as file:
        encoded = [open(path.strip(), "rb").read() for path in file][:1000]
    recorder = PredictionRecorder(Database(os.path.join(work, "cost-store")), args.sample_share,
                                  count + 1, 1 << 30, 30, 0)
    route = Route(args.model_name, model, "stable")
    scores = np.random.default_rng(0).dirichlet(np.ones(len(model.classes)), 1).astype(np.float32)
    pixels = np.zeros((1, *model.input_shape), np.uint8)
    started = time.thread_time()
    for index in range(count):
        recorder.record(route, pixels, scores, Origin("/predict", "r", time.perf_counter(),
                                                      [encoded[index % len(encoded)]]))
    request_seconds = time.thread_time() - started
    process_started = time.process_time()
    assert recorder.flush(timeout=600)
    writer_seconds = time.process_time() - process_started
    print(f"in process, {count} records ({args.sample_share:.0%} of images kept): "
          f"{request_seconds / count * 1e6:.1f} us CPU per image on the request thread, "
          f"{writer_seconds / count * 1e6:.1f} us per image on the writer thread", flush=True)


def report(figures, args):
    """The table: each side's requests/s and p99, and the store-on side's ratios."""
    print(f"\n{args.clients} clients, {args.seconds} s per run, {args.rounds} rounds "
          "(median (min-max); ratio: per round, store on against store off)")
    print("| side | requests/s | p99 ms | requests/s ratio | p99 ratio |")
    print("| --- | --- | --- | --- | --- |")
    for side in SIDES:
        pairs = list(zip(figures[side], figures["store off"], strict=True))
        rate_ratios = [rate / base for (rate, _), (base, _) in pairs]
        tail_ratios = [p99 / base for (_, p99), (_, base) in pairs]
        print(f"| {side} | {spread([rate for rate, _ in figures[side]])} | "
              f"{spread([p99 for _, p99 in figures[side]])} | "
              f"{statistics.median(rate_ratios):.3f} ({min(rate_ratios):.3f}-"
              f"{max(rate_ratios):.3f}) | {statistics.median(tail_ratios):.3f} "
              f"({min(tail_ratios):.3f}-{max(tail_ratios):.3f}) |")


if __name__ == "__main__":
    main()
