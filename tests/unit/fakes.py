"""Stand-ins for the model store and a serving model: the Flask app runs without TensorFlow."""

import numpy as np


class ColourModel:
    """Stands in for a ServingModel: names each picture after its strongest colour channel."""

    name = "colours"
    version = 7
    classes = ["blue", "green", "red"]
    input_shape = (16, 16, 3)

    def __init__(self, fail=False):
        self.fail = fail
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
                "loaded_at": "2026-11-28T00:00:00+00:00"}


class FakeStore:
    """Stands in for ModelStore: serves `model`, or none, in `state` for `reason`."""

    def __init__(self, model=None, state="ready", reason=""):
        self.current = model
        self.state = state
        self.reason = reason
        self.waits = []

    def wait_for_model(self, timeout):
        self.waits.append(timeout)
        return self.current

