"""LitServe serving model.tflite on /predict (multipart "file"), with its batching and workers.

Started by python -m benchmarks.peers inside LitServe's own virtualenv.
"""

import argparse

import litserve as ls

from benchmarks.peers.classifier import Classifier


class LiteRTAPI(ls.LitAPI):
    """/predict: one uploaded JPEG per request, batched by LitServe, top-k out."""

    def __init__(self, model_dir, threads, **options):
        super().__init__(**options)
        self.model_dir, self.threads = model_dir, threads

    def setup(self, device):
        """Load the model once per worker process."""
        self.classifier = Classifier(self.model_dir, self.threads)

    def decode_request(self, request):
        """The uploaded file's bytes (LitServe hands a multipart body over as its form)."""
        return request["file"].file.read()

    def batch(self, inputs):
        """A batch is the list of the requests' files."""
        return list(inputs)

    def predict(self, files):
        """One /predict answer per file, from one model call."""
        return self.classifier.classify_files(files)

    def unbatch(self, output):
        """The answers, one per request."""
        return list(output)

    def encode_response(self, output):
        """The answer as it is."""
        return output


def main():
    """Serve on loopback until stopped."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.litserve_server")
    parser.add_argument("--model-dir", required=True, help="a model version folder")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2, help="workers on the CPU device")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds")
    parser.add_argument("--model-threads", type=int, default=1, help="LiteRT threads")
    args = parser.parse_args()
    api = LiteRTAPI(args.model_dir, args.model_threads, max_batch_size=args.max_batch_size,
                    batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
