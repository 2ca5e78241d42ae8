"""This service against peer model servers, on the same model.tflite, in alternating rounds.

    python -m benchmarks.peers --archive ../shared/datasets/cifar10-train.tar.gz --rounds 3

The peers run from virtualenvs of their own, made on first use from the pinned
benchmarks/peers/requirements-<peer>.txt (not part of the api image): KServe's ModelServer
and MLServer on the Open Inference Protocol (gRPC, and REST in its JSON form: the JPEG as a
base64 BYTES element, since MLServer has no binary tensor extension and KServe's REST turns
BYTES into text), LitServe and BentoML on /predict (multipart). Each peer's model code
(benchmarks/peers/classifier.py) decodes with Pillow and runs model.tflite on LiteRT.

Every round starts each server in turn, measures its faces and stops it, the order reversed
from one round to the next, beside the in-process limit. The tables give each round's
figures, the medians and this service's ratio to the best peer. A peer that cannot be
installed or started is reported and left out; the others go on.
"""

import argparse
import os
import sys
import tempfile

from benchmarks import grpc_vs_rest, load, run_benchmark
from benchmarks.peers.environments import PeerUnavailableError, ensure_environment
from benchmarks.peers.servers import PEERS, start_peer, stop_all
from benchmarks.peers.tables import SERVICE, Face, format_face
from benchmarks.processes import machine_idle_share, wait_until_idle
from benchmarks.sample import image_parser, read_images

IN_PROCESS = "in-process"
V2_PEERS = ("kserve", "mlserver")
PREDICT_PEERS = ("litserve", "bentoml")
FACES = (
    Face("grpc32", "gRPC, 32 callers (tritonclient.grpc.aio, a connection each)",
         "requests_per_second", "calls/s", (SERVICE, *V2_PEERS), V2_PEERS,
         target="≥ 1.4× (moonshot ≥ 2×)"),
    Face("grpc1", "gRPC, 1 caller: p50 latency", "p50_ms", "p50 ms", (SERVICE, *V2_PEERS),
         ("kserve",), higher_is_better=False, target="≤ 1.00 (p50 no higher than KServe's)"),
    Face("json32", "V2 REST JSON (base64 BYTES), 32 callers (tritonclient.http.aio)",
         "requests_per_second", "calls/s", (SERVICE, *V2_PEERS), V2_PEERS,
         target="≥ 1.1× (moonshot ≥ 1.5×)"),
    Face("binary32", "V2 REST with the binary tensor extension, 32 callers (this service "
         "alone: no peer takes it)", "requests_per_second", "calls/s", (SERVICE,), ()),
    Face("predict32", "/predict multipart, 32 connections (wrk)", "requests_per_second",
         "requests/s", (SERVICE, *PREDICT_PEERS), PREDICT_PEERS,
         target="≥ 1.6× (moonshot ≥ 2×), p99 ≤ 50 ms, ≥ 0.6 of the in-process limit",
         limit=IN_PROCESS),
)
# (protocol, callers) of each Open Inference Protocol face, for grpc_vs_rest.measure.
V2_LEVELS = {"grpc32": ("grpc", 32), "grpc1": ("grpc", 1), "json32": ("rest-json", 32),
             "binary32": ("rest", 32)}
SERVICE_FACES = ("grpc32", "grpc1", "json32", "binary32", "predict32")


def parse_args(argv):
    """Read the command line."""
    parser = image_parser("python -m benchmarks.peers", __doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"peers to compare, comma-separated ({','.join(PEERS)})")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per face (10)")
    parser.add_argument("--warmup-seconds", type=int, default=2, help="before each face (2)")
    parser.add_argument("--model-dir", default="models", help="models folder (models)")
    parser.add_argument("--model-name", default="cifar10", help="model name (cifar10)")
    parser.add_argument("--http-port", type=int, default=18500, help="this service's (18500)")
    parser.add_argument("--grpc-port", type=int, default=18501, help="this service's (18501)")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--timeout", type=int, default=30, help="wrk's request timeout (30)")
    parser.add_argument("--service-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a service setting for this run (repeatable)")
    args = parser.parse_args(argv)
    args.model_dir = os.path.abspath(args.model_dir)
    args.peers = [name for name in args.peers.split(",") if name]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    return args


def install_peers(args):
    """{peer: its virtualenv's bin folder} of the peers that install, and why others did not."""
    ready, unavailable = {}, {}
    for name in args.peers:
        try:
            ready[name] = ensure_environment(name, log=lambda text: print(text, flush=True))
        except PeerUnavailableError as error:
            unavailable[name] = str(error)
            print(f"left out: {error}", flush=True)
    return ready, unavailable


def measure_v2(face_name, images, server_args, server_pid):
    """One Open Inference Protocol face, or None (with the reason printed) if calls failed."""
    protocol, callers = V2_LEVELS[face_name]
    try:
        return grpc_vs_rest.measure(protocol, callers, images, server_args, server_pid)
    except SystemExit as error:  # measure() stops on the first failed call: keep the others
        print(f"  {face_name} failed: {error}", flush=True)
        return None


def measure_predict(server, label, args, image_list):
    """/predict at 32 connections after a warm-up, or None (with the reason) if it failed."""
    try:
        load.run_wrk(server.url("/predict"), image_list, 32, args.warmup_seconds,
                     args.max_requests, args.timeout, warmup=True)
        wait_until_idle(server.process.pid)
        return run_benchmark.measure_level(server, label, "/predict", "multipart", 32, args,
                                           image_list)
    except load.LoadError as error:
        print(f"  /predict failed: {error}", flush=True)
        return None


def measure_faces(server, label, faces, server_args, images, image_list):
    """Every face of one started server: {face: figures}."""
    figures = {}
    for face_name in faces:
        if face_name == "predict32":
            figures[face_name] = measure_predict(server, label, server_args, image_list)
        else:
            figures[face_name] = measure_v2(face_name, images, server_args, server.process.pid)
            if figures[face_name]:
                print(f"  {label} {face_name}: {summary(figures[face_name])}", flush=True)
    return figures


def summary(figures):
    """requests/s, p50, p99 and the CPU shares of one V2 measurement, as text."""
    return (f"{figures['requests_per_second']:.0f}/s, p50 {figures['p50_ms']:.1f} ms, "
            f"p99 {figures['p99_ms']:.1f} ms (client CPU {figures['client_cpu']:.0%}, other "
            f"processes {figures['other_cpu']:.0%})")


def with_ports(args, http_port, grpc_port):
    """The options with another server's ports: what grpc_vs_rest's callers read."""
    return argparse.Namespace(**{**vars(args), "http_port": http_port, "grpc_port": grpc_port})


def run_service(args, images, image_list, work_dir):
    """This service (gunicorn, its defaults) started as grpc_vs_rest starts it, every face."""
    server = grpc_vs_rest.start_service(args, os.path.join(work_dir, "service.log"))
    try:
        return measure_faces(server, "service", SERVICE_FACES, args, images, image_list)
    finally:
        stop_all(server)


def run_peer(name, bin_dir, args, images, image_list, work_dir, model_path):
    """One peer started from its virtualenv, every face it has."""
    peer = PEERS[name]
    server = start_peer(peer, bin_dir, model_path, work_dir)
    try:
        server.wait_ready(timeout=180)
        peer_args = with_ports(args, peer.http_port, peer.grpc_port)
        if peer.grpc_port and not grpc_vs_rest.grpc_ready(peer_args):
            raise PeerUnavailableError(f"{name}: gRPC did not answer ServerReady")
        return measure_faces(server, name, peer.faces, peer_args, images, image_list)
    finally:
        stop_all(server)


def run_round(round_number, order, installed, args, context):
    """One round: each server in `order`, one after the other; {server: {face: figures}}."""
    images, image_list, work_dir, model_path = context
    measured = {}
    for name in order:
        print(f"round {round_number}: {name}", flush=True)
        try:
            if name == IN_PROCESS:
                limit = run_benchmark.measure_in_process(model_path, image_list,
                                                         32, args.seconds)
                measured[name] = {"predict32": {
                    "requests_per_second": limit["batched_images_per_second"]}}
            elif name == SERVICE:
                measured[name] = run_service(args, images, image_list, work_dir)
            else:
                measured[name] = run_peer(name, installed[name], args, images, image_list,
                                          work_dir, model_path)
        except (PeerUnavailableError, SystemExit) as error:  # a server that fails leaves a gap
            print(f"  {name} failed this round: {error}", flush=True)
    return measured


def format_settings(installed, unavailable):
    """The settings of every server compared, as a markdown table."""
    lines = ["### Settings", "", "| server | settings |", "| --- | --- |",
             f"| this service | {run_benchmark.describe_service({})}, gRPC in a thread of "
             f"each worker (GRPC_ENABLED=1, its default) |"]
    for name, peer in PEERS.items():
        if name in installed:
            lines.append(f"| {peer.title} | {peer.settings} |")
        elif name in unavailable:
            lines.append(f"| {peer.title} | not measured: {unavailable[name]} |")
    return "\n".join(lines)


def main(argv=None):
    """Install what is missing, run the rounds, print the tables."""
    args = parse_args(argv)
    load.require_wrk()
    model_path = run_benchmark.newest_version(args.model_dir, args.model_name)
    installed, unavailable = install_peers(args)
    print(f"machine idle before: {machine_idle_share():.0%}; load average "
          f"{run_benchmark.load_average()}", flush=True)
    order = [IN_PROCESS, SERVICE, *installed]
    results = {}
    with tempfile.TemporaryDirectory(prefix="peers-") as work_dir:
        image_list, count = run_benchmark.prepare_images(args, work_dir)
        with open(image_list, encoding="utf-8") as file:
            images = read_images(line.strip() for line in file)
        print(f"{count} images from {args.archive or args.images}", flush=True)
        context = (images, image_list, work_dir, model_path)
        for round_number in range(1, args.rounds + 1):
            round_order = order if round_number % 2 else order[::-1]
            results[round_number] = run_round(round_number, round_order, installed, args,
                                              context)
    titles = {SERVICE: "this service", **{name: PEERS[name].title for name in PEERS}}
    print(f"\nload average after: {run_benchmark.load_average()}\n")
    for face in FACES:
        print(format_face(face, results, titles) + "\n")
    print(format_settings(installed, unavailable))
    return 0


if __name__ == "__main__":
    sys.exit(main())
