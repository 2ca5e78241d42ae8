"""The peers' model code: Pillow decodes the JPEG, LiteRT runs model.tflite, top-k out.

It runs inside each peer's own virtualenv, so it imports only what every peer's
requirements file pins (numpy, Pillow, ai-edge-litert), nothing of the service.
"""

import base64
import io
import json
import os

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

JPEG_START = b"\xff\xd8"
TOP_K = 3


def jpeg_bytes(element):
    """The JPEG in one V2 BYTES element: raw bytes over gRPC, base64 text in REST's JSON."""
    if isinstance(element, str):
        element = element.encode("ascii")
    return element if element.startswith(JPEG_START) else base64.b64decode(element)


class Classifier:
    """One model version folder's model.tflite, labels and input size."""

    def __init__(self, model_dir, threads):
        with open(os.path.join(model_dir, "metadata.json"), encoding="utf-8") as file:
            metadata = json.load(file)
        self.labels = metadata["classes"]
        self.size = (metadata["input"]["width"], metadata["input"]["height"])
        self.interpreter = Interpreter(os.path.join(model_dir, "model.tflite"),
                                       num_threads=threads)
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.batch_size = 0
        self._resize(1)

    def _resize(self, batch_size):
        """Size the interpreter for `batch_size` images (a reshape, when the size changes)."""
        if batch_size != self.batch_size:
            self.interpreter.resize_tensor_input(self.input_index,
                                                 [batch_size, self.size[1], self.size[0], 3])
            self.interpreter.allocate_tensors()
            self.batch_size = batch_size

    def decode(self, data):
        """RGB pixels of one image file, resized to the model's input if it differs."""
        return self.pixels(Image.open(io.BytesIO(data)))

    def pixels(self, image):
        """RGB pixels of one opened Pillow image, resized to the model's input if it differs."""
        image = image.convert("RGB")
        if image.size != self.size:
            image = image.resize(self.size)
        return np.asarray(image, dtype=np.uint8)

    def probabilities(self, images):
        """One row of class probabilities per decoded image."""
        self._resize(len(images))
        self.interpreter.set_tensor(self.input_index, np.stack(images))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index).copy()

    def top_k(self, scores, k=TOP_K):
        """The k best classes of one row, as {"label", "probability"} dicts, best first."""
        order = np.argsort(-scores, kind="stable")[:k]
        return [{"label": self.labels[index], "probability": float(scores[index])}
                for index in order]

    def classification(self, scores, k=TOP_K):
        """The k best classes of one row as V2 classification strings "<score>:<index>:<label>"."""
        order = np.argsort(-scores, kind="stable")[:k]
        return [f"{scores[index]}:{index}:{self.labels[index]}" for index in order]

    def classify_files(self, files):
        """/predict's answer for each image file's bytes, in one batch."""
        return self.predictions([self.decode(data) for data in files])

    def predictions(self, images):
        """/predict's answer ({"predictions": [best, with its top_k]}) for each decoded image."""
        answers = []
        for row in self.probabilities(images):
            ranked = self.top_k(row)
            answers.append({"predictions": [{**ranked[0], "top_k": ranked}]})
        return answers

    def classify_v2(self, elements):
        """The V2 classification strings, one row of k per BYTES element (a JPEG)."""
        rows = self.probabilities([self.decode(jpeg_bytes(element)) for element in elements])
        return [self.classification(row) for row in rows]
