"""The edge where errors become gRPC status codes: what service/http/errors.py is to HTTP.

Below this layer, code raises domain errors that know nothing of gRPC (ImageError,
UploadError, TensorError, RoutingError, AdmissionError); the table here decides the code a
client sees for each kind. A client's mistake is never UNKNOWN: an error not in the table is
a bug, and answers INTERNAL (service/grpc/servicer.py logs it).
"""

import grpc

from service.http.uploads import UploadError
from service.models.routing import RoutingError
from service.open_inference.tensors import INVALID, TensorError
from service.runtime.admission import AdmissionError
from service.runtime.images import ImageError
from service.store.feedback import CONFLICT, NOT_FOUND, UNKNOWN_CLASS, FeedbackError
from service.store.feedback import INVALID as INVALID_FEEDBACK

Code = grpc.StatusCode

# Each domain error kind's status code, by the class that raises it.
DOMAIN_STATUS = {
    ImageError: {"empty": Code.INVALID_ARGUMENT, "undecodable": Code.INVALID_ARGUMENT,
                 "unsupported": Code.INVALID_ARGUMENT, "too_large": Code.RESOURCE_EXHAUSTED},
    # /predict's upload forms; no gRPC request is read through them, listed for completeness.
    UploadError: {"invalid_json": Code.INVALID_ARGUMENT, "invalid_base64": Code.INVALID_ARGUMENT,
                  "invalid_multipart": Code.INVALID_ARGUMENT, "no_images": Code.INVALID_ARGUMENT,
                  "too_many_images": Code.RESOURCE_EXHAUSTED,
                  "too_many_parts": Code.RESOURCE_EXHAUSTED,
                  "unsupported_media_type": Code.INVALID_ARGUMENT},
    TensorError: {INVALID: Code.INVALID_ARGUMENT, "too_many_images": Code.RESOURCE_EXHAUSTED},
    # Overloaded is UNAVAILABLE with grpc-retry-pushback-ms (the servicer adds it): the
    # documented retry policy then waits the pushback, not its 0.1 s backoff, before its
    # one retry (docs/grpc.md, "Overload and deadlines").
    AdmissionError: {"overloaded": Code.UNAVAILABLE, "deadline_exceeded": Code.DEADLINE_EXCEEDED,
                     "caller_gone": Code.CANCELLED, "invalid_deadline": Code.INVALID_ARGUMENT},
    RoutingError: {"model_not_found": Code.NOT_FOUND, "version_not_found": Code.NOT_FOUND,
                   "label_not_found": Code.NOT_FOUND, "model_not_ready": Code.UNAVAILABLE},
    # POST /feedback's; gRPC takes no feedback (its clients use the HTTP route), listed for
    # completeness.
    FeedbackError: {INVALID_FEEDBACK: Code.INVALID_ARGUMENT, UNKNOWN_CLASS: Code.INVALID_ARGUMENT,
                    NOT_FOUND: Code.NOT_FOUND, CONFLICT: Code.ALREADY_EXISTS},
}

UNAUTHENTICATED_MESSAGE = ("A valid API key is required: send the metadata "
                           "'authorization: Bearer <key>' or 'x-api-key: <key>'.")
INTERNAL_MESSAGE = "The service hit an unexpected error; it has been logged."


def is_domain_error(error: BaseException) -> bool:
    """Whether `error` is a client's mistake the table knows."""
    return type(error) in DOMAIN_STATUS and error.kind in DOMAIN_STATUS[type(error)]


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for `error`."""
    if is_domain_error(error):
        return DOMAIN_STATUS[type(error)][error.kind], str(error)
    return Code.INTERNAL, INTERNAL_MESSAGE
