"""The application factory: create_app() wires settings, models, batcher and routes."""

import functools

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from service.api_keys import ApiKeys
from service.config import Settings
from service.http.errors import register_error_handlers
from service.http.routes import blueprint
from service.http.security_headers import register_security_headers
from service.http.v2 import blueprint as inference_protocol
from service.models.footprint import (
    FittingLoader,
    memory_limit_bytes,
    trial_load,
    upper_bound_bytes,
    worker_share_bytes,
)
from service.models.inference import ServingModel
from service.models.repository import ModelRepository
from service.models.shadow import ShadowRunner
from service.observability import metrics
from service.observability.drift import DriftMonitor
from service.observability.json_log import configure_logging
from service.observability.request_log import register_request_logging
from service.process.cpus import service_cores
from service.process.worker_activity import activity, register_worker_activity
from service.runtime.admission import Admission, lane_refusals
from service.runtime.batcher import Batcher
from service.store.recorder import recorder_from


def create_app(settings: Settings | None = None, start_models: bool = True) -> Flask:
    """Build the Flask app; the models load in the background unless told not to."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)

    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False
    if settings.trusted_proxy_hops:
        # The client's address and scheme as the last trusted proxy saw them; values a
        # client wrote into the headers itself are ignored.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops,
                                x_proto=settings.trusted_proxy_hops)

    # An unusable key file raises ApiKeyError here: the service does not start without the
    # authentication it was configured with.
    keys = ApiKeys(settings.api_key, settings.api_key_file, on_reload=metrics.record_api_keys)
    metrics.API_KEYS.set(keys.count)
    app.extensions["api_keys"] = keys

    # One worker per core: a lone request may borrow the idle workers' cores.
    options = {"warm_batch_size": settings.batch_max_size, "threads": settings.model_threads,
               "all_core_threads": min(service_cores(), settings.workers)}
    # A version goes live only if it fits the worker's share of the memory limit.
    share = worker_share_bytes(memory_limit_bytes(settings.memory_limit_mb), settings.workers)
    load = FittingLoader(functools.partial(ServingModel, **options), share,
                         functools.partial(trial_load, **options),
                         functools.partial(upper_bound_bytes, **options))
    models = ModelRepository(settings.model_dir, settings.model_name,
                             settings.model_poll_seconds, load=load,
                             on_load=metrics.record_model_load,
                             on_change=metrics.record_model_state)
    app.extensions["model_repository"] = models
    batcher = Batcher(settings.batch_max_size, settings.batch_max_wait_ms / 1000,
                      on_batch=metrics.BATCH_SIZE.observe, may_use_all_cores=activity.others_idle)
    app.extensions["batcher"] = batcher
    # Nothing is opened here: the writer thread and its connection start with the first
    # prediction, in the worker that makes it (gunicorn forks before).
    recorder = recorder_from(settings)
    app.extensions["prediction_recorder"] = recorder
    app.extensions["drift"] = DriftMonitor(settings.drift_window)
    app.extensions["shadow"] = ShadowRunner(batcher.submit, recorder=recorder)
    app.extensions["admission"] = Admission(settings.max_requests_per_version,
                                            settings.retry_after_seconds,
                                            enabled=bool(settings.admission))
    if settings.admission:
        # On the gunicorn worker's refusal lane, a classifying request is answered before
        # Flask sees it (service/process/gunicorn_worker.py); elsewhere this passes every
        # request on.
        app.wsgi_app = lane_refusals(app.wsgi_app, settings.retry_after_seconds)
    register_worker_activity(app)
    register_error_handlers(app)
    register_request_logging(app)
    register_security_headers(app)
    app.register_blueprint(blueprint)
    app.register_blueprint(inference_protocol)
    if start_models:
        models.start()
    return app
