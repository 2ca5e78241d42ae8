"""The api container's memory under load, as `docker stats` reports it, with both faces.

For each model set (the shipped models; the same with a canary of cifar10 loaded beside its
stable), the compose api starts alone with its default settings, its HTTP and gRPC ports
published on loopback (benchmarks/compose-direct.yml). Then 32 wrk clients post JPEGs to
/predict for 15 s, and 32 Triton gRPC callers (one connection each) send the same JPEGs
to ModelInfer for 15 s; `docker stats` is read mid-way through each. Every call must be
answered, or the run fails.

    python -m benchmarks.api_memory --archive ../shared/datasets/cifar10-train.tar.gz
"""

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import load
from benchmarks.grpc_vs_rest import run_level
from benchmarks.proxy_overhead import compose, direct_environment
from benchmarks.run_benchmark import prepare_images
from benchmarks.sample import image_parser, read_images
from service.models.artifact import published_versions

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def parse_args(argv):
    parser = image_parser("python -m benchmarks.api_memory", __doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--project", default="api-memory")
    parser.add_argument("--http-port", type=int, default=18480)
    parser.add_argument("--grpc-port", type=int, default=18481)
    return parser.parse_args(argv)


def model_sets(work_dir):
    """{name: models folder}: the shipped models, and the same with a canary of cifar10."""
    canary = Path(work_dir) / "with-canary"
    shutil.copytree(ROOT / "models", canary)
    stable = published_versions(canary / "cifar10")[-1]
    shutil.copytree(canary / "cifar10" / str(stable), canary / "cifar10" / str(stable + 1))
    (canary / "cifar10" / "serving.json").write_text(json.dumps({
        "model_version_policy": {"latest": {"num_versions": 1}},
        "version_labels": {"stable": stable, "canary": stable + 1},
        "canary": {"percent": 10, "mode": "split"}}))
    for path in [canary, *canary.rglob("*")]:  # readable by the api's user
        path.chmod(0o755 if path.is_dir() else 0o644)
    return {"shipped models": str(ROOT / "models"), "with a cifar10 canary": str(canary)}


def api_memory_bytes(environment):
    """The api container's memory as `docker stats` shows it (usage less inactive files)."""
    container = compose(environment, "ps", "-q", "api").split()[0]
    stats = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{json .}}",
                            container], capture_output=True, text=True, check=True).stdout
    usage = json.loads(stats)["MemUsage"].split("/")[0].strip()
    number, unit = float(usage.rstrip("KMGiB")), usage.lstrip("0123456789.")
    return number * {"KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB, "B": 1}[unit]


def read_midway(environment, seconds, found):
    """Read the api's memory half-way through a load of `seconds`, into `found`."""
    def reader():
        time.sleep(seconds / 2)
        found.append(api_memory_bytes(environment))

    thread = threading.Thread(target=reader)
    thread.start()
    return thread


def measure(environment, image_list, images, args):
    """REST then gRPC load: (face, memory MiB, requests/s) for each."""
    results = []
    load.run_wrk(f"http://127.0.0.1:{args.http_port}/predict", image_list, args.clients, 3,
                 100000, 10, warmup=True)
    memory = []
    reader = read_midway(environment, args.seconds, memory)
    rest = load.run_wrk(f"http://127.0.0.1:{args.http_port}/predict", image_list,
                        args.clients, args.seconds, 10**7, 10)
    reader.join()
    results.append(("REST /predict", memory[0] / MIB, rest["requests_per_second"]))
    grpc_args = argparse.Namespace(grpc_port=args.grpc_port, http_port=args.http_port,
                                   model_name="cifar10")
    memory = []
    reader = read_midway(environment, args.seconds, memory)
    started = time.monotonic()
    latencies, errors = asyncio.run(run_level("grpc", args.clients, args.seconds, images,
                                              grpc_args))
    elapsed = time.monotonic() - started
    reader.join()
    if errors:
        raise SystemExit(f"gRPC: {len(errors)} calls failed, first: {errors[0]}")
    results.append(("gRPC ModelInfer", memory[0] / MIB, len(latencies) / elapsed))
    return results


def main(argv=None):
    args = parse_args(argv)
    load.require_wrk()
    rows = []
    with tempfile.TemporaryDirectory(prefix="api-memory-") as work_dir:
        image_list, _ = prepare_images(args, work_dir)
        images = read_images(Path(image_list).read_text().split())
        for name, models in model_sets(work_dir).items():
            environment = direct_environment(args.project, MODELS_DIR=models,
                                             BENCH_API_PORT=str(args.http_port),
                                             BENCH_API_GRPC_PORT=str(args.grpc_port))
            compose(environment, "up", "--detach", "--build", "--wait", "api")
            try:
                for face, memory, rate in measure(environment, image_list, images, args):
                    rows.append((name, face, memory, rate))
                    print(f"{name}, {face}: {memory:.0f} MiB, {rate:.0f} requests/s", flush=True)
            finally:
                compose(environment, "down", "--timeout", "40")
    print("\n| models loaded | load (32 clients, 15 s) | api memory mid-way (MiB) | requests/s |")
    print("| --- | --- | ---: | ---: |")
    for name, face, memory, rate in rows:
        print(f"| {name} | {face} | {memory:.0f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
