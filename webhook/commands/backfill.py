"""`workload-tagger backfill`: write the webhook's annotations onto Pods that already run.

Same resolver, same keys, same rule as the webhook: only keys the Pod lacks are added, and
a value already there is kept — unless ``--overwrite-stale`` asks to rewrite our keys whose
value disagrees with what resolution gives now (the webhook itself never overwrites).
Unresolved Pods are never touched.

The patch is a JSON merge patch (RFC 7386, ``application/merge-patch+json``) on
``metadata.annotations`` only: a merge patch of a map touches exactly the keys it names, and
its meaning does not depend on a schema, unlike strategic merge (identical for annotations,
which have no patch strategy). The Content-Type is set explicitly, because the client would
otherwise choose one from the body's shape. The patch also carries the listed
``metadata.resourceVersion`` as a precondition: if the Pod changed since it was listed the
server answers 409, and we re-read it and decide again, so a value a user set meanwhile is
never overwritten.

Exit codes: 0 every needed patch applied (or, without ``--apply``, the plan was printed);
1 some Pods failed (listed, the run went on); 2 usage, cluster unreachable, or permission
denied (403 stops the run with one line naming the missing permission).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from kubernetes.client.exceptions import ApiException

from webhook.app import build_resolver, plugin_set_for_cli
from webhook.cluster.client import REQUEST_TIMEOUT, TRANSPORT_ERRORS, api_status, json_body, one_line
from webhook.cluster.pods import LiveLister, backoff
from webhook.cluster.ratelimit import TokenBucket
from webhook.commands.assessment import (
    STALE,
    UNRESOLVED,
    Assessment,
    add_scope_arguments,
    assess,
    live_scope,
    owner_index,
    stderr_notice,
)
from webhook.commands.inputs import PodInput, cluster_pods
from webhook.commands.progress import Progress
from webhook.config import Config
from webhook.errors import UserError
from webhook.plugins import PluginSet
from webhook.resolution.resolver import Resolver

MERGE_PATCH = "application/merge-patch+json"
MAX_KEPT_FAILURES = 100  # failures are all counted; only the first ones are kept to be named

# Per-Pod outcomes, as counted in the summary.
PATCHED, WOULD_PATCH, UP_TO_DATE, STALE_KEPT, SKIPPED_UNRESOLVED, GONE, FAILED = (
    "patched",
    "would-patch",
    "up-to-date",
    "stale-kept",
    "unresolved",
    "gone",
    "failed",
)


def plan_change(assessment: Assessment, overwrite_stale: bool) -> dict[str, str | None]:
    """The annotations to send (None deletes a key); empty when the Pod needs nothing."""
    if assessment.resolution is None:
        return {}
    change: dict[str, str | None] = dict(assessment.missing)
    if overwrite_stale:
        change.update(assessment.stale)
    return change


def patch_body(change: Mapping[str, str | None], resource_version: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"annotations": dict(change)}
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {"metadata": meta}


def describe_change(assessment: Assessment, change: Mapping[str, str | None]) -> str:
    parts = []
    for key, value in change.items():
        if key in assessment.current:
            parts.append(
                f"~{key}: {assessment.current[key]!r} -> {value!r}" if value is not None else f"-{key}"
            )
        else:
            parts.append(f"+{key}={value}")
    return " ".join(parts)


class Forbidden(Exception):
    """403: no point trying the next Pod; the run stops with one line naming the permission."""


@dataclass
class Patcher:
    """Applies one Pod's change with bounded retries; never raises for a per-Pod failure except 403."""

    api: Any  # kubernetes.client.CoreV1Api
    resolver: Resolver
    plugins: PluginSet
    prefix: str
    overwrite_stale: bool
    limiter: TokenBucket | None = None
    notice: Callable[[str], None] = lambda _m: None
    sleep: Callable[[float], None] = time.sleep
    attempts: int = 5
    conflicts: int = 3
    request_timeout: float = REQUEST_TIMEOUT
    otel: bool = True  # also add the OpenTelemetry resource annotations (as the webhook does)

    def _acquire(self) -> None:
        if self.limiter is not None:
            self.limiter.acquire()

    def apply(self, assessment: Assessment, obj: Mapping[str, Any]) -> tuple[str, str]:
        """(outcome, detail). Re-reads and re-plans the Pod after a 409."""
        conflicts = 0
        attempt = 0
        reply_lost = False  # a patch went out and its answer did not come back: it may have been applied
        change = plan_change(assessment, self.overwrite_stale)
        rv = _resource_version(obj)
        while True:
            attempt += 1
            self._acquire()
            try:
                self.api.patch_namespaced_pod(
                    assessment.name,
                    assessment.namespace,
                    patch_body(change, rv),
                    _content_type=MERGE_PATCH,
                    _request_timeout=self.request_timeout,
                    _preload_content=False,
                ).release_conn()
                return PATCHED, describe_change(assessment, change)
            except ApiException as exc:
                status = api_status(exc)
                if status.code == 404:
                    return GONE, "Pod no longer exists"
                if status.code in (401, 403):
                    raise Forbidden(
                        denied(status.code, "patch", assessment.namespace, status.message)
                    ) from None
                if status.code == 409 and conflicts < self.conflicts:
                    conflicts += 1
                    try:
                        fresh = self._reread(assessment)
                    except ApiException as reread_exc:
                        return FAILED, f"conflict, then re-reading failed: HTTP {api_status(reread_exc).code}"
                    except TRANSPORT_ERRORS as reread_exc:
                        return FAILED, f"conflict, then re-reading failed: {type(reread_exc).__name__}"
                    if fresh is None:
                        return GONE, "Pod no longer exists"
                    assessment, obj = fresh
                    change = plan_change(assessment, self.overwrite_stale)
                    if not change and reply_lost:
                        return PATCHED, "applied (the first answer was lost on the way back)"
                    if not change:
                        return UP_TO_DATE, "changed meanwhile; nothing left to do"
                    rv = _resource_version(obj)
                    continue
                if (status.code == 429 or status.code >= 500) and attempt < self.attempts:
                    wait = status.retry_after if status.retry_after is not None else backoff(attempt)
                    self.notice(f"{assessment.label}: HTTP {status.code}, retrying in {wait:.1f}s")
                    self.sleep(wait)
                    continue
                return FAILED, f"HTTP {status.code}: {status.message}"
            except TRANSPORT_ERRORS as exc:
                # Sending the patch again is safe: if the first one was applied, the server answers
                # 409 (the resourceVersion moved on) and the re-read shows nothing left to do.
                reply_lost = True
                if attempt < self.attempts:
                    self.notice(f"{assessment.label}: connection failed ({type(exc).__name__}), retrying")
                    self.sleep(backoff(attempt))
                    continue
                return FAILED, f"connection failed: {one_line(str(exc))}"

    def _reread(self, assessment: Assessment) -> tuple[Assessment, dict[str, Any]] | None:
        for attempt in range(1, self.attempts + 1):
            self._acquire()
            try:
                resp = self.api.read_namespaced_pod(
                    assessment.name,
                    assessment.namespace,
                    _request_timeout=self.request_timeout,
                    _preload_content=False,
                )
                obj = json_body(resp)
            except ApiException as exc:
                status = api_status(exc)
                if status.code == 404:
                    return None
                if status.code in (401, 403):
                    raise Forbidden(
                        denied(status.code, "get", assessment.namespace, status.message)
                    ) from None
                if attempt < self.attempts:
                    self.sleep(status.retry_after if status.retry_after is not None else backoff(attempt))
                    continue
                raise
            except TRANSPORT_ERRORS:
                if attempt < self.attempts:
                    self.sleep(backoff(attempt))
                    continue
                raise
            pod = PodInput("cluster", obj)
            return assess(pod, self.resolver, self.plugins, self.prefix, otel=self.otel), obj
        return None


def denied(code: int, verb: str, namespace: str, message: str) -> str:
    """The one line for a 401/403, naming the permission the overlay grants."""
    if code == 401:
        return f"unauthorized: the API server rejected our credentials ({message})"
    return (
        f"forbidden: cannot {verb} pods in namespace {namespace} ({message}); "
        f"grant pods {verb} (see manifests/overlays/backfill)"
    )


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return rv if isinstance(rv, str) and rv else None


@dataclass
class BackfillResult:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return 2
        return 1 if self.counts[FAILED] else 0

    def summary(self, apply: bool) -> str:
        c = self.counts
        seen = sum(c.values())
        changed = c[PATCHED] if apply else c[WOULD_PATCH]
        verb = "patched" if apply else "would patch"
        text = (
            f"{seen} Pods: {changed} {verb}, {c[UP_TO_DATE]} already up to date, "
            f"{c[STALE_KEPT]} stale left alone (--overwrite-stale rewrites them), "
            f"{c[SKIPPED_UNRESOLVED]} unresolved (never touched), {c[GONE]} gone, {c[FAILED]} failed"
        )
        if not apply and changed:
            text += "; dry run: nothing was written (add --apply)"
        return text


def backfill(
    pods: Iterable[PodInput],
    resolver: Resolver,
    plugins: PluginSet,
    prefix: str,
    *,
    patcher: Patcher | None,
    overwrite_stale: bool,
    progress: Progress,
    remaining: Callable[[], int | None] = lambda: None,
    otel: bool = True,
) -> BackfillResult:
    """Walk the Pods once; ``patcher`` None is a dry run (nothing is written)."""
    result = BackfillResult()
    seen = 0
    try:
        for pod in pods:
            seen += 1
            assessment = assess(pod, resolver, plugins, prefix, otel=otel)
            change = plan_change(assessment, overwrite_stale)
            if assessment.status == UNRESOLVED:
                result.counts[SKIPPED_UNRESOLVED] += 1
            elif not change:
                result.counts[STALE_KEPT if assessment.status == STALE else UP_TO_DATE] += 1
            elif patcher is None:
                result.counts[WOULD_PATCH] += 1
                progress.line(f"would patch {assessment.label}: {describe_change(assessment, change)}")
            else:
                outcome, detail = patcher.apply(assessment, pod.obj)
                result.counts[outcome] += 1
                if outcome == FAILED and len(result.failures) < MAX_KEPT_FAILURES:
                    result.failures.append((assessment.label, detail))
                progress.line(f"{outcome} {assessment.label}: {detail}")
            progress.update(result.counts, seen, remaining())
    except Forbidden as exc:
        result.stopped = str(exc)
    finally:
        progress.finish()
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scope_arguments(parser)
    parser.add_argument("--apply", action="store_true", help="write the patches (default: only show them)")
    parser.add_argument(
        "--overwrite-stale",
        action="store_true",
        help="also rewrite our annotations that disagree with resolution now (the webhook never does)",
    )
    parser.add_argument("--qps", type=float, default=20.0, help="API requests per second (default 20)")
    parser.add_argument(
        "--burst", type=int, default=40, help="requests allowed at once above --qps (default 40)"
    )


def run(
    args: argparse.Namespace,
    config: Config,
    plugins: PluginSet | None = None,
    api: Any = None,
    out: TextIO | None = None,
) -> int:
    """Exit 0 all applied (or dry run printed), 1 some Pods failed, 2 usage/permission/unreachable."""
    out = out or sys.stdout
    scope = live_scope(args)
    if args.qps <= 0 or args.burst < 1:
        raise UserError("--qps must be > 0 and --burst at least 1", 2)
    if api is None:
        from webhook.cluster.client import client_configuration, core_api

        api = core_api(client_configuration(config))
    resolver = build_resolver(config, owner_index(config, api))
    if plugins is None:
        plugins = plugin_set_for_cli(config)
    limiter = TokenBucket(args.qps, args.burst)
    lister = LiveLister(api, scope, notice=stderr_notice, limiter=limiter)
    patcher = (
        Patcher(api, resolver, plugins, config.prefix, args.overwrite_stale, limiter, notice=stderr_notice,
                otel=config.otel_annotations)
        if args.apply
        else None
    )
    result = backfill(
        cluster_pods(lister),
        resolver,
        plugins,
        config.prefix,
        patcher=patcher,
        overwrite_stale=args.overwrite_stale,
        progress=Progress(out),
        remaining=lambda: lister.remaining,
        otel=config.otel_annotations,
    )
    for label, detail in result.failures[:20]:
        print(f"failed: {label}: {detail}", file=sys.stderr)
    if result.counts[FAILED] > 20:
        print(f"failed: ... and {result.counts[FAILED] - 20} more", file=sys.stderr)
    out.write(result.summary(args.apply) + "\n")
    out.flush()
    if result.stopped:
        raise UserError(result.stopped, 2)
    return result.exit_code
