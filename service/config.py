"""Settings: every environment variable the service reads, each with a safe default."""

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

# The longest deadline a request or DEFAULT_DEADLINE_MS may give (service/runtime/admission.py).
MAX_DEADLINE_MS = 600_000


class SettingsError(Exception):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    """The service's settings; the README's settings tables list the same names and defaults."""

    model_dir: str = "models"
    # The model that routes naming none serve (/predict, /model); every model in
    # model_dir is served under its own name.
    model_name: str = "cifar10"
    host: str = "0.0.0.0"
    port: int = 8000
    # Measured on the 2-core machine (docs/performance.md, "Tried and not adopted"): two
    # workers use both cores (one is held to about one core by the GIL), sixteen threads
    # each, so that 32 clients each have a thread.
    workers: int = 2
    threads: int = 16
    max_request_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_images_per_request: int = 32
    default_top_k: int = 3
    api_key: str = ""
    # A file of keys, one per line, re-read when it changes (service/api_keys.py): several
    # keys valid at once, so a key is rotated without a failed request, and the key is kept
    # out of the environment. Never together with api_key.
    api_key_file: str = ""
    batch_max_size: int = 32
    batch_max_wait_ms: float = 5.0
    model_poll_seconds: float = 5.0
    # One XNNPACK thread per worker, so that the workers' model calls do not fight over
    # the cores. A request alone in the whole service uses every core instead
    # (service/process/worker_activity.py).
    model_threads: int = 1
    # The memory limit a version must fit in, in MiB (service/models/footprint.py); 0: the
    # container's own limit (its cgroup's), and none without one.
    memory_limit_mb: int = 0
    # 1: each worker runs on its own share of the CPUs (service/process/cpus.py); 0: anywhere.
    pin_workers: int = 1
    # 1: each worker's main thread, which accepts connections and refuses them under
    # overload, runs ahead of its request threads for a CPU (real-time priority, where the
    # system allows it: service/process/cpus.py); 0: at the same priority as they.
    realtime_main_thread: int = 1
    log_level: str = "info"
    # The Open Inference Protocol over gRPC (service/grpc/), on Triton's port, served by
    # every worker from a thread beside its HTTP threads, with the same models and batcher.
    # 0 turns it off.
    grpc_port: int = 8001
    grpc_enabled: int = 1
    # Proxies in front whose X-Forwarded-For the service believes. 0 without a proxy:
    # anyone could send the header and pose as any address. Compose sets 1 (its nginx).
    trusted_proxy_hops: int = 0
    # Who may read the operator view's data (GET /operations/models) without an API key: an
    # address, a CIDR range or `all`, as compose's proxy reads the same variable for /metrics,
    # so the view is open exactly where /metrics is. `all`, as /metrics: the view shows
    # nothing that /metrics and /models do not already show every address by default.
    metrics_allow: str = "all"
    # The prediction store (service/store/): empty is off; a folder holds an embedded SQLite
    # database (a local disk, never a network file system: SQLite's locks do not hold there);
    # a postgresql:// URL serves replicas on many nodes.
    prediction_store: str = ""
    # The share of images whose bytes are kept (once per sha256), chosen by the image's hash.
    prediction_store_sample: float = 0.1
    # What may wait for the writer in each process; a record beyond either is dropped and
    # counted. Bytes bound it because kept images may be as large as MAX_REQUEST_BYTES.
    prediction_store_queue_records: int = 10_000
    prediction_store_queue_bytes: int = 64 * 1024 * 1024
    prediction_store_retention_days: float = 30.0
    # Beyond it, the oldest predictions go first; 0: no quota (the retention alone bounds it).
    prediction_store_quota_bytes: int = 5 * 1024 * 1024 * 1024
    # 1: keep each prediction's client address (the one trusted_proxy_hops gives); 0: never.
    prediction_store_client_addresses: int = 0
    # Items in one POST /feedback.
    feedback_max_items: int = 100
    # Answers per version each worker compares with the version's held-out test images, for
    # the drift gauges (service/observability/drift.py); 0 turns drift off.
    drift_window: int = 1000
    # `release promote --require-evidence` wants at least this much feedback on stable and
    # on the canary before it weighs them (service/models/release.py).
    release_min_feedback: int = 200
    # Admission (service/runtime/admission.py): 1 refuses what the service cannot take in time
    # (503 overloaded) instead of letting it wait; 0 lets everything wait, as before.
    admission: int = 1
    # Requests a worker lets wait for one of its THREADS (HTTP) or of its gRPC pool before
    # it refuses the next ones at once: with 16 threads each answering in about 40 ms at
    # capacity, 16 waiting add about 40 ms (docs/performance.md, "Overload").
    max_waiting_requests: int = 16
    # Requests for one model version a worker holds at once (decoding, in the batcher, in
    # a model call); a canary has its own count. THREADS of HTTP and as many of gRPC.
    max_requests_per_version: int = 32
    # The deadline of a request that names none (X-Request-Timeout, the V2 "timeout"
    # parameter, a gRPC deadline): 100 times the p99 at capacity, so it never refuses
    # normal traffic, and short of the proxy's 60 s, so work nobody waits for is dropped.
    default_deadline_ms: int = 10_000
    # The Retry-After of a 503 overloaded (and the gRPC retry pushback), in seconds.
    retry_after_seconds: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read each field from the upper-case variable of the same name."""
        environ = os.environ if environ is None else environ
        values = {}
        for setting in fields(cls):
            raw = environ.get(setting.name.upper())
            if raw is None or raw.strip() == "":
                continue
            values[setting.name] = _parse(setting.name.upper(), raw.strip(), setting.type)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values that would make the service misbehave rather than start."""
        at_least_one = ("port", "grpc_port", "workers", "threads", "max_request_bytes",
                        "max_image_pixels", "max_images_per_request", "default_top_k",
                        "batch_max_size", "max_waiting_requests", "max_requests_per_version",
                        "default_deadline_ms", "retry_after_seconds")
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()} must be at least 1, not {getattr(self, name)}")
        for name in ("batch_max_wait_ms", "model_threads", "trusted_proxy_hops",
                     "memory_limit_mb", "drift_window"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()} must not be negative")
        for name in ("port", "grpc_port"):
            if getattr(self, name) > 65535:
                raise SettingsError(f"{name.upper()} must be a port number up to 65535")
        if self.grpc_enabled and self.grpc_port == self.port:
            raise SettingsError(f"GRPC_PORT must differ from PORT ({self.port}), or set "
                                "GRPC_ENABLED=0 to turn gRPC off")
        self._check_store()
        try:
            allowed_network(self.metrics_allow)
        except ValueError:
            raise SettingsError("METRICS_ALLOW must be an address, a CIDR range or all, not "
                                f"{self.metrics_allow!r}") from None
        if self.default_deadline_ms > MAX_DEADLINE_MS:
            raise SettingsError(f"DEFAULT_DEADLINE_MS must be at most {MAX_DEADLINE_MS}")
        for name in ("pin_workers", "realtime_main_thread", "grpc_enabled", "admission"):
            if getattr(self, name) not in (0, 1):
                raise SettingsError(f"{name.upper()} must be 1 (on) or 0 (off), "
                                    f"not {getattr(self, name)}")
        if self.model_poll_seconds <= 0:
            raise SettingsError("MODEL_POLL_SECONDS must be above 0")
        if self.api_key and self.api_key_file:
            # Both would leave the environment's key valid after a rotation in the file.
            raise SettingsError("Set API_KEY or API_KEY_FILE, not both: a key in the "
                                "environment could not be rotated with the file's keys")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise SettingsError(f"LOG_LEVEL must be debug, info, warning, error or critical, "
                                f"not {self.log_level!r}")

    def _check_store(self) -> None:
        """Refuse prediction store settings that cannot work."""
        if not 0 <= self.prediction_store_sample <= 1:
            raise SettingsError("PREDICTION_STORE_SAMPLE must be a share from 0 to 1, not "
                                f"{self.prediction_store_sample}")
        for name in ("prediction_store_queue_records", "prediction_store_queue_bytes",
                     "feedback_max_items", "release_min_feedback"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()} must be at least 1")
        if self.prediction_store_retention_days <= 0:
            raise SettingsError("PREDICTION_STORE_RETENTION_DAYS must be above 0")
        if self.prediction_store_quota_bytes < 0:
            raise SettingsError("PREDICTION_STORE_QUOTA_BYTES must not be negative (0: none)")
        if self.prediction_store_client_addresses not in (0, 1):
            raise SettingsError("PREDICTION_STORE_CLIENT_ADDRESSES must be 1 (keep) or 0")
        if "://" in self.prediction_store and not self.prediction_store.startswith(
                ("postgresql://", "postgres://")):
            raise SettingsError("PREDICTION_STORE is a folder (SQLite) or a postgresql:// URL")

    @property
    def requires_api_key(self) -> bool:
        """True when /predict and /v2 inference need a key (API_KEY or API_KEY_FILE is set)."""
        return bool(self.api_key or self.api_key_file)


def allowed_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network an nginx `allow` value (an address, a CIDR range) names; None for `all`.
    ValueError for anything else."""
    if value.strip().lower() == "all":
        return None
    return ipaddress.ip_network(value.strip(), strict=False)


def _parse(name, raw, kind):
    """Convert one variable to its field's type, naming the variable when it fails."""
    kind = {"int": int, "float": float, "str": str}.get(kind, kind)
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {kind.__name__}, not {raw!r}") from None
