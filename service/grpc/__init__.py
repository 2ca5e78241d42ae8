"""The Open Inference Protocol over gRPC (inference.GRPCInferenceService), beside the REST face.

protos/ holds the .proto files; codegen.py compiles them (into generated/, never
committed); messages.py builds their message classes; tensors.py converts messages to and
from the shared tensors of service/open_inference/tensors.py; status.py maps domain
errors to gRPC status codes; servicer.py answers the RPCs; server.py builds and runs the
grpc.aio server with health and reflection; worker.py runs it as gunicorn workers of their own.

Nothing here is imported by the package itself, so the code generator can run where only
grpcio-tools is installed.
"""
