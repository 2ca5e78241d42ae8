"""The serving code runs without TensorFlow: importing it must not load tensorflow or keras."""

import json
import subprocess
import sys

from tests.support import ROOT

SERVING_MODULES = ("service.app", "service.wsgi", "service.process.gunicorn_conf",
                   "service.models.repository", "service.models.release",
                   "service.models.inference", "service.models.artifact",
                   "service.grpc.server", "service.grpc.thread")


def test_importing_the_serving_code_loads_no_tensorflow_or_keras(tmp_path):
    # A fresh interpreter: this test process has TensorFlow loaded already.
    program = (f"import importlib, json, sys\n"
               f"for name in {SERVING_MODULES!r}: importlib.import_module(name)\n"
               f"print(json.dumps(sorted(sys.modules)))\n")
    finished = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                              text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "MODEL_DIR": str(tmp_path),
                                   "MODEL_POLL_SECONDS": "60"})
    assert finished.returncode == 0, finished.stderr
    modules = json.loads(finished.stdout.strip().splitlines()[-1])
    assert "service.wsgi" in modules and "ai_edge_litert.interpreter" in modules
    # Nor libheif: only the decoding process loads it (service/runtime/isolated_decoding.py).
    heavy = [name for name in modules
             if name.split(".")[0] in ("tensorflow", "keras", "matplotlib", "pi_heif")]
    assert heavy == []


def test_gunicorns_master_does_not_load_grpc(tmp_path):
    # gRPC's threads must not cross a fork: only a worker imports it, after the fork.
    program = ("import json, sys; import service.process.gunicorn_conf; "
               "print(json.dumps(sorted(sys.modules)))")
    finished = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                              text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "MODEL_DIR": str(tmp_path),
                                   "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    assert finished.returncode == 0, finished.stderr
    modules = json.loads(finished.stdout.strip().splitlines()[-1])
    assert "service.process.gunicorn_worker" in modules
    assert [name for name in modules if name.split(".")[0] in ("grpc", "grpc_health")] == []
