"""Each peer: how it is started in its own virtualenv, its ports, faces and settings."""

import json
import os
import signal
from dataclasses import dataclass

from benchmarks.processes import Server, process_tree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORES = os.cpu_count() or 1
BATCH_MAX_SIZE = 32
# The service's own defaults (BATCH_MAX_SIZE, BATCH_MAX_WAIT_MS), where a peer's docs leave
# the batch to the user; a peer's documented default is kept otherwise.
BATCH_WAIT_SECONDS = 0.005


@dataclass(frozen=True)
class Peer:
    """A peer model server: its title, ports, the faces it has and its settings."""

    name: str
    title: str
    http_port: int
    grpc_port: int
    ready_path: str
    faces: tuple
    settings: str


PEERS = {peer.name: peer for peer in (
    Peer("kserve", "KServe 0.21.0", 18510, 18511, "/v2/health/ready",
         ("grpc32", "grpc1", "json32"),
         f"`kserve.ModelServer`, `workers=1` (its default: one process, the plain Python "
         f"server); no batching (KServe's Python server has none); LiteRT "
         f"`num_threads={CORES}` (the one process may use every core)"),
    Peer("mlserver", "MLServer 1.7.1", 18520, 18521, "/v2/health/ready",
         ("grpc32", "grpc1", "json32"),
         f"`parallel_workers: {CORES}` (one inference process per core); adaptive batching "
         f"`max_batch_size: {BATCH_MAX_SIZE}`, `max_batch_time: {BATCH_WAIT_SECONDS}` (its "
         f"docs leave both to experiment: the service's values); `uvloop==0.21.0` "
         f"(SeldonIO/MLServer#2286); LiteRT `num_threads=1` per worker"),
    Peer("litserve", "LitServe 0.2.19", 18530, 0, "/health", ("predict32",),
         f"`LitServer(accelerator=\"cpu\", devices=1, workers_per_device={CORES})`, API "
         f"servers = workers (its default); `max_batch_size={BATCH_MAX_SIZE}`, "
         f"`batch_timeout={BATCH_WAIT_SECONDS}`; LiteRT `num_threads=1` per worker"),
    Peer("bentoml", "BentoML 1.4.40", 18540, 0, "/readyz", ("predict32",),
         f"`@bentoml.service(workers={CORES}, resources={{\"cpu\": \"{CORES}\"}})` (one "
         f"worker per core, as its docs advise for CPU-bound models); `@bentoml.api("
         f"batchable=True, max_batch_size={BATCH_MAX_SIZE})`, `max_latency_ms` its default; "
         f"the upload decoded by BentoML's `PIL.Image` input; LiteRT `num_threads=1` per worker"),
)}


def peer_command(peer, bin_dir, model_dir, work_dir):
    """(command, environment) that start `peer` from its virtualenv's bin folder."""
    python = os.path.join(bin_dir, "python")
    environment = {"PYTHONPATH": ROOT, "PEER_MODEL_DIR": model_dir, "PEER_WORKERS": str(CORES),
                   "PEER_MAX_BATCH_SIZE": str(BATCH_MAX_SIZE)}
    if peer.name == "kserve":
        return [python, "-m", "benchmarks.peers.kserve_server", "--model_dir", model_dir,
                "--model_name", "cifar10", "--http_port", str(peer.http_port),
                "--grpc_port", str(peer.grpc_port), "--workers", "1",
                "--model_threads", str(CORES)], environment
    if peer.name == "mlserver":
        return [os.path.join(bin_dir, "mlserver"), "start",
                write_mlserver_settings(peer, model_dir, work_dir)], environment
    if peer.name == "litserve":
        return [python, "-m", "benchmarks.peers.litserve_server", "--model-dir", model_dir,
                "--port", str(peer.http_port), "--workers", str(CORES),
                "--max-batch-size", str(BATCH_MAX_SIZE),
                "--batch-timeout", str(BATCH_WAIT_SECONDS)], environment
    return [os.path.join(bin_dir, "bentoml"), "serve",
            "benchmarks.peers.bentoml_service:ImageClassifier", "--host", "127.0.0.1",
            "--port", str(peer.http_port)], environment


def write_mlserver_settings(peer, model_dir, work_dir):
    """MLServer's settings.json and the model's model-settings.json; return their folder."""
    folder = os.path.join(work_dir, "mlserver")
    os.makedirs(os.path.join(folder, "cifar10"), exist_ok=True)
    server = {"host": "127.0.0.1", "http_port": peer.http_port, "grpc_port": peer.grpc_port,
              "parallel_workers": CORES, "metrics_port": peer.http_port + 2,
              "metrics_dir": os.path.join(folder, "metrics")}
    model = {"name": "cifar10",
             "implementation": "benchmarks.peers.mlserver_model.LiteRTClassifier",
             "max_batch_size": BATCH_MAX_SIZE, "max_batch_time": BATCH_WAIT_SECONDS,
             "parameters": {"uri": model_dir, "extra": {"threads": 1}}}
    for path, settings in ((os.path.join(folder, "settings.json"), server),
                           (os.path.join(folder, "cifar10", "model-settings.json"), model)):
        with open(path, "w", encoding="utf-8") as file:
            json.dump(settings, file, indent=2)
    return folder


def start_peer(peer, bin_dir, model_dir, work_dir):
    """The peer's server process, started on loopback (not yet ready)."""
    command, environment = peer_command(peer, bin_dir, model_dir, work_dir)
    return Server(peer.name, command, peer.http_port, environment,
                  os.path.join(work_dir, f"{peer.name}.log"), peer.ready_path, cwd=ROOT)


def stop_all(server):
    """Stop the server, then kill whatever of its process tree outlived it (workers, say)."""
    tree = process_tree(server.process.pid)
    server.stop()
    for pid in tree[1:]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
