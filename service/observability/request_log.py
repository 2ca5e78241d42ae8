"""Request logging: one JSON line per request (observability/json_log.py), with a request id.

HTTP requests are logged and counted by the hooks below; gRPC calls by
service/grpc/servicer.py, through the same `record_request` and `log_request`, so both
land in the same Prometheus series and log lines, told apart by `protocol`.
"""

import logging
import re
import time
import uuid

from flask import Flask, g, request

from service.observability import metrics

REQUEST_ID_HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("service.access")


def request_id(given: str) -> str:
    """The client's own request id when it is a valid one, else a new one."""
    return given if VALID_REQUEST_ID.match(given) else uuid.uuid4().hex


def forwarded_client(forwarded_for: str, hops: int, peer: str | None) -> str | None:
    """The client's address: the one `hops` trusted proxies appended to X-Forwarded-For
    (as werkzeug's ProxyFix reads it), or the peer's own without them."""
    if hops:
        addresses = [address.strip() for address in forwarded_for.split(",")]
        if forwarded_for and len(addresses) >= hops:
            return addresses[-hops]
    return peer


def record_request(protocol: str, method: str, route: str, path: str, status, seconds: float,
                   request_id: str, client: str | None, chosen=None, model_version=None,
                   images: int = 0) -> dict:
    """Count one answered request in the shared series; return its log line's fields.

    `status` is the HTTP status, or the gRPC status code's name; `chosen` the Route that
    classified, on a classification request.
    """
    metrics.REQUESTS.labels(protocol=protocol, route=route, method=method, status=status).inc()
    metrics.LATENCY.labels(protocol=protocol, route=route, status=status).observe(seconds)
    if chosen is not None:
        metrics.observe_inference(chosen, seconds)
    return {"protocol": protocol, "method": method, "path": path, "status": status,
            "client": client, "duration_ms": round(seconds * 1000, 2),
            "request_id": request_id, "model": chosen.name if chosen else None,
            "model_version": chosen.model.version if chosen else model_version,
            "version_label": chosen.label if chosen else None, "images": images}


def log_request(fields: dict) -> None:
    """Write a request's log line."""
    access_log.info("%s %s %s", fields["method"], fields["path"], fields["status"], extra=fields)


def register_request_logging(app: Flask) -> None:
    """Time every request, give it an id, log it and count it."""

    @app.before_request
    def start_timer():
        g.started = time.perf_counter()
        g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER, ""))

    @app.after_request
    def log_http_request(response):
        duration = time.perf_counter() - g.get("started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule else "unmatched"
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        fields = record_request("http", request.method, route, request.path,
                                response.status_code, duration, g.get("request_id"),
                                request.remote_addr, g.get("route"), g.get("model_version"),
                                g.get("image_count", 0))
        # Written once the answer has gone out (the server closes the response then), so
        # the client does not wait for the line; the metrics above are counted before.
        response.call_on_close(lambda: log_request(fields))
        return response
