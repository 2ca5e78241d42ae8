"""Do the service's answers over HTTP agree with the Keras model run offline?

    python -m benchmarks.agreement --data-dir /tmp/data/cifar10/train --count 2000

Starts the service (gunicorn, default settings) on a model folder, posts images held out
from training (the same test split `model_training.train` holds out with its default
--test-split and --seed) as multipart uploads of up to 32 images, and compares each
answer's top label with `model.keras` run offline on the same file decoded the same way.
"""

import argparse
import os
import sys
import tempfile

import keras
import numpy as np
import requests

from benchmarks.processes import Server
from benchmarks.run_benchmark import newest_version
from model_training import data as datasets
from model_training import model as _registered_layers  # noqa: F401  (custom layers)
from model_training.train import parse_args as training_args
from service.config import Settings
from service.models.artifact import KERAS_FILE
from service.runtime.images import decode_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def held_out_files(data_dir: str, count: int) -> tuple[list[str], list[str], list[int]]:
    """The first `count` files of the test split training holds out: paths, classes, labels."""
    defaults = training_args(["--data-dir", data_dir])
    paths, labels, classes = datasets.list_image_folder(data_dir)
    order = np.random.default_rng(defaults.seed).permutation(len(paths))
    test = order[:round(len(paths) * defaults.test_split)][:count]
    return [paths[i] for i in test], classes, [int(labels[i]) for i in test]


def offline_labels(version_dir: str, paths: list[str], classes: list[str]) -> list:
    """The Keras model's top label for each file, decoded as the service decodes it."""
    model = keras.saving.load_model(os.path.join(version_dir, KERAS_FILE), compile=False)
    height, width, channels = model.input_shape[1:]
    images = np.stack([decode_image(open(path, "rb").read(), height, width, channels,
                                    Settings().max_image_pixels) for path in paths])
    return [classes[k] for k in model.predict(images, batch_size=256, verbose=0).argmax(1)]


def served_labels(url: str, paths: list[str]) -> list:
    """The service's top label for each file, posted 32 to a request."""
    labels = []
    for start in range(0, len(paths), 32):
        files = [("file", (os.path.basename(path), open(path, "rb").read(), "image/jpeg"))
                 for path in paths[start:start + 32]]
        answer = requests.post(f"{url}/predict?top_k=1", files=files, timeout=60)
        answer.raise_for_status()
        # The top label even where the answer is unknown (its "label" is then null).
        labels += [prediction["top_k"][0]["label"] for prediction in answer.json()["predictions"]]
    return labels


def main(argv: list[str] | None = None) -> int:
    """Print the agreement and both accuracies; exit 1 when agreement is below --min."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the training folder (class subfolders)")
    parser.add_argument("--models", default=os.path.join(ROOT, "models"))
    parser.add_argument("--model-name", default="cifar10")
    parser.add_argument("--version", type=int,
                        help="the version to compare (default: the newest, as the service serves)")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--port", type=int, default=18010)
    parser.add_argument("--min", type=float, default=0.999, help="agreement required (0.999)")
    args = parser.parse_args(argv)
    paths, classes, truth = held_out_files(args.data_dir, args.count)
    version_dir = (os.path.join(args.models, args.model_name, str(args.version)) if args.version
                   else newest_version(args.models, args.model_name))
    offline = offline_labels(version_dir, paths, classes)
    log = os.path.join(tempfile.mkdtemp(prefix="agreement-"), "service.log")
    server = Server("service", [sys.executable, "-m", "gunicorn",
                                "-c", "service/process/gunicorn_conf.py"],
                    args.port, {"HOST": "127.0.0.1", "PORT": str(args.port),
                                "MODEL_DIR": args.models, "MODEL_NAME": args.model_name},
                    log, "/health/ready", cwd=ROOT)
    try:
        server.wait_ready()
        served = served_labels(server.url(""), paths)
    finally:
        server.stop()
    agreement = np.mean([a == b for a, b in zip(served, offline, strict=True)])
    names = [classes[label] for label in truth]
    print(f"{len(paths)} held-out images; top-1 agreement, HTTP against Keras offline: "
          f"{agreement:.4f}; accuracy over HTTP {np.mean(np.equal(served, names)):.4f}, "
          f"offline {np.mean(np.equal(offline, names)):.4f}")
    return 0 if agreement >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
