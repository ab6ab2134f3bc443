"""Every metric, defined once. Label values are bounded sets (operations, outcomes, plugin names)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
NS = "workload_tagger"

ADMISSION_REQUESTS = Counter(
    "admission_requests",
    "Admission reviews answered, by operation and outcome (mutated, unchanged, skipped, error, invalid).",
    ["operation", "outcome"],
    namespace=NS,
    registry=REGISTRY,
)
ADMISSION_LATENCY = Histogram(
    "admission_duration_seconds",
    "Time to answer one admission review, from body read to response encoded.",
    namespace=NS,
    registry=REGISTRY,
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
