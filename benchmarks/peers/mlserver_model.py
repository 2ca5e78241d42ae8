"""MLServer's custom runtime for model.tflite: the implementation its model-settings.json names.

python -m benchmarks.peers writes settings.json (ports, parallel_workers) and
model-settings.json (this class, adaptive batching, the model folder as parameters.uri), then
runs `mlserver start` on them inside MLServer's own virtualenv.
"""

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from benchmarks.peers.classifier import TOP_K, Classifier


class LiteRTClassifier(MLModel):
    """model.tflite behind MLServer's V2 protocol: one JPEG per BYTES element, top-k out."""

    async def load(self) -> bool:
        """Load the model folder named by parameters.uri, one LiteRT thread per worker."""
        extra = self.settings.parameters.extra or {}
        self.classifier = Classifier(self.settings.parameters.uri, extra.get("threads", 1))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """The classification strings of every image of the first input, as "probabilities"."""
        rows = self.classifier.classify_v2(list(payload.inputs[0].data))
        output = ResponseOutput(name="probabilities", shape=[len(rows), TOP_K],
                                datatype="BYTES", data=[item for row in rows for item in row])
        return InferenceResponse(id=payload.id, model_name=self.name, outputs=[output])
