"""The Open Inference Protocol over gRPC against REST, side by side, on one service.

One service (gunicorn with its default settings: 2 workers, each serving HTTP and gRPC) on
loopback; Triton's own clients as the load: tritonclient.grpc.aio against GRPC_PORT and
tritonclient.http.aio against /v2 with the binary tensor data extension, each call one
JPEG of the same sample as a BYTES input asking for the top 3 labels (classification
extension). Each concurrent caller has a client, and so a connection, of its own (gRPC
channels are kept from sharing one). Within every round, each level runs gRPC and REST
back to back, the order alternating from round to round, so the two are compared under
the same conditions; the table gives every round's figures and the gRPC ÷ REST ratios.

    python -m benchmarks.grpc_vs_rest --archive ../shared/datasets/cifar10-train.tar.gz

A call that is not answered with the model's labels fails the run. The load generator is
one Python process on the same machine: its share of the CPUs is printed per level, and
so is what other processes used (a run with more than a few per cent there is disturbed).
"""

import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from benchmarks.processes import (
    LOOPBACK,
    MemoryWatch,
    OtherLoad,
    Server,
    cpu_seconds,
    machine_idle_share,
)
from benchmarks.sample import image_parser, load_sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOLS = ("grpc", "rest")
CLASS_COUNT = 3
# A JSON body says so (KServe reads any other as binary), and asks for an answer that is not
# compressed (tritonclient's aio client does not inflate one it did not ask for; MLServer
# compresses by default).
JSON_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


def parse_args(argv):
    parser = image_parser("python -m benchmarks.grpc_vs_rest", __doc__)
    parser.add_argument("--concurrency", default="1,32", help="levels of concurrent calls (1,32)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per measurement (10)")
    parser.add_argument("--warmup-seconds", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="rounds over every level (2)")
    parser.add_argument("--model-dir", default=os.path.join(ROOT, "models"))
    parser.add_argument("--model-name", default="cifar10")
    parser.add_argument("--http-port", type=int, default=18400)
    parser.add_argument("--grpc-port", type=int, default=18401)
    parser.add_argument("--service-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a service setting for this run, e.g. WORKERS=1 (repeatable)")
    return parser.parse_args(argv)


class Caller:
    """One concurrent caller: a client of its own for one protocol.

    "grpc", "rest" (JSON with the binary tensor data extension) or "rest-json" (all JSON,
    the JPEG as base64 text: the form every V2 peer takes over REST).
    """

    def __init__(self, protocol, args):
        self.protocol, self.model_name = protocol, args.model_name
        if protocol == "grpc":
            import tritonclient.grpc.aio as client_module

            # A connection per caller, as separate client processes would have.
            self.client = client_module.InferenceServerClient(
                f"{LOOPBACK}:{args.grpc_port}",
                channel_args=[("grpc.use_local_subchannel_pool", 1),
                              ("grpc.enable_http_proxy", 0)])
        else:
            import tritonclient.http.aio as client_module

            self.client = client_module.InferenceServerClient(f"{LOOPBACK}:{args.http_port}",
                                                              conn_limit=1)
        self.module = client_module

    async def call(self, image):
        """Classify one JPEG; return its labels (BYTES "<score>:<index>:<label>")."""
        tensor = self.module.InferInput("image", [1], "BYTES")
        if self.protocol == "rest-json":
            # JSON strings cannot hold raw bytes: the JPEG goes as base64 text.
            tensor.set_data_from_numpy(np.array([base64.b64encode(image).decode("ascii")],
                                                dtype=np.object_), binary_data=False)
            output = self.module.InferRequestedOutput("probabilities", binary_data=False,
                                                      class_count=CLASS_COUNT)
        elif self.protocol == "grpc":
            tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
            output = self.module.InferRequestedOutput("probabilities", class_count=CLASS_COUNT)
        else:
            tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
            output = self.module.InferRequestedOutput("probabilities", binary_data=True,
                                                      class_count=CLASS_COUNT)
        headers = JSON_HEADERS if self.protocol == "rest-json" else None
        result = await self.client.infer(self.model_name, [tensor], outputs=[output],
                                         headers=headers)
        return result.as_numpy("probabilities")

    async def close(self):
        await self.client.close()


async def run_level(protocol, concurrency, seconds, images, args):
    """Calls from `concurrency` callers for `seconds`: (latencies in seconds, errors)."""
    callers = [Caller(protocol, args) for _ in range(concurrency)]
    latencies, errors = [], []
    deadline = time.monotonic() + seconds

    async def caller_loop(caller, offset):
        index = offset
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                labels = await caller.call(images[index % len(images)])
                if labels.shape != (1, CLASS_COUNT):
                    errors.append(f"unexpected answer of shape {labels.shape}")
            except Exception as error:  # every failure is reported, none is counted as served
                errors.append(f"{type(error).__name__}: {error}")
            latencies.append(time.perf_counter() - started)
            index += concurrency

    try:
        await asyncio.gather(*(caller_loop(caller, offset)
                               for offset, caller in enumerate(callers)))
    finally:
        for caller in callers:
            await caller.close()
    return latencies, errors


def measure(protocol, concurrency, images, args, server_pid):
    """One measured level, after a warm-up: requests/s, p50 and p99 (ms), CPU shares."""
    asyncio.run(run_level(protocol, concurrency, args.warmup_seconds, images, args))
    client_before = cpu_seconds([os.getpid()])
    with OtherLoad(server_pid) as other:
        started = time.monotonic()
        latencies, errors = asyncio.run(run_level(protocol, concurrency, args.seconds, images,
                                                  args))
        elapsed = time.monotonic() - started
    if errors:
        raise SystemExit(f"{protocol} at {concurrency}: {len(errors)} calls failed, first: "
                         f"{errors[0]}")
    client_share = (cpu_seconds([os.getpid()]) - client_before) / elapsed / os.cpu_count()
    # OtherLoad leaves out the server and our child processes; the callers run in this one.
    other_share = max(0.0, other.share - client_share)
    latencies.sort()
    return {"protocol": protocol, "concurrency": concurrency,
            "requests_per_second": len(latencies) / elapsed,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "calls": len(latencies), "client_cpu": client_share, "other_cpu": other_share}


def start_service(args, log_path):
    """The service under gunicorn with its default settings, on loopback ports."""
    environment = {"HOST": LOOPBACK, "PORT": str(args.http_port),
                   "GRPC_PORT": str(args.grpc_port), "MODEL_DIR": args.model_dir,
                   "MODEL_NAME": args.model_name, "TF_CPP_MIN_LOG_LEVEL": "2",
                   **dict(setting.split("=", 1) for setting in args.service_env)}
    server = Server("service", [sys.executable, "-m", "gunicorn", "-c",
                                "service/process/gunicorn_conf.py"],
                    args.http_port, environment, log_path, "/v2/health/ready", cwd=ROOT)
    server.wait_ready()
    deadline = time.monotonic() + 60
    while not grpc_ready(args):
        if time.monotonic() > deadline:
            raise SystemExit(f"gRPC was not ready after 60 s; see {log_path}")
        time.sleep(0.2)
    return server


def grpc_ready(args):
    """Whether gRPC answers ServerReady."""
    import tritonclient.grpc as client_module

    client = client_module.InferenceServerClient(f"{LOOPBACK}:{args.grpc_port}")
    try:
        return client.is_server_ready()
    except Exception:
        return False
    finally:
        client.close()


def format_table(results):
    """Every round's figures, protocol beside protocol, and the gRPC ÷ REST ratios."""
    lines = ["| round | calls at once | gRPC: requests/s, p50, p99 ms | REST: requests/s, p50, "
             "p99 ms | gRPC ÷ REST requests/s | gRPC p99 − REST p99 | client CPU, other CPU |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ratios = {}
    for (round_number, concurrency), pair in sorted(results.items()):
        grpc, rest = pair["grpc"], pair["rest"]
        ratio = grpc["requests_per_second"] / rest["requests_per_second"]
        ratios.setdefault(concurrency, []).append(ratio)
        lines.append(
            f"| {round_number} | {concurrency} | {grpc['requests_per_second']:.0f}, "
            f"{grpc['p50_ms']:.1f}, {grpc['p99_ms']:.1f} | {rest['requests_per_second']:.0f}, "
            f"{rest['p50_ms']:.1f}, {rest['p99_ms']:.1f} | {ratio:.2f} | "
            f"{grpc['p99_ms'] - rest['p99_ms']:+.1f} ms | "
            f"{max(grpc['client_cpu'], rest['client_cpu']):.0%}, "
            f"{max(grpc['other_cpu'], rest['other_cpu']):.0%} |")
    lines.append("")
    for concurrency, values in sorted(ratios.items()):
        lines.append(f"{concurrency} at once: gRPC ÷ REST requests/s median "
                     f"{statistics.median(values):.2f}, from {min(values):.2f} to "
                     f"{max(values):.2f} over {len(values)} rounds")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    images = [data for _, data in load_sample(args)]
    levels = [int(level) for level in args.concurrency.split(",") if level]
    print(f"{len(images)} images; machine idle before: {machine_idle_share():.0%}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="grpc-vs-rest-") as work_dir:
        server = start_service(args, os.path.join(work_dir, "service.log"))
        try:
            with MemoryWatch(server.process.pid) as memory:
                for round_number in range(1, args.rounds + 1):
                    for concurrency in levels:
                        results[round_number, concurrency] = measure_pair(
                            round_number, concurrency, images, args, server.process.pid)
        finally:
            server.stop()
    print()
    print(format_table(results))
    print(f"\npeak RSS of all service processes (gunicorn's master, its HTTP and gRPC "
          f"workers): {memory.peak_bytes / 2**20:.0f} MiB")
    return 0


def measure_pair(round_number, concurrency, images, args, server_pid):
    """Both protocols at one level, in this round's order."""
    pair = {}
    for protocol in PROTOCOLS if round_number % 2 else PROTOCOLS[::-1]:
        pair[protocol] = figures = measure(protocol, concurrency, images, args, server_pid)
        print(f"round {round_number}, {concurrency} at once, {protocol}: "
              f"{figures['requests_per_second']:.0f} requests/s, p50 {figures['p50_ms']:.1f} "
              f"ms, p99 {figures['p99_ms']:.1f} ms (client CPU {figures['client_cpu']:.0%}, "
              f"other {figures['other_cpu']:.0%})", flush=True)
    return pair


if __name__ == "__main__":
    sys.exit(main())
