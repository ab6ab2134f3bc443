"""Prometheus metrics: what the webhook counts, and how it is read.

One concern per module: :mod:`.definitions` (every metric and its label vocabulary), :mod:`.tally`
(bulk counting on the hot path; the only code touching prometheus_client internals),
:mod:`.observers` (what the plugin engine, the sources and the certificate reloader report to),
:mod:`.exposition` (``/metrics``). This package's namespace is the API the rest of the code uses.
"""

from webhook.metrics.definitions import (
    ADMISSION_BUCKETS,
    OPERATIONS,
    REGISTRY,
    WATCH_RESTART_REASONS,
)
from webhook.metrics.exposition import exposition, metrics_handler, start_metrics_server, worker_exited
from webhook.metrics.observers import (
    OwnerMetrics,
    PluginHostMetrics,
    PluginMetrics,
    SourceMetrics,
    count_lookups_stop,
    set_cert_expiry,
)
from webhook.metrics.tally import (
    _ADMISSION_REQUESTS,
    FLUSH_SECONDS,
    REVIEWS,
    ReviewTally,
    flush_periodically,
    flush_tallies,
    observe_admission,
    observe_platform,
    observe_refused,
    observe_resolution,
    observe_review,
)

__all__ = [
    "ADMISSION_BUCKETS", "FLUSH_SECONDS", "OPERATIONS", "REGISTRY", "REVIEWS",
    "WATCH_RESTART_REASONS", "_ADMISSION_REQUESTS", "OwnerMetrics", "PluginHostMetrics", "PluginMetrics", "ReviewTally", "SourceMetrics",
    "count_lookups_stop", "exposition", "flush_periodically", "flush_tallies", "metrics_handler", "observe_admission",
    "observe_platform", "observe_refused", "observe_resolution", "observe_review", "set_cert_expiry", "start_metrics_server",
    "worker_exited",
]
