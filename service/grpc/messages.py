"""The message classes of the Open Inference Protocol's gRPC service, in a pool of their own.

Built from the descriptors protoc compiled from service/grpc/protos/
(service/grpc/codegen.py says why not *_pb2 modules); importing this module compiles
them first when they are missing or stale. `inference` holds the classes of
open_inference_grpc.proto (inference.ModelInferRequest, ...), `repository` those of
model_repository.proto.
"""

from types import SimpleNamespace

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from service.grpc import codegen

codegen.ensure()

POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(codegen.DESCRIPTOR_SET.read_bytes()).file:
    POOL.Add(_file)


def _classes(file_name: str) -> SimpleNamespace:
    """The message classes of one .proto file, by name, and its DESCRIPTOR."""
    file = POOL.FindFileByName(file_name)
    return SimpleNamespace(DESCRIPTOR=file, **{
        name: message_factory.GetMessageClass(descriptor)
        for name, descriptor in file.message_types_by_name.items()})


inference = _classes("open_inference_grpc.proto")
repository = _classes("model_repository.proto")

SERVICE = inference.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME = SERVICE.full_name
