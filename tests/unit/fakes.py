"""Stand-ins for loaded model versions: the Flask app and the repository run without LiteRT."""

import json
import os

import numpy as np

from service.models.artifact import METADATA_FILE, TFLITE_FILE, missing_files
from service.models.inference import ModelLoadError


class ColourModel:
    """Stands in for a ServingModel: names each picture after its strongest colour channel."""

    classes = ["blue", "green", "red"]
    input_shape = (16, 16, 3)
    loaded_at = "2026-11-28T00:00:00+00:00"
    memory_bytes = 4 * 1024 * 1024

    def __init__(self, name="colours", version=7, fail=False, min_confidence=0.0):
        self.name, self.version, self.fail = name, version, fail
        # Below it, an answer is unknown (service/models/confidence.py); 0: never.
        self.min_confidence = min_confidence
        self.batch_sizes = []

    def infer(self, images, all_cores=False):
        self.batch_sizes.append(len(images))
        if self.fail:
            raise RuntimeError("the model broke at /srv/secret/path")
        # Mean blue, green and red of each picture, plus one so that black is not 0/0.
        means = images.reshape(len(images), -1, 3).mean(axis=1)[:, ::-1] + 1.0
        return (means / means.sum(axis=1, keepdims=True)).astype(np.float32)

    def rank(self, scores, top_k):
        best = sorted(range(len(scores)), key=lambda index: -scores[index])[:top_k]
        return [{"label": self.classes[index], "confidence": round(float(scores[index]), 4)}
                for index in best]

    def describe(self):
        return {"name": self.name, "version": self.version, "classes": self.classes,
                "loaded_at": self.loaded_at}


class ColourLoader:
    """Stands in for ServingModel as the repository's loader: a ColourModel for any folder.

    Versions in `broken` fail to load; with `fail`, the models load but break when run.
    """

    def __init__(self, broken=(), fail=False, min_confidence=0.0):
        self.broken, self.fail, self.min_confidence = set(broken), fail, min_confidence
        self.loaded = {}

    def __call__(self, path):
        folder = os.path.normpath(path)
        name, version = os.path.basename(os.path.dirname(folder)), int(os.path.basename(folder))
        missing = missing_files(folder)
        if missing:
            raise ModelLoadError(f"it has no {' or '.join(missing)}")
        if version in self.broken:
            raise ModelLoadError("unreadable model.tflite: not a model")
        model = ColourModel(name, version, self.fail, self.min_confidence)
        self.loaded[name, version] = model
        return model


def publish_fake(models_dir, name, version):
    """A version folder that holds the serving files, as complete as the repository needs."""
    folder = models_dir / name / str(version)
    folder.mkdir(parents=True)
    (folder / METADATA_FILE).write_text(json.dumps({"name": name}))
    (folder / TFLITE_FILE).write_bytes(b"fake")
    return folder
