"""BentoML serving model.tflite on /predict (multipart "file"), with adaptive batching.

Run by python -m benchmarks.peers inside BentoML's own virtualenv as
`bentoml serve benchmarks.peers.bentoml_service:ImageClassifier`; the model folder and the
settings come from the PEER_* variables it sets.
"""

import os

import bentoml
from PIL.Image import Image

from benchmarks.peers.classifier import Classifier

WORKERS = int(os.environ.get("PEER_WORKERS", "2"))
MAX_BATCH_SIZE = int(os.environ.get("PEER_MAX_BATCH_SIZE", "32"))


@bentoml.service(workers=WORKERS, resources={"cpu": str(os.cpu_count())})
class ImageClassifier:
    """/predict: one uploaded image per request, Pillow-decoded by BentoML, batched, top-k out."""

    def __init__(self):
        self.classifier = Classifier(os.environ["PEER_MODEL_DIR"],
                                     int(os.environ.get("PEER_MODEL_THREADS", "1")))

    # max_latency_ms stays BentoML's default: a tighter budget makes it refuse requests (503)
    # under load instead of queueing them.
    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE)
    def predict(self, file: list[Image]) -> list[dict]:
        """One /predict answer per image, from one model call."""
        return self.classifier.predictions([self.classifier.pixels(image) for image in file])
