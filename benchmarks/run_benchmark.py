"""Benchmark the service against the usual Flask pattern and the in-process limit.

Run from the repository root, e.g.:
    python -m benchmarks.run_benchmark --archive ../shared/datasets/cifar10-train.tar.gz
Every server listens on 127.0.0.1 only; the load generator is wrk (apt-get install -y wrk).
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from benchmarks import load, report
from benchmarks.processes import MemoryWatch, OtherLoad, Server, machine_idle_share, wait_until_idle
from benchmarks.sample import extract_sample, image_parser, sample_from_folder
from service.models.artifact import METADATA_FILE, complete_versions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("in-process", "service", "peer")


def parse_args(argv):
    """Read the command line."""
    parser = image_parser("python -m benchmarks.run_benchmark", __doc__)
    parser.add_argument("--model-dir", default="models", help="models folder (models)")
    parser.add_argument("--model-name", default="cifar10", help="model name (cifar10)")
    parser.add_argument("--clients", default="1,8,32,64",
                        help="concurrent clients, comma-separated (1,8,32,64)")
    parser.add_argument("--v2-clients", default="1,32",
                        help="clients for the service's /v2 infer route, beside /predict (1,32; "
                             "empty for none)")
    parser.add_argument("--seconds", type=int, default=20, help="seconds per level (20)")
    parser.add_argument("--warmup-seconds", type=int, default=3,
                        help="unrecorded load before each server's levels (3)")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="requests per level at most (200000)")
    parser.add_argument("--timeout", type=int, default=30,
                        help="seconds before wrk counts a request as failed (30)")
    parser.add_argument("--quiet-wait", type=int, default=120,
                        help="seconds to wait at most for the CPUs to be 90%% idle first (120)")
    parser.add_argument("--service-port", type=int, default=18000)
    parser.add_argument("--peer-port", type=int, default=18001)
    parser.add_argument("--service-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a service setting for this run, e.g. WORKERS=2 (repeatable)")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable; default: all)")
    parser.add_argument("--output", default="benchmark-results",
                        help="folder for results.json, report.md and server logs")
    args = parser.parse_args(argv)
    args.clients = [int(count) for count in args.clients.split(",")]
    args.v2_clients = [int(count) for count in args.v2_clients.split(",") if count.strip()]
    args.only = args.only or list(PARTS)
    try:
        args.service_env = dict(pair.split("=", 1) for pair in args.service_env)
    except ValueError:
        parser.error("--service-env takes NAME=VALUE")
    return args


def newest_version(models_dir, name):
    """The folder of the highest complete version of the model, as the service would serve."""
    versions_dir = os.path.join(models_dir, name)
    versions = complete_versions(versions_dir)
    if not versions:
        raise SystemExit(f"no complete model version under {versions_dir}")
    return os.path.join(versions_dir, str(versions[0]))


def prepare_images(args, work_dir):
    """Write the list of sample image paths that every part of the benchmark reads."""
    if args.archive:
        paths = extract_sample(args.archive, os.path.join(work_dir, "images"), args.sample)
    else:
        paths = sample_from_folder(args.images, args.sample)
    list_path = os.path.join(work_dir, "images.txt")
    with open(list_path, "w", encoding="utf-8") as file:
        file.write("".join(os.path.abspath(path) + "\n" for path in paths))
    return list_path, len(paths)


def measure_in_process(model_path, image_list, batch_size, seconds):
    """Run benchmarks.in_process in its own process: its threads must not share our GIL."""
    command = [sys.executable, "-m", "benchmarks.in_process", "--model", model_path,
               "--image-list", image_list, "--batch-size", str(batch_size),
               "--seconds", str(max(3, seconds // 4))]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if finished.returncode != 0:
        raise SystemExit(f"in-process measurement failed:\n{finished.stderr}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def measure_server(server, label, args, image_list, v2_path=None):
    """Ready time, then every level of clients with the process tree's peak RSS.

    With `v2_path`, the same images also go to the Open Inference Protocol's infer route at
    the levels of --v2-clients, each right after /predict's run at that level.
    """
    faces = [("levels", "/predict", "multipart", args.clients)]
    if v2_path:
        faces.append(("v2_levels", v2_path, "v2", args.v2_clients))
    try:
        ready_seconds = server.wait_ready()
        print(f"{label}: ready in {ready_seconds:.2f} s", flush=True)
        measured = {key: [] for key, *_ in faces}
        with MemoryWatch(server.process.pid) as memory:
            # One client first, so a cold server's slow first calls are not piled up behind.
            for clients in (1, max(args.clients)):
                for _, path, form, _ in faces:
                    load.run_wrk(server.url(path), image_list, clients, args.warmup_seconds,
                                 args.max_requests, args.timeout, warmup=True, form=form)
                    wait_until_idle(server.process.pid)
            for clients in sorted({count for *_, levels in faces for count in levels}):
                for key, path, form, levels in faces:
                    if clients in levels:
                        measured[key].append(measure_level(server, f"{label} {path}", path, form,
                                                           clients, args, image_list))
        return {"label": label, "ready_seconds": ready_seconds,
                "peak_rss_bytes": memory.peak_bytes, **measured}
    finally:
        server.stop()


def measure_level(server, label, path, form, clients, args, image_list):
    """One measured wrk run, with the share of the CPUs other processes took meanwhile."""
    with OtherLoad(server.process.pid) as other:
        level = load.run_wrk(server.url(path), image_list, clients, args.seconds,
                             args.max_requests, args.timeout, form=form)
    level["other_cpu_share"] = other.share
    print(f"{label}: {clients} clients: {level['requests_per_second']:.1f} requests/s, "
          f"p50 {level['p50_ms']:.1f} ms, p99 {level['p99_ms']:.1f} ms, "
          f"other processes {other.share:.0%} of the CPUs", flush=True)
    # Requests a run leaves in flight must not spill into the next one.
    wait_until_idle(server.process.pid)
    return level


def service_settings(args, model_dir):
    """The environment the service runs with: the defaults, plus any --service-env."""
    # gRPC off, so the figures stay those of HTTP alone, comparable with earlier runs;
    # --service-env GRPC_ENABLED=1 serves it beside (benchmarks/grpc_vs_rest.py
    # measures gRPC itself).
    return {"HOST": "127.0.0.1", "PORT": str(args.service_port), "MODEL_DIR": model_dir,
            "MODEL_NAME": args.model_name, "TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_ENABLED": "0",
            **args.service_env}


def effective_settings(environment):
    """The settings the service will read: this shell's environment plus the benchmark's."""
    from service.config import Settings

    return Settings.from_env({**os.environ, **environment})


def describe_service(environment):
    """A short label naming the service's process and thread layout."""
    settings = effective_settings(environment)
    return (f"service (gunicorn, {settings.workers} worker(s) × {settings.threads} threads, "
            f"batches ≤ {settings.batch_max_size}, wait ≤ {settings.batch_max_wait_ms:g} ms)")


def machine_description():
    """CPU model and count, for the report."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            model = next(line.split(":", 1)[1].strip() for line in file
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def wait_for_quiet(seconds, idle_share=0.9):
    """Wait up to `seconds` for the machine to be mostly idle; return the last idle share seen."""
    deadline = time.monotonic() + seconds
    while True:
        idle = machine_idle_share()
        if idle >= idle_share or time.monotonic() >= deadline:
            if idle < idle_share:
                print(f"warning: the CPUs are only {idle:.0%} idle; figures may be disturbed",
                      flush=True)
            return idle


def load_average():
    """The 1, 5 and 15 minute load averages as text."""
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def wrk_version():
    """wrk's version line."""
    finished = subprocess.run([load.require_wrk(), "--version"], capture_output=True, text=True)
    return (finished.stdout or finished.stderr).split(" Copyright")[0].strip()


def main(argv=None):
    """Run every part, print the report and save it with the raw figures."""
    args = parse_args(argv)
    load.require_wrk()
    os.makedirs(args.output, exist_ok=True)
    model_dir = os.path.abspath(args.model_dir)
    model_path = newest_version(model_dir, args.model_name)
    with open(os.path.join(model_path, METADATA_FILE), encoding="utf-8") as file:
        metadata = json.load(file)
    environment = service_settings(args, model_dir)
    results = {"context": {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.run_benchmark", *(argv or sys.argv[1:])]),
        "model": f"{metadata['name']}/{os.path.basename(model_path)}",
        "parameters": metadata.get("training", {}).get("parameters", 0),
        "load_generator": f"{wrk_version()} (1 thread, Lua script benchmarks/post_images.lua)",
        "seconds": args.seconds, "machine": machine_description(),
        "idle_before": wait_for_quiet(args.quiet_wait), "load_before": load_average(),
        "service_environment": environment}}
    with tempfile.TemporaryDirectory(prefix="benchmark-") as work_dir:
        image_list, image_count = prepare_images(args, work_dir)
        results["context"]["images"] = image_count
        if "in-process" in args.only:
            with OtherLoad() as other:
                results["in_process"] = measure_in_process(
                    model_path, image_list, effective_settings(environment).batch_max_size,
                    args.seconds)
            results["in_process"]["other_cpu_share"] = other.share
            print(f"in-process: {json.dumps(results['in_process'])}", flush=True)
        if "service" in args.only:
            server = Server("service", [sys.executable, "-m", "gunicorn", "-c",
                                        "service/process/gunicorn_conf.py"],
                            args.service_port, environment,
                            os.path.join(args.output, "service.log"), "/health/ready", ROOT)
            results["service"] = measure_server(
                server, describe_service(environment), args, image_list,
                f"/v2/models/{args.model_name}/infer" if args.v2_clients else None)
        if "peer" in args.only:
            server = Server("peer", [sys.executable, "-m", "benchmarks.peer_app", "--model",
                                     model_path, "--port", str(args.peer_port)],
                            args.peer_port, {"TF_CPP_MIN_LOG_LEVEL": "2"},
                            os.path.join(args.output, "peer.log"), "/health/ready", ROOT)
            results["peer"] = measure_server(
                server, "peer (Flask dev server, model.predict per request)", args, image_list)
    results["context"]["load_after"] = load_average()
    text = report.format_report(results)
    with open(os.path.join(args.output, "results.json"), "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    with open(os.path.join(args.output, "report.md"), "w", encoding="utf-8") as file:
        file.write(text)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except load.LoadError as error:
        sys.exit(f"benchmark failed: {error}")
