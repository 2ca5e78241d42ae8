"""KServe's plain Python ModelServer serving model.tflite over V2 REST and gRPC (one process).

Started by python -m benchmarks.peers inside KServe's own virtualenv, as KServe's docs show a
custom model: a kserve.Model subclass, and ModelServer().start([model]) with KServe's own
command-line options (--http_port, --grpc_port, --workers).
"""

import argparse

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.model_server import parser as kserve_parser
from kserve.utils.utils import generate_uuid

from benchmarks.peers.classifier import TOP_K, Classifier


class LiteRTClassifier(Model):
    """model.tflite behind KServe's V2 protocol: one JPEG per BYTES element, top-k out."""

    def __init__(self, name, model_dir, threads):
        super().__init__(name)
        self.classifier = Classifier(model_dir, threads)
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None):
        """The classification strings of every image of the first input, as "probabilities"."""
        elements = payload.inputs[0].as_numpy().reshape(-1).tolist()
        rows = self.classifier.classify_v2(elements)
        output = InferOutput(name="probabilities", shape=[len(rows), TOP_K], datatype="BYTES",
                             data=[item for row in rows for item in row])
        # Over gRPC, BYTES answers go in raw_output_contents, as Triton and this service send
        # them (tritonclient cannot read BYTES contents under NumPy 2).
        # A request may come without an id; KServe's answer needs one (its examples do this).
        return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name,
                             infer_outputs=[output], use_binary_outputs=payload.from_grpc)


def main():
    """Parse KServe's options and ours, load the model, serve until stopped."""
    parser = argparse.ArgumentParser(parents=[kserve_parser])
    parser.add_argument("--model_dir", required=True, help="a model version folder")
    parser.add_argument("--model_threads", type=int, default=1, help="LiteRT threads")
    args, _ = parser.parse_known_args()
    model = LiteRTClassifier(args.model_name, args.model_dir, args.model_threads)
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port,
                workers=args.workers).start([model])


if __name__ == "__main__":
    main()
