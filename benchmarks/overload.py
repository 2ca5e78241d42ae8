"""Overload: what callers see at 32 clients and at 1,000 clients that each give up after 1 s.

Run from the repository root, e.g.:
    python -m benchmarks.overload --rounds 3
By default it starts two services on this machine with the shipped models, one with
ADMISSION=1 and one with ADMISSION=0, both alive the whole run (the idle one costs
nothing), and measures them in alternating rounds. `--target NAME=URL` measures running
services instead (e.g. `--target proxy=http://127.0.0.1:8000` for the compose stack).
`--service-cpus 0 --clients 500 --capacity-clients 16` starts them on CPU 0 with one worker
(the default load's share of it) and keeps the load generator on the other CPUs, so that
the generator's own CPU is not taken from the service.

Each round, for each target:
1. one client for a few seconds: its normal p50;
2. 32 clients: the capacity (requests/s answered 200);
3. 1,000 clients, each giving up on a request after --budget (1 s), sending its budget as
   X-Request-Timeout; a refused client waits the Retry-After it was given, as the protocol
   asks (with no Retry-After, it sends again at once);
4. as soon as the 1,000 stop, one client for 1 s: its p50 then.

The overload's figures are given twice: over all of it, and over its steady part, the
requests sent after --warm-up (2 s). The 1,000 clients connect at once, and the first
refusals send the next waves of retries together; that start is in the first set only.

The load generator is asyncio, one kept-alive connection per client (a client whose
request timed out closes it and opens another); the 1,000 clients are spread over
--processes event loops, so that one loop's lag does not pass for the service's. Python's
garbage collector is off in them during a load: one collection stalled all of a loop's
clients for about 100 ms. Each loop's own lag is measured and printed. The generator shares
the machine with the services: the cores each used during a load are printed (the
service's only for one this benchmark started). The service's own view
(its /predict latency histogram, which starts once a thread has the request) is printed
beside the clients'.
"""

import argparse
import asyncio
import gc
import io
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

import numpy as np
import requests
from PIL import Image

from benchmarks.processes import cpu_seconds, process_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINGLE_SECONDS = 3
AFTER_SECONDS = 1.0
LAG_PROBE_SECONDS = 0.01


def parse_args(argv):
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every target (3)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per load (10)")
    parser.add_argument("--clients", type=int, default=1000, help="clients in overload (1000)")
    parser.add_argument("--capacity-clients", type=int, default=32, help="(32)")
    parser.add_argument("--processes", type=int, default=4,
                        help="client processes for the overload, one event loop each (4)")
    parser.add_argument("--budget", type=float, default=1.0, help="a client's budget, s (1)")
    parser.add_argument("--warm-up", type=float, default=2.0,
                        help="seconds of the overload left out of its steady figures: the "
                             "1,000 connections opened at once, and the first waves of "
                             "retries that they set off (2)")
    parser.add_argument("--target", action="append", default=[],
                        help="NAME=URL of a running service; repeat for several")
    parser.add_argument("--service-cpus", type=cpu_list, default=None,
                        help="CPUs (e.g. 0) to start the services on, one worker per CPU; "
                             "the load generator then runs on the others, so that its own "
                             "CPU is not taken from the service (default: all, shared)")
    parser.add_argument("--models", default=os.path.join(ROOT, "models"))
    parser.add_argument("--output", default="benchmark-results")
    return parser.parse_args(argv)


def cpu_list(text: str) -> set[int]:
    """"0,1" -> {0, 1}: CPUs this machine lets this process use, leaving it at least one."""
    cpus, usable = {int(item) for item in text.split(",")}, os.sched_getaffinity(0)
    if not cpus or not cpus < usable:
        raise argparse.ArgumentTypeError(f"give some of the CPUs {sorted(usable)}, not all")
    return cpus


def jpeg() -> bytes:
    """A 32x32 JPEG of noise, as a CIFAR-sized photo is."""
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class Client:
    """One kept-alive HTTP/1.1 connection that posts the image to /predict."""

    def __init__(self, url: str, body: bytes, budget: float):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.request = (f"POST /predict HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                        f"Content-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n"
                        f"X-Request-Timeout: {int(budget * 1000)}\r\n\r\n").encode() + body
        self.budget = budget
        self.streams = None

    async def post(self) -> tuple[int, float, float]:
        """(status, seconds, retry_after); status 0 for a time-out or a broken connection."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.budget):  # no task per request, as wait_for makes
                return await self._exchange(started)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            return 0, time.perf_counter() - started, 0.0

    async def _exchange(self, started):
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in lines[1:] if line)}
        await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return (int(lines[0].split()[1]), time.perf_counter() - started,
                float(headers.get("retry-after", "0") or 0))

    def close(self):
        """Drop the connection; the next request opens another."""
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def run_load(url, body, clients, seconds, budget, processes=1):
    """`clients` clients posting for `seconds`, spread over `processes` processes (one
    event loop each): every answer as (status, seconds, end), and the event loops' lags."""
    if processes <= 1 or clients < processes:
        return asyncio.run(load_in_loop(url, body, clients, seconds, budget))
    shares = [clients // processes + (index < clients % processes) for index in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.starmap(load_in_loop_sync, [(url, body, share, seconds, budget)
                                                 for share in shares])
    return ([answer for answers, _ in parts for answer in answers],
            [lag for _, lags in parts for lag in lags])


def load_in_loop_sync(url, body, clients, seconds, budget):
    """load_in_loop in a process of its own."""
    return asyncio.run(load_in_loop(url, body, clients, seconds, budget))


async def load_in_loop(url, body, clients, seconds, budget):
    """`clients` clients on this event loop posting for `seconds`: their answers, and how
    late the loop woke from each of its own short sleeps meanwhile (its lag, which the
    clients' figures include)."""
    answers, lags = [], []
    # A collection of the growing lists of answers stalls every client on this loop at
    # once (lags of about 100 ms, each seen as a slow answer); none runs during the load.
    gc.collect()
    gc.disable()
    stop_at = time.perf_counter() + seconds

    async def watch_lag():
        while time.perf_counter() < stop_at:
            asleep = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_SECONDS)
            lags.append(time.perf_counter() - asleep - LAG_PROBE_SECONDS)

    async def one_client():
        client = Client(url, body, budget)
        while time.perf_counter() < stop_at:
            status, spent, retry_after = await client.post()
            answers.append((status, spent, time.perf_counter()))
            if status in (429, 503) and retry_after:
                await asyncio.sleep(min(retry_after, max(0.0, stop_at - time.perf_counter())))
        client.close()

    try:
        await asyncio.gather(watch_lag(), *(one_client() for _ in range(clients)))
    finally:
        gc.enable()
    return answers, lags


def percentile(values, share):
    """The `share` percentile of `values` in ms (nearest rank), or None without any."""
    if not values:
        return None
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def server_buckets(url):
    """{status: {le: count}} of the service's /predict latency histogram (all workers)."""
    buckets = {}
    text = requests.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("http_request_duration_seconds_bucket{") and '"/predict"' in line:
            labels, _, value = line.rpartition(" ")
            fields = dict(item.split("=", 1) for item in labels[labels.index("{") + 1:-1]
                          .split(","))
            status, le = fields["status"].strip('"'), fields["le"].strip('"')
            buckets.setdefault(status, {})[le] = float(value)
    return buckets


def server_p99_ms(before, after, status):
    """The bucket bound (ms) under which 99% of the answers with `status` fell, as the
    service measured them (its own time, without the client's or the network's)."""
    now, then = after.get(status, {}), before.get(status, {})
    counts = sorted(((float(le), now[le] - then.get(le, 0)) for le in now),
                    key=lambda item: item[0])
    if not counts or counts[-1][1] == 0:
        return None
    total = counts[-1][1]
    return next(1000 * bound for bound, count in counts if count >= 0.99 * total)


def measure(url, body, args, pid=None):
    """One round on one target: the figures the issue's targets are judged on, over the
    whole overload and over its steady part (requests sent after --warm-up seconds), and
    the CPU that the service (process `pid`, when this benchmark started it) and the load
    generator used."""
    single, _ = run_load(url, body, 1, SINGLE_SECONDS, 10.0)
    (normal, _), normal_cpu = with_cpu(
        "capacity", pid, lambda: run_load(url, body, args.capacity_clients, args.seconds, 10.0))
    before = server_buckets(url)
    began = time.perf_counter()
    (over, lags), over_cpu = with_cpu("overload", pid, lambda: run_load(
        url, body, args.clients, args.seconds, args.budget, args.processes))
    over_buckets = server_buckets(url)
    after, _ = run_load(url, body, 1, AFTER_SECONDS, 10.0)
    capacity = sum(status == 200 for status, _, _ in normal) / args.seconds
    steady = [answer for answer in over if answer[2] - answer[1] - began >= args.warm_up]
    return {
        "single_p50_ms": percentile([spent for _, spent, _ in single], 0.5),
        "capacity_per_second": capacity,
        "capacity_p99_ms": percentile([spent for status, spent, _ in normal if status == 200],
                                      0.99),
        **overload_figures("overload", over, args.seconds, args.budget, capacity),
        **overload_figures("steady", steady, args.seconds - args.warm_up, args.budget,
                           capacity),
        "overload_statuses": {str(code): sum(status == code for status, _, _ in over)
                              for code in sorted({status for status, _, _ in over})},
        "overload_client_loop_lag_p99_ms": percentile(lags, 0.99),
        **normal_cpu,
        **over_cpu,
        "after_p50_ms": percentile([spent for _, spent, _ in after], 0.5),
        "server_accepted_p99_ms_at_most": server_p99_ms(before, over_buckets, "200"),
        "server_refused_p99_ms_at_most": server_p99_ms(before, over_buckets, "503"),
    }


def with_cpu(prefix, pid, load):
    """load()'s result, and the cores that the service (`pid` and its children; None
    without one) and this process with its load generators used while it ran."""
    service = cpu_seconds(process_tree(pid)) if pid else None
    generator = generator_cpu_seconds()
    began = time.perf_counter()
    result = load()
    seconds = time.perf_counter() - began
    return result, {
        f"{prefix}_generator_cores": (generator_cpu_seconds() - generator) / seconds,
        f"{prefix}_service_cores": (cpu_seconds(process_tree(pid)) - service) / seconds
        if pid else None}


def generator_cpu_seconds():
    """CPU time of this process and of its ended children (the load generator's processes;
    the services, still running, are not counted until they end)."""
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime


def overload_figures(prefix, answers, seconds, budget, capacity):
    """The targets' figures for `answers` given over `seconds`, named `prefix`_..."""
    accepted = [spent for status, spent, _ in answers if status == 200]
    refused = [spent for status, spent, _ in answers if status in (429, 503)]
    in_budget = sum(spent <= budget for spent in accepted) / seconds
    return {
        f"{prefix}_200_in_budget_per_second": in_budget,
        f"{prefix}_share_of_capacity": in_budget / capacity if capacity else None,
        f"{prefix}_timeouts": sum(status == 0 for status, _, _ in answers),
        f"{prefix}_refusals_per_second": len(refused) / seconds,
        f"{prefix}_accepted_p99_ms": percentile(accepted, 0.99),
        f"{prefix}_refused_p50_ms": percentile(refused, 0.5),
        f"{prefix}_refused_p99_ms": percentile(refused, 0.99),
    }


def start_service(port, admission, models, cpus=None):
    """gunicorn with the shipped models on `port`, ADMISSION as given, on `cpus` with one
    worker each (default: as configured, on all); ready to answer."""
    environment = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "GRPC_ENABLED": "0",
                   "MODEL_DIR": models, "ADMISSION": str(admission),
                   "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="overload-metrics-"),
                   "TF_CPP_MIN_LOG_LEVEL": "2"}
    if cpus:
        environment["WORKERS"] = str(len(cpus))
    process = subprocess.Popen([sys.executable, "-m", "gunicorn",
                                "-c", "service/process/gunicorn_conf.py"],
                               cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus
                               else None)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).ok:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"the service on port {port} did not become ready")


def free_port():
    """A port free on loopback now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summarize(rounds):
    """Per target, the median and the range of each figure over the rounds."""
    summary = {}
    for target in rounds[0]:
        figures = {}
        for key, value in rounds[0][target].items():
            if isinstance(value, (int, float)) and value is not None:
                values = [entry[target][key] for entry in rounds if entry[target][key] is not None]
                figures[key] = {"median": statistics.median(values), "min": min(values),
                                "max": max(values)}
        summary[target] = figures
    return summary


def main(argv=None):
    """Start (or take) the targets, measure them in alternating rounds, print and save."""
    args = parse_args(argv)
    body = jpeg()
    processes = {}  # the services this benchmark started, by target
    targets = dict(entry.split("=", 1) for entry in args.target)
    if not targets:
        for name, admission in (("admission on", 1), ("admission off", 0)):
            port = free_port()
            processes[name] = start_service(port, admission, args.models, args.service_cpus)
            targets[name] = f"http://127.0.0.1:{port}"
    if args.service_cpus:  # the generator (this process and the ones it forks) on the rest
        os.sched_setaffinity(0, os.sched_getaffinity(0) - args.service_cpus)
    rounds = []
    try:
        for round_number in range(args.rounds):
            order = list(targets) if round_number % 2 == 0 else list(targets)[::-1]
            figures = {}
            for name in order:
                started = processes.get(name)
                figures[name] = measure(targets[name], body, args,
                                        started.pid if started else None)
                print(f"round {round_number + 1}, {name}: {json.dumps(figures[name])}",
                      flush=True)
                time.sleep(2)
            rounds.append(figures)
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(timeout=60)
    summary = summarize(rounds)
    print(json.dumps(summary, indent=2))
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "overload.json"), "w", encoding="utf-8") as file:
        json.dump({"rounds": rounds, "summary": summary, "clients": args.clients,
                   "budget": args.budget, "seconds": args.seconds}, file, indent=2)


if __name__ == "__main__":
    main()
