"""gRPC calls lost when one of two api replicas stops under load, with and without a retry.

Run from the repository root, e.g.:
    python -m benchmarks.grpc_replica_stops --stops 8
It starts the compose stack with two api replicas, then --stops times: --clients Triton
gRPC clients call ModelInfer through the proxy without pause, half of them with the retry
policy of docs/grpc.md (UNAVAILABLE retried) and half without, both halves through the same
stops; after 3 s one replica gets `docker stop`, 4 s later the load ends and the replica is
started again. It prints, per stop and in total, the calls answered after the stop and
those that failed, by status. COMPOSE_FILE, when set, is honoured.
"""

import argparse
import collections
import contextlib
import io
import json
import os
import subprocess
import threading
import time

import numpy as np
import tritonclient.grpc as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from benchmarks.proxy_overhead import compose

RETRY_UNAVAILABLE = json.dumps({"methodConfig": [{
    "name": [{"service": "inference.GRPCInferenceService"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})
# docs/grpc.md's client settings (the e2e tests' clients use them too).
RETRY_CHANNEL_ARGS = [("grpc.enable_retries", 1), ("grpc.service_config", RETRY_UNAVAILABLE)]
# gRPC's defaults otherwise (its transparent retries of calls that never left the client on).
GROUPS = {"with the retry policy": RETRY_CHANNEL_ARGS, "without": None}
LOAD_BEFORE_STOP, LOAD_AFTER_STOP = 3, 4


def parse_args(argv):
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_replica_stops",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stops", type=int, default=8, help="replica stops (8)")
    parser.add_argument("--clients", type=int, default=32, help="clients, half of each kind (32)")
    parser.add_argument("--model", default="cifar10")
    parser.add_argument("--http-port", type=int, default=18093)
    parser.add_argument("--grpc-port", type=int, default=18094)
    parser.add_argument("--project", default="grpc-stops-benchmark", help="compose project name")
    return parser.parse_args(argv)


def jpeg():
    """One small photo-like JPEG."""
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


@contextlib.contextmanager
def calling(target, model, clients, image):
    """Clients of both kinds call until the block ends; yields their outcomes as they come:
    (group, monotonic time, "OK" or the status and the start of its message)."""
    outcomes, stop = [], threading.Event()
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=np.object_))

    def client(group):
        with triton.InferenceServerClient(target, channel_args=GROUPS[group]) as connection:
            while not stop.is_set():
                try:
                    connection.infer(model, [tensor], client_timeout=60)
                    outcome = "OK"
                except InferenceServerException as error:
                    outcome = (f"{str(error.status()).removeprefix('StatusCode.')} "
                               f"({error.message()[:40]})")
                outcomes.append((group, time.monotonic(), outcome))

    threads = [threading.Thread(target=client, args=(group,), daemon=True)
               for group in list(GROUPS) * (clients // len(GROUPS))]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)


def api_replicas(environment):
    """The ids of the project's running api containers."""
    return compose(environment, "ps", "--quiet", "api").split()


def main(argv=None):
    """Start two replicas, stop one under load --stops times, print what was lost."""
    args = parse_args(argv)
    environment = {**os.environ, "COMPOSE_PROJECT_NAME": args.project,
                   "API_PORT": str(args.http_port), "API_GRPC_PORT": str(args.grpc_port)}
    target, image = f"127.0.0.1:{args.grpc_port}", jpeg()
    totals = {group: collections.Counter() for group in GROUPS}
    compose(environment, "up", "--detach", "--build", "--wait", "--scale", "api=2")
    try:
        for stop in range(1, args.stops + 1):
            compose(environment, "up", "--detach", "--no-build", "--wait", "--scale", "api=2")
            with calling(target, args.model, args.clients, image) as outcomes:
                time.sleep(LOAD_BEFORE_STOP)
                stopped_at = time.monotonic()
                subprocess.run(["docker", "stop", api_replicas(environment)[0]], check=True,
                               capture_output=True, timeout=60)
                time.sleep(LOAD_AFTER_STOP)
            line = [f"stop {stop}:"]
            for group in GROUPS:
                after = collections.Counter(outcome for kind, moment, outcome in outcomes
                                            if kind == group and moment >= stopped_at)
                totals[group].update(after)
                failed = {status: count for status, count in after.items() if status != "OK"}
                line.append(f"{group}: {sum(after.values())} calls after the stop, "
                            f"failed {failed or 0};")
            print(" ".join(line), flush=True)
    finally:
        compose(environment, "down", "--timeout", "40")
    print(f"\n{args.stops} stops of one replica of two, {args.clients} clients\n")
    print("| clients | calls after the stops | failed, by status |")
    print("| --- | ---: | --- |")
    for group, counts in totals.items():
        failed = ", ".join(f"{status} {count}" for status, count in counts.items()
                           if status != "OK") or "none"
        print(f"| {group} | {sum(counts.values()):,} | {failed} |")


if __name__ == "__main__":
    main()
