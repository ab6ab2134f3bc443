"""The Kubernetes API client the CLI doors (audit, backfill) talk through, and how its errors read.

Retries are ours, not urllib3's: the client is built with ``retries=False`` so that every
dropped connection, 429 and 5xx reaches the caller, which decides (per verb) whether a
retry is safe and reports what happened instead of hanging inside the HTTP pool.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any

import orjson
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from webhook.config import Config
from webhook.errors import UserError

REQUEST_TIMEOUT = 30.0
"""Seconds for one API request (connect + read); a list page or a patch never waits longer."""

TRANSPORT_ERRORS: tuple[type[Exception], ...] = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)
"""What a dropped or refused connection surfaces as when urllib3 does not retry."""


def client_configuration(config: Config) -> k8s.Configuration:
    """The configured kubeconfig, else in-cluster, else the default kubeconfig; else one error line."""
    conf = k8s.Configuration()
    try:
        if config.kubeconfig:
            k8s_config.load_kube_config(config_file=config.kubeconfig, client_configuration=conf)  # type: ignore[no-untyped-call]
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
            except ConfigException:
                k8s_config.load_kube_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = f"kubeconfig {config.kubeconfig}" if config.kubeconfig else "no in-cluster config and no kubeconfig"
        raise UserError(f"cannot reach a cluster: {where}: {one_line(str(exc)) or type(exc).__name__}", 2) from None
    conf.retries = False
    return conf


def json_body(resp: Any) -> Any:
    """Parse a raw (``_preload_content=False``) response and hand its connection back to the pool."""
    try:
        return orjson.loads(resp.data)
    finally:
        resp.release_conn()


def api_client(config: Config) -> k8s.ApiClient:
    """An API client for the configured cluster; every command that talks to one starts here."""
    return k8s.ApiClient(client_configuration(config))


def core_api(conf: k8s.Configuration) -> k8s.CoreV1Api:
    conf.retries = False
    return k8s.CoreV1Api(k8s.ApiClient(conf))


def one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


@dataclass(frozen=True, slots=True)
class ApiStatus:
    """The parts of a failed API call we act on: HTTP status, the Status message, Retry-After, continue."""

    code: int
    message: str
    retry_after: float | None = None
    continue_token: str | None = None


def api_status(exc: ApiException) -> ApiStatus:
    """Read the Kubernetes ``Status`` body (when there is one) of a failed call."""
    body: Any = None
    raw = exc.body
    if raw:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
    message = ""
    token = None
    if isinstance(body, dict):
        message = str(body.get("message") or "")
        meta = body.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("continue"), str) and meta["continue"]:
            token = meta["continue"]
    if not message:
        message = str(exc.reason or f"HTTP {exc.status}")
    headers = exc.headers or {}
    return ApiStatus(
        int(exc.status or 0), one_line(message), retry_after_seconds(headers.get("Retry-After")), token
    )


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
