"""The baseline peer: the pattern most tutorials ship, Flask's own server calling model.predict.

Run: python -m benchmarks.peer_app --model models/cifar10/2 --port 18001
It loads the same version's model.keras with Keras (TensorFlow), decodes the same way
as the service, then calls `model.predict` once per request from Flask's threaded
development server.
"""

import argparse
import os

import numpy as np
from flask import Flask, jsonify, request

from service.config import Settings
from service.models.artifact import KERAS_FILE
from service.models.inference import ServingModel
from service.runtime.images import decode_image

TOP_K = 3


def create_peer_app(model_path):
    """A Flask app with the tutorial's /predict, plus a readiness route for the benchmark."""
    import keras

    # The labels, input size and ranking come from the service's own ServingModel.
    serving = ServingModel(model_path)
    model = keras.saving.load_model(os.path.join(model_path, KERAS_FILE), compile=False)
    max_pixels = Settings().max_image_pixels
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        data = request.files["file"].read()
        image = decode_image(data, *serving.input_shape, max_pixels)
        scores = model.predict(image[np.newaxis], verbose=0)[0]
        ranked = serving.rank(scores, TOP_K)
        return jsonify({"predictions": [{**ranked[0], "top_k": ranked}]})

    @app.get("/health/ready")
    def ready():
        return jsonify({"status": "ready"})

    return app


def main(argv=None):
    """Serve on loopback with Flask's development server, threaded as app.run() is by default."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_app", description=__doc__)
    parser.add_argument("--model", required=True, help="a model version folder")
    parser.add_argument("--port", type=int, default=18001)
    args = parser.parse_args(argv)
    create_peer_app(args.model).run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
