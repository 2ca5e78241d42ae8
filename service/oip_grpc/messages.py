"""The generated message classes of the Open Inference Protocol's gRPC service.

`inference` is the module protoc made of open_inference_grpc.proto, `repository` that of
model_repository.proto (service/oip_grpc/protos/). Importing this module generates them
first when they are missing or stale (service/oip_grpc/codegen.py).
"""

from service.oip_grpc import codegen

codegen.ensure()

from service.oip_grpc.generated import model_repository_pb2 as repository  # noqa: E402
from service.oip_grpc.generated import open_inference_grpc_pb2 as inference  # noqa: E402

SERVICE_NAME = "inference.GRPCInferenceService"
SERVICE = inference.DESCRIPTOR.services_by_name["GRPCInferenceService"]

__all__ = ["SERVICE", "SERVICE_NAME", "inference", "repository"]
