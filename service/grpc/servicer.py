"""The RPCs of inference.GRPCInferenceService, answered from the same Serving as HTTP.

Each RPC is a plain function of its request message, run on the server's thread pool (the
event loop only moves bytes): it may wait for a first model load, decode images and wait
for the batcher, as an HTTP request thread does. Around it, `handle` reads the request
bytes, gives the call a request id, turns domain errors into status codes
(service/grpc/status.py), counts the call in the shared metrics and logs it as HTTP
requests are (service/observability/request_log.py), with protocol "grpc".
"""

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import grpc

from service.grpc import tensors
from service.grpc.messages import SERVICE, SERVICE_NAME, inference, repository
from service.grpc.status import UNAUTHENTICATED_MESSAGE, status_of
from service.models.routing import RoutingError
from service.observability.request_log import (
    forwarded_client,
    log_request,
    record_request,
    request_id,
)
from service.open_inference import protocol
from service.open_inference.tensors import TensorError
from service.process.worker_activity import activity
from service.runtime.admission import (
    OVERLOADED,
    AdmissionError,
    deadline_of,
    refusal,
    retry_after_ms,
)
from service.serving import Serving, offered_keys
from service.store.recorder import Origin

log = logging.getLogger("service.grpc")

# "Server Metadata": the extensions this face implements (binary tensor data is REST's);
# schedule_policy is Triton's "timeout" request parameter (service/runtime/admission.py).
EXTENSIONS = ["classification", "model_repository", "schedule_policy"]
# Metadata keys, lower-case as gRPC has them; the HTTP face reads the same as headers.
REQUEST_ID_KEY, ROUTING_KEY = "x-request-id", "x-routing-key"
AUTHORIZATION_KEY, API_KEY_KEY = "authorization", "x-api-key"
FORWARDED_FOR_KEY = "x-forwarded-for"
# service/runtime/admission.py's headers as metadata: a deadline, and the proxy's arrival stamp.
DEADLINE_KEY, ARRIVAL_KEY = "x-request-timeout", "x-request-start"
# gRPC's server pushback (gRFC A6): a retry policy waits this many ms before its retry.
PUSHBACK_KEY = "grpc-retry-pushback-ms"
# Only inference waits for the model; the other RPCs are never refused.
ADMITTED_RPCS = ("ModelInfer",)
# Triton's Model Repository extension, served beside the protocol's own RPCs.
REPOSITORY_INDEX = "RepositoryIndex"


class UnauthenticatedError(Exception):
    """The call lacks the API key."""


@dataclass
class Call:
    """What one call carries besides its message, and what it did (for its log line)."""

    metadata: dict
    request_id: str
    started: float = 0.0
    client: str | None = None
    route: object = None
    images: int = 0
    model_version: object = None
    status: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    received: float = 0.0  # time.monotonic() when the call's request was in
    time_remaining: float | None = None  # what the call's own deadline left then
    cancelled: threading.Event = field(default_factory=threading.Event)
    trailers: tuple = ()


class InferenceServicer:
    """The protocol's RPCs, and Triton's RepositoryIndex, for one worker's Serving."""

    def __init__(self, serving: Serving, executor: Executor):
        self.serving = serving
        self.executor = executor
        # Calls handed to the pool and not yet started there: the gRPC face's own queue.
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        # method name -> (request class, function of (message, call) returning a message)
        self.rpcs: dict[str, tuple[type, Callable]] = {
            "ServerLive": (inference.ServerLiveRequest, self.server_live),
            "ServerReady": (inference.ServerReadyRequest, self.server_ready),
            "ModelReady": (inference.ModelReadyRequest, self.model_ready),
            "ServerMetadata": (inference.ServerMetadataRequest, self.server_metadata),
            "ModelMetadata": (inference.ModelMetadataRequest, self.model_metadata),
            "ModelInfer": (inference.ModelInferRequest, self.model_infer),
            REPOSITORY_INDEX: (repository.RepositoryIndexRequest, self.repository_index),
        }
        assert {method.name for method in SERVICE.methods} <= set(self.rpcs)

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """Every RPC as a unary handler of bytes: the request is parsed in `handle`, so a
        message that is no message of its type is INVALID_ARGUMENT, not INTERNAL."""
        handlers = {name: grpc.unary_unary_rpc_method_handler(self._handler(name))
                    for name in self.rpcs}
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def _handler(self, name: str):
        async def handler(data: bytes, context) -> bytes:
            return await self.handle(name, data, context)

        return handler

    async def handle(self, name: str, data: bytes, context) -> bytes:
        """Answer one call: its work on the pool, then its status, metrics and log line."""
        started = time.perf_counter()
        metadata = {key: value for key, value in (context.invocation_metadata() or ())
                    if isinstance(value, str)}
        call = Call(metadata, request_id(metadata.get(REQUEST_ID_KEY, "")), started,
                    received=time.monotonic(), time_remaining=context.time_remaining())
        call.client = forwarded_client(metadata.get(FORWARDED_FOR_KEY, ""),
                                       self.serving.settings.trusted_proxy_hops,
                                       peer_address(context.peer()))
        answer = b""
        try:
            if name in ADMITTED_RPCS and self._queue_full():
                self._refuse(call, refusal(OVERLOADED, "The service is at capacity; try again "
                                           "later.", self.serving.settings.retry_after_seconds))
            else:
                answer = await self._in_pool(name, data, call)
        except asyncio.CancelledError:
            call.status, call.details = grpc.StatusCode.CANCELLED, "cancelled by the client"
            call.cancelled.set()  # a call still waiting for the model is then not run
            raise
        finally:
            self._record(name, call, time.perf_counter() - started)
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))
        if call.status != grpc.StatusCode.OK:
            await context.abort(call.status, call.details,
                                trailing_metadata=((REQUEST_ID_KEY, call.request_id),
                                                   *call.trailers))
        return answer

    def _queue_full(self) -> bool:
        """Whether MAX_WAITING_REQUESTS calls already wait for the pool (admission on)."""
        settings = self.serving.settings
        return bool(settings.admission) and self._waiting >= settings.max_waiting_requests

    async def _in_pool(self, name: str, data: bytes, call: Call) -> bytes:
        """Run the call on the pool, counted as waiting until a thread takes it."""
        with self._waiting_lock:
            self._waiting += 1
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self._run, name, data, call)

    def _run(self, name: str, data: bytes, call: Call) -> bytes:
        """Parse, answer and serialize, on a pool thread; errors become the call's status."""
        with self._waiting_lock:
            self._waiting -= 1
        message_class, rpc = self.rpcs[name]
        activity.request_started()
        try:
            return rpc(tensors.parse_message(message_class, data), call).SerializeToString()
        except UnauthenticatedError:
            call.status, call.details = grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE
        except AdmissionError as refused:
            self._refuse(call, refused)
        except Exception as error:
            call.status, call.details = status_of(error)
            if call.status == grpc.StatusCode.INTERNAL:
                log.exception("unhandled error in %s", name, extra={"request_id": call.request_id})
        finally:
            activity.request_finished()
        return b""

    @staticmethod
    def _refuse(call: Call, refused: AdmissionError) -> None:
        """The call's status for a refusal; an overload's carries gRPC's retry pushback."""
        call.status, call.details = status_of(refused)
        pushback = retry_after_ms(refused)
        if pushback is not None:
            call.trailers = ((PUSHBACK_KEY, str(pushback)),)

    def _record(self, name: str, call: Call, seconds: float) -> None:
        """Count the call and log it, in the series and line shape HTTP requests have."""
        route = f"/{SERVICE_NAME}/{name}"
        fields = record_request("grpc", "POST", route, route, call.status.name, seconds,
                                call.request_id, call.client, call.route, call.model_version,
                                call.images)
        # Written after the answer is handed back, as HTTP writes its line after the answer.
        asyncio.get_running_loop().call_soon(log_request, fields)

    # The RPCs: functions of the request message and the call, on a pool thread.

    def server_live(self, request, call):
        """"Server Live": the process answers."""
        return inference.ServerLiveResponse(live=True)

    def server_ready(self, request, call):
        """"Server Ready": the default model (MODEL_NAME) serves."""
        return inference.ServerReadyResponse(ready=protocol.server_ready(self.serving))

    def model_ready(self, request, call):
        """"Model Ready": false for a model or version that is not served (as Triton answers)."""
        try:
            ready = protocol.model_ready(self.serving, _model_name(request.name),
                                               request.version or None)
        except RoutingError:
            ready = False
        return inference.ModelReadyResponse(ready=ready)

    def server_metadata(self, request, call):
        """"Server Metadata": name, version and the extensions implemented."""
        return inference.ServerMetadataResponse(name=protocol.SERVER_NAME,
                                                version=protocol.SERVER_VERSION,
                                                extensions=EXTENSIONS)

    def model_metadata(self, request, call):
        """"Model Metadata": inputs, outputs and, as a property, the class names."""
        metadata = protocol.model_metadata(self.serving, _model_name(request.name),
                                                 request.version or None)
        tensor = inference.ModelMetadataResponse.TensorMetadata
        return inference.ModelMetadataResponse(
            name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"],
            inputs=[tensor(**entry) for entry in metadata["inputs"]],
            outputs=[tensor(**entry) for entry in metadata["outputs"]],
            properties={"classes": json.dumps(metadata["classes"]),
                        "min_confidence": json.dumps(metadata["min_confidence"])})

    def model_infer(self, request, call):
        """"Inference": the request's tensors through the shared checks and batcher."""
        offered = offered_keys(call.metadata.get(AUTHORIZATION_KEY, ""),
                               call.metadata.get(API_KEY_KEY, ""))
        if not self.serving.key_is_valid(offered):
            raise UnauthenticatedError()
        name = _model_name(request.model_name)
        answer = protocol.infer(self.serving, name, request.model_version or None,
                                      call.metadata.get(ROUTING_KEY) or None,
                                      lambda: tensors.read_request(request),
                                      Origin(f"/{SERVICE_NAME}/ModelInfer", call.request_id,
                                             call.started, client=call.client),
                                      self._deadline(call), call.cancelled.is_set)
        call.route, call.images = answer.route, answer.image_count
        return tensors.write_response(answer.header(name), answer.outputs)

    def _deadline(self, call: Call):
        """The call's deadline: its own gRPC deadline, an x-request-timeout, or the default;
        from its arrival at the trusted proxy (x-request-start) or at this server."""
        settings = self.serving.settings
        remaining = call.time_remaining
        if remaining is not None:
            remaining -= time.monotonic() - call.received
        return deadline_of(call.metadata.get(DEADLINE_KEY),
                           call.metadata.get(ARRIVAL_KEY) if settings.trusted_proxy_hops else None,
                           settings.default_deadline_ms, remaining)

    def repository_index(self, request, call):
        """Triton's Model Repository extension, "Index": every model and version, and why."""
        entry = repository.RepositoryIndexResponse.ModelIndex
        return repository.RepositoryIndexResponse(models=[
            entry(**item) for item in protocol.repository_index(self.serving, request.ready)])


def _model_name(name: str) -> str:
    """The model a request names; the protocol has no default model."""
    if not name:
        raise TensorError("Name the model: the request's model name is empty.")
    return name


def peer_address(peer: str | None) -> str | None:
    """The address of a gRPC peer ("ipv4:10.0.0.7:51234", "ipv6:[::1]:51234"), without its
    port."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = rest.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host
