"""Request logging: one JSON line per request (service/json_log.py), with a request id."""

import logging
import re
import time
import uuid

from flask import Flask, g, request

from service import metrics

REQUEST_ID_HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("service.access")


def register_request_logging(app: Flask) -> None:
    """Time every request, give it an id, log it and count it."""

    @app.before_request
    def start_timer():
        g.started = time.perf_counter()
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if VALID_REQUEST_ID.match(given) else uuid.uuid4().hex

    @app.after_request
    def log_request(response):
        duration = time.perf_counter() - g.get("started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule else "unmatched"
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        metrics.REQUESTS.labels(route=route, method=request.method,
                                status=response.status_code).inc()
        metrics.LATENCY.labels(route=route, status=response.status_code).observe(duration)
        chosen = g.get("route")  # the version that classified, on a classification route
        if chosen is not None:
            metrics.observe_inference(chosen, duration)
        fields = {"method": request.method, "path": request.path,
                  "status": response.status_code, "client": request.remote_addr,
                  "duration_ms": round(duration * 1000, 2), "request_id": g.get("request_id"),
                  "model": chosen.name if chosen else None,
                  "model_version": chosen.model.version if chosen else g.get("model_version"),
                  "version_label": chosen.label if chosen else None,
                  "images": g.get("image_count", 0)}
        # Written once the answer has gone out (the server closes the response then), so
        # the client does not wait for the line; the metrics above are counted before.
        response.call_on_close(lambda: access_log.info(
            "%s %s %s", fields["method"], fields["path"], fields["status"], extra=fields))
        return response
