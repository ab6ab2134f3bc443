"""Reading our metrics back the way a scraper would: from the registry and its exposition text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from webhook import metrics


def val(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def series_labels(name: str) -> list[dict[str, str]]:
    """Label sets of ``name`` as exposed, parsed from the real exposition text."""
    body, _ = metrics.exposition()
    return [
        s.labels
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == name
    ]
