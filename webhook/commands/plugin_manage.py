"""``workload-tagger plugin create|list|delete``: deepflow-ctl's ``plugin`` verbs, on the plugin ConfigMap.

A plugin is checked locally, in the same sandbox the webhook uses, before it is written, so a
broken plugin never reaches the replicas. Writes carry the resourceVersion that was read, so two
people editing different plugins at once cannot overwrite each other: the loser gets 409 and
re-reads (bounded). Every failure becomes one line naming what was tried where.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from webhook.app import host_settings
from webhook.config import Config
from webhook.errors import UserError
from webhook.plugins.hosted import validate_hosted
from webhook.plugins.loading import read_plugin_file
from webhook.plugins.sources.snapshot import SUFFIX, plugin_key, plugins_from_data

Validator = Callable[[str, str], None]
"""``validate(name, source)`` returns if the plugin loads and runs, raises with the reason if not."""

CONFLICT, FORBIDDEN, NOT_FOUND, UNAUTHORIZED = 409, 403, 404, 401
ATTEMPTS = 5
REQUEST_TIMEOUT_S = 15.0
MAX_CONFIGMAP_BYTES = 1024 * 1024  # the API server refuses bigger ConfigMaps
MERGE_PATCH = "application/merge-patch+json"
NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class PluginInfo:
    name: str
    size: int
    sha256: str
    loads: bool
    error: str


@dataclass(frozen=True, slots=True)
class Target:
    """Where the plugins live: the API plus the ConfigMap's coordinates."""

    api: Any  # kubernetes.client.CoreV1Api
    namespace: str
    name: str

    @property
    def where(self) -> str:
        return f"configmap {self.namespace}/{self.name}"


# --- arguments ----------------------------------------------------------------------------


def add_create_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", default="lua", help="plugin type; only lua is supported (deepflow-ctl compatible)")
    p.add_argument("--image", required=True, metavar="FILE", help="the plugin's Lua source file")
    p.add_argument("--name", required=True, help="plugin name (the ConfigMap key is NAME.lua)")


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")


def add_delete_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="plugin to delete")


# --- commands -----------------------------------------------------------------------------


def run_create(args: argparse.Namespace, config: Config) -> int:
    if str(args.type).lower() != "lua":
        raise UserError(f"unsupported plugin type {args.type!r}: only lua is supported")
    name = plugin_name(args.name)
    source = read_plugin_file(args.image)
    outcome = create_plugin(_target(config), name, source, engine_validator(config))
    print(f"plugin {name} {outcome} in {_where(config)}")
    return 0


def run_list(args: argparse.Namespace, config: Config) -> int:
    plugins = list_plugins(_target(config), engine_validator(config))
    if getattr(args, "format", "table") == "json":
        print(json.dumps([asdict(p) for p in plugins], indent=2))
    else:
        print(format_table(plugins))
    return 0


def run_delete(args: argparse.Namespace, config: Config) -> int:
    name = plugin_name(args.name)
    delete_plugin(_target(config), name)
    print(f"plugin {name} deleted from {_where(config)}")
    return 0


# --- core (testable without argparse) -------------------------------------------------


def engine_validator(config: Config) -> Validator:
    """The webhook's own check: compile in the sandbox, require the function, run once on a sample Pod,
    in a plugin host under the webhook's wall-clock limits (a plugin that hangs is rejected, not waited for)."""

    settings = host_settings(config)

    def validate(name: str, source: str) -> None:
        validate_hosted(name, source, settings)

    return validate


def plugin_name(raw: str) -> str:
    name = raw[: -len(SUFFIX)] if raw.endswith(SUFFIX) else raw
    if not NAME_RE.match(name) or len(plugin_key(name)) > 253:
        raise UserError(f"invalid plugin name {raw!r}: use letters, digits, '-', '_' and '.' (at most 249)")
    return name


def create_plugin(target: Target, name: str, source: str, validate: Validator, attempts: int = ATTEMPTS) -> str:
    """Validate, then create the ConfigMap or set its key; returns created/added/updated/unchanged."""
    try:
        validate(name, source)
    except Exception as exc:
        raise UserError(f"plugin {name} rejected: {_reason(exc)}") from None
    key = plugin_key(name)
    for _ in range(attempts):
        current = _read(target, "get")
        if current is None:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": target.name,
                    "namespace": target.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "workload-tagger"},
                },
                "data": {key: source},
            }
            create = partial(
                target.api.create_namespaced_config_map,
                target.namespace,
                body,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
            if _write(target, "create", create):
                return "created"
            continue
        data = dict(current.data or {})
        if data.get(key) == source:
            return "unchanged"
        data[key] = source
        size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
        if size > MAX_CONFIGMAP_BYTES:
            raise UserError(f"{target.where} would hold {size} bytes, over the 1 MiB ConfigMap limit")
        verb = "updated" if key in (current.data or {}) else "added"
        if _patch(target, current, {key: source}):
            return verb
    raise UserError(f"{target.where} kept changing under us (409 Conflict {attempts} times); try again")


def delete_plugin(target: Target, name: str, attempts: int = ATTEMPTS) -> None:
    key = plugin_key(name)
    for _ in range(attempts):
        current = _read(target, "get")
        if current is None:
            raise UserError(f"not found: {target.where} does not exist, so there is no plugin {name}")
        if key not in (current.data or {}):
            raise UserError(f"not found: plugin {name} is not in {target.where}")
        if _patch(target, current, {key: None}):
            return
    raise UserError(f"{target.where} kept changing under us (409 Conflict {attempts} times); try again")


def list_plugins(target: Target, validate: Validator) -> list[PluginInfo]:
    current = _read(target, "get")
    plugins = plugins_from_data(current.data if current is not None else None, target.where)
    infos = []
    for name, source in sorted(plugins.items()):
        try:
            validate(name, source)
            loads, error = True, ""
        except Exception as exc:
            loads, error = False, _reason(exc)
        raw = source.encode()
        infos.append(PluginInfo(name, len(raw), hashlib.sha256(raw).hexdigest(), loads, error))
    return infos


def format_table(plugins: list[PluginInfo]) -> str:
    rows = [("NAME", "SIZE", "SHA256", "LOADS", "ERROR")]
    rows += [(p.name, str(p.size), p.sha256, "yes" if p.loads else "no", p.error) for p in plugins]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip() for row in rows
    )


# --- API plumbing -------------------------------------------------------------------------


def _where(config: Config) -> str:
    return f"configmap {config.resolved_configmap_namespace()}/{config.configmap_name}"


def _target(config: Config) -> Target:
    from kubernetes import client

    from webhook.cluster.client import api_client as kube_api_client

    api = client.CoreV1Api(kube_api_client(config))
    return Target(api, config.resolved_configmap_namespace(), config.configmap_name)


def _read(target: Target, verb: str) -> Any:
    """The ConfigMap, or ``None`` when it does not exist."""
    try:
        return target.api.read_namespaced_config_map(target.name, target.namespace, _request_timeout=REQUEST_TIMEOUT_S)
    except Exception as exc:
        if getattr(exc, "status", None) == NOT_FOUND:
            return None
        raise _api_error(exc, verb, target) from None


def _patch(target: Target, current: Any, data: dict[str, str | None]) -> bool:
    """Merge-patch ``data`` guarded by the resourceVersion we read; ``False`` on 409 (re-read and retry)."""
    body: dict[str, Any] = {"data": data}
    rv = current.metadata.resource_version if current.metadata is not None else None
    if rv:
        body["metadata"] = {"resourceVersion": rv}
    patch = partial(
        target.api.patch_namespaced_config_map,
        target.name,
        target.namespace,
        body,
        _content_type=MERGE_PATCH,
        _request_timeout=REQUEST_TIMEOUT_S,
    )
    return _write(target, "patch", patch)


def _write(target: Target, verb: str, call: Callable[[], Any]) -> bool:
    try:
        call()
    except Exception as exc:
        if getattr(exc, "status", None) == CONFLICT:
            return False
        if getattr(exc, "status", None) == NOT_FOUND and verb == "patch":
            return False  # deleted between our read and write: start over
        raise _api_error(exc, verb, target) from None
    return True


def _api_error(exc: Exception, verb: str, target: Target) -> UserError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        message = _status_message(exc)
        if exc.status == FORBIDDEN:
            return UserError(
                f"forbidden: cannot {verb} configmaps in namespace {target.namespace} "
                f"({target.where}){': ' + message if message else ''}"
            )
        if exc.status == UNAUTHORIZED:
            return UserError(f"unauthorized: the cluster rejected our credentials while trying to {verb} {target.where}")
        return UserError(f"kubernetes API answered {exc.status} {exc.reason} to {verb} {target.where}: {message}")
    if isinstance(exc, UserError):
        return exc
    host = getattr(getattr(getattr(target.api, "api_client", None), "configuration", None), "host", "?")
    return UserError(f"cannot reach a cluster at {host}: {_root_cause(exc)} (trying to {verb} {target.where})")


def _root_cause(exc: BaseException) -> str:
    """The OS-level reason under urllib3's wrappers ("Connection refused"), else the whole error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        reason = getattr(current, "reason", None)
        current = current.__cause__ or current.__context__ or (reason if isinstance(reason, BaseException) else None)
    return _one_line(exc)


def _status_message(exc: Any) -> str:
    try:
        return _one_line(json.loads(exc.body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return ""


def _reason(exc: Exception) -> str:
    """Why a plugin was rejected, without the engine's own "plugin 'x' rejected:" prefix."""
    return _one_line(getattr(exc, "detail", exc))


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
