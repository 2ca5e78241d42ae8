"""The gRPC server of one worker: the protocol's service, grpc.health.v1 and reflection.

It runs on grpc.aio: the event loop holds every connection and every call still arriving,
for next to nothing each, so a client that opens a stream and sends nothing, or sends
slowly, holds no thread; a call's work runs on a pool of THREADS threads once its whole
request is in (service/grpc/servicer.py). It runs in a thread of every gunicorn worker
(service/grpc/thread.py); the workers all listen on the one GRPC_PORT (SO_REUSEPORT: the
kernel spreads new connections over them).

Health (grpc.health.v1, for Kubernetes' grpc probes and load balancers): the service ""
and inference.GRPCInferenceService are SERVING while the default model serves, as
/health/ready says, and NOT_SERVING from the moment the server starts to stop.

Stopping (SIGTERM): health turns NOT_SERVING, the port is closed to new connections, the
calls of the connections already made are still taken for DRAIN_SECONDS
(service/grpc/listeners.py says why), and then the server stops: it refuses new calls
(GOAWAY) and gives those in flight the grace period to finish.
"""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from service.config import Settings
from service.grpc import listeners
from service.grpc.messages import SERVICE, SERVICE_NAME, inference, repository
from service.grpc.servicer import REPOSITORY_INDEX, InferenceServicer
from service.open_inference import protocol
from service.serving import Serving

log = logging.getLogger("service.grpc")

HEALTH_POLL_SECONDS = 0.5
# Long enough for the servicer to take up every call already received (nginx writes a call
# with its connection), short enough not to hold a reload or a stop.
DRAIN_SECONDS = 1.0


class BindError(RuntimeError):
    """GRPC_PORT cannot be listened on."""
HEALTH_SERVICES = ("", SERVICE_NAME)


def build(serving: Serving, settings: Settings,
          executor: ThreadPoolExecutor) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A server with every service added, not yet bound or started."""
    server = grpc.aio.server(options=[
        # Several worker processes on one port; gRPC sets it by default on Linux, said here.
        ("grpc.so_reuseport", 1),
        # The HTTP face's body limit: a larger message is RESOURCE_EXHAUSTED before it is read.
        ("grpc.max_receive_message_length", settings.max_request_bytes),
    ])
    server.add_generic_rpc_handlers((InferenceServicer(serving, executor).generic_handler(),))
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server,
        pool=reflection_pool())
    return server, checker


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """What reflection describes: every service as served, RepositoryIndex included.

    The protocol's .proto does not declare RepositoryIndex (Triton's extension adds it to
    the same service), so the service's descriptor is copied with that method added,
    importing model_repository.proto for its messages; grpcurl can then list and call it.
    The message classes in use keep the .proto's own descriptors.
    """
    files = []
    for module in (repository, inference, health_pb2, reflection_pb2):
        files.append(descriptor_pb2.FileDescriptorProto())
        module.DESCRIPTOR.CopyToProto(files[-1])
    repository_file, service_file = files[:2]
    service_file.dependency.append(repository_file.name)
    service = next(entry for entry in service_file.service if entry.name == SERVICE.name)
    service.method.add(name=REPOSITORY_INDEX, input_type=".inference.RepositoryIndexRequest",
                       output_type=".inference.RepositoryIndexResponse")
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    return pool


async def serve(serving: Serving, settings: Settings, stopping: asyncio.Event, grace: float,
                on_listening: Callable[[], None] = lambda: None) -> None:
    """Serve on GRPC_PORT until `stopping` is set, then drain: calls in flight get `grace`
    seconds to finish, new ones are refused. `on_listening` is called once the port listens."""
    executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="grpc")
    server, checker = build(serving, settings, executor)
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:
        raise BindError(f"gRPC cannot listen at {address}: {error}") from None
    for service in HEALTH_SERVICES:  # until the first look at the models
        await checker.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    log.info("gRPC listening at %s", address, extra={"event": "grpc_listening",
                                                     "port": settings.grpc_port})
    on_listening()
    while not stopping.is_set():
        status = (health_pb2.HealthCheckResponse.SERVING if protocol.server_ready(serving)
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in HEALTH_SERVICES:
            await checker.set(service, status)
        try:
            await asyncio.wait_for(stopping.wait(), HEALTH_POLL_SECONDS)
        except TimeoutError:
            pass
    await checker.enter_graceful_shutdown()
    try:
        closed = listeners.close_to_new_connections(settings.grpc_port)
    except OSError as error:  # the port then closes with gRPC's own stop
        log.warning("gRPC could not close its port before stopping: %s", error,
                    extra={"event": "grpc_port_not_closed"})
        closed = 0
    log.info("gRPC stopping: its port closed to new connections, the calls of those made "
             "taken for %.1f s more, then calls in flight get %.0f s", DRAIN_SECONDS, grace,
             extra={"event": "grpc_stopping", "listeners_closed": closed})
    await asyncio.sleep(DRAIN_SECONDS)
    await server.stop(grace)
    executor.shutdown(wait=False)
