"""Pods one page at a time, from the live cluster or a file, for audit and backfill.

A live list asks for ``limit`` Pods per request and follows ``continue``, so a cluster of
100,000 Pods is never held at once: only the current page is alive. Pages are read as raw
JSON (``_preload_content=False``) and parsed with orjson, so a Pod stays a plain dict just
like in a file or an AdmissionReview, and no generated model objects are built.

An expired continue token (410) continues with the token the server offers in its Status,
else restarts the list; either way Pods whose key we already passed are skipped (the API
lists in key order), so no Pod is counted or patched twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from kubernetes.client.exceptions import ApiException

from webhook.cluster.client import REQUEST_TIMEOUT, TRANSPORT_ERRORS, api_status, json_body, one_line
from webhook.cluster.ratelimit import Limiter, NoLimit
from webhook.errors import UserError

Notice = Callable[[str], None]
"""Where the lister says something the user should know (a restart, a retry); stderr in the CLI."""


@dataclass(frozen=True, slots=True)
class ListScope:
    """Which Pods: one namespace, or all (``namespace=None``); optional label selector."""

    namespace: str | None
    page_size: int = 500
    label_selector: str | None = None

    def describe(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        return where + (f" matching {self.label_selector}" if self.label_selector else "")


def pod_key(obj: dict[str, Any]) -> str:
    """``namespace/name``: the order the API server lists Pods in (etcd key order)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ""
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    token: str | None
    remaining: int | None
    resumed: bool  # a 410 happened: the items may repeat Pods already yielded


@dataclass
class LiveLister:
    """Iterates Pods page by page; ``remaining`` is the server's estimate of Pods still to come."""

    api: Any  # kubernetes.client.CoreV1Api (untyped library)
    scope: ListScope
    notice: Notice = lambda _msg: None
    limiter: Limiter = field(default_factory=NoLimit)
    attempts: int = 5
    sleep: Callable[[float], None] = time.sleep
    request_timeout: float = REQUEST_TIMEOUT
    pages: int = 0
    restarts: int = 0
    seen: int = 0
    remaining: int | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        token: str | None = None
        last_key = ""
        skip_through = ""  # set after a 410: Pods up to this key were already yielded
        while True:
            page = self._page(token)
            if page.resumed:
                self.restarts += 1
                skip_through = last_key
            token, self.remaining = page.token, page.remaining
            self.pages += 1
            for obj in page.items:
                if not isinstance(obj, dict):
                    continue
                key = pod_key(obj)
                if skip_through and key <= skip_through:
                    continue
                last_key = key
                self.seen += 1
                yield obj
            if not token:
                return

    def _page(self, token: str | None) -> Page:
        """One list request with bounded retries, following a 410 by continuing or restarting."""
        resumed = False
        for attempt in range(1, self.attempts + 1):
            self.limiter.acquire()
            try:
                resp = self._request(token)
                body = json_body(resp)
            except ApiException as exc:
                status = api_status(exc)
                if status.code == 410 and token:
                    if status.continue_token:
                        self.notice(
                            "the list's continue token expired; continuing from the server's newer snapshot"
                        )
                        token, resumed = status.continue_token, True
                        continue
                    self.notice(
                        "the list's continue token expired; restarting the list (skipping Pods seen already)"
                    )
                    token, resumed = None, True
                    continue
                if status.code in (401, 403):
                    verb = "list pods in " + self.scope.describe()
                    raise UserError(
                        f"forbidden: cannot {verb} ({status.message}); grant pods list", 2
                    ) from None
                if (status.code == 429 or status.code >= 500) and attempt < self.attempts:
                    wait = status.retry_after if status.retry_after is not None else backoff(attempt)
                    self.notice(f"listing Pods: HTTP {status.code}, retrying in {wait:.1f}s")
                    self.sleep(wait)
                    continue
                raise UserError(f"cannot list Pods: HTTP {status.code}: {status.message}") from None
            except TRANSPORT_ERRORS as exc:
                if attempt < self.attempts:
                    self.notice(f"listing Pods: connection failed ({type(exc).__name__}), retrying")
                    self.sleep(backoff(attempt))
                    continue
                raise UserError(f"cannot list Pods: connection failed: {one_line(str(exc))}") from None
            except orjson.JSONDecodeError:
                raise UserError("cannot list Pods: the API server sent a body that is not JSON") from None
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise UserError("cannot list Pods: the API server sent something that is not a PodList")
            raw_meta = body.get("metadata")
            meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            remaining = meta.get("remainingItemCount")
            return Page(
                body["items"],
                meta.get("continue") or None,
                remaining if isinstance(remaining, int) else None,
                resumed,
            )
        raise UserError("cannot list Pods: too many retries")  # unreachable: the loop raises or returns

    def _request(self, token: str | None) -> Any:
        kwargs: dict[str, Any] = {
            "limit": self.scope.page_size,
            "_preload_content": False,
            "_request_timeout": self.request_timeout,
        }
        if token:
            kwargs["_continue"] = token
        if self.scope.label_selector:
            kwargs["label_selector"] = self.scope.label_selector
        if self.scope.namespace:
            return self.api.list_namespaced_pod(self.scope.namespace, **kwargs)
        return self.api.list_pod_for_all_namespaces(**kwargs)


def backoff(attempt: int) -> float:
    """0.5 s, 1 s, 2 s, ... capped at 10 s: enough for a restarting API server, short for a human."""
    return float(min(10.0, 0.5 * 2 ** (attempt - 1)))
