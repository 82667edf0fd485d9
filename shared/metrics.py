"""Prometheus metrics shared by every process."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("studio_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_SECONDS = Histogram("studio_http_request_seconds", "HTTP request latency", ["route"])
JOB_SECONDS = Histogram(
    "studio_job_seconds",
    "Job attempt duration",
    ["kind"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
JOBS_FINISHED = Counter("studio_jobs_finished_total", "Finished job attempts", ["kind", "status"])
QUEUE_DEPTH = Gauge("studio_queue_depth", "Messages waiting in a Celery queue", ["queue"])
OUTBOX_PENDING = Gauge("studio_outbox_pending", "Outbox rows not yet published")
