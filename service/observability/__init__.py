"""Observability: Prometheus metrics, JSON logs and the per-request log line."""
