"""Configuration: flags > environment (``WORKLOAD_TAGGER_*``) > YAML file > defaults.

Every setting is declared once in :data:`SETTINGS`; the CLI builds its flags, the README
table and the environment names from it, so the three can never drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from webhook.annotations import annotation_key_problem, annotation_keys

ENV_PREFIX = "WORKLOAD_TAGGER_"
SERVICEACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ConfigError(ValueError):
    """A setting has a value we cannot use; the CLI prints it as one line and exits 2."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def own_namespace() -> str:
    env = os.environ.get("POD_NAMESPACE")
    if env:
        return env
    try:
        return SERVICEACCOUNT_NAMESPACE.read_text().strip() or "workload-tagger"
    except OSError:
        return "workload-tagger"


@dataclass
class Config:
    """All settings. Field metadata: ``help`` for flags/README, ``key`` for the YAML file (camelCase)."""

    host: str = field(default="0.0.0.0", metadata={"help": "address to listen on", "key": "host"})
    port: int = field(default=8443, metadata={"help": "HTTPS port", "key": "port"})
    cert_file: str = field(default="certs/tls.crt", metadata={"help": "serving certificate (PEM)", "key": "certFile"})
    key_file: str = field(default="certs/tls.key", metadata={"help": "serving key (PEM)", "key": "keyFile"})
    cert_mode: str = field(
        default="files",
        metadata={"help": "files: serve certFile/keyFile; self-managed: keep a CA in a Secret, patch the caBundle",
                  "key": "certMode"},
    )
    ca_secret_name: str = field(
        default="workload-tagger-ca", metadata={"help": "Secret holding the self-managed CA", "key": "caSecretName"}
    )
    webhook_config_name: str = field(
        default="workload-tagger",
        metadata={"help": "MutatingWebhookConfiguration whose caBundle self-managed mode patches",
                  "key": "webhookConfigName"},
    )
    service_name: str = field(
        default="workload-tagger", metadata={"help": "Service name the serving certificate is issued for", "key": "serviceName"}
    )
    prefix: str = field(
        default="workload-tagger.io/",
        metadata={"help": "annotation key prefix; the keys it makes must be valid Kubernetes annotation keys "
                  "(DNS-subdomain prefix, '/', name of at most 63 characters)", "key": "prefix"},
    )
    plugin_source: str = field(
        default="auto",
        metadata={
            "help": "where plugins come from: auto (configmap in a cluster, else directory if set), "
            "configmap, directory, none",
            "key": "pluginSource",
        },
    )
    plugins_dir: str = field(default="", metadata={"help": "directory of *.lua plugins", "key": "pluginsDir"})
    configmap_namespace: str = field(
        default="", metadata={"help": "plugin ConfigMap namespace (default: own namespace)", "key": "configMapNamespace"}
    )
    configmap_name: str = field(
        default="workload-tagger-plugins", metadata={"help": "plugin ConfigMap name", "key": "configMapName"}
    )
    clear_on_delete: bool = field(
        default=False, metadata={"help": "drop all plugins when the ConfigMap is deleted", "key": "clearOnDelete"}
    )
    kubeconfig: str = field(default="", metadata={"help": "kubeconfig path (default: in-cluster, then ~/.kube/config)", "key": "kubeconfig"})
    plugins_first: bool = field(
        default=False, metadata={"help": "ask plugins before the built-in rules", "key": "pluginsFirst"}
    )
    allow_custom_types: bool = field(
        default=False, metadata={"help": "accept workload types outside the known set", "key": "allowCustomTypes"}
    )
    otel_annotations: bool = field(
        default=True,
        metadata={"help": "also write the OpenTelemetry resource annotations (resource.opentelemetry.io/k8s.*) "
                  "the resolution determines exactly", "key": "otelAnnotations"},
    )
    owner_fallback: bool = field(
        default=False,
        metadata={"help": "tag a Pod whose controller owner no rule or plugin resolves with that owner "
                  "(type = its kind; static Pods: StaticPod)", "key": "ownerFallback"},
    )
    plugin_instructions: int = field(
        default=5_000_000, metadata={"help": "Lua instruction budget per plugin call", "key": "pluginInstructions"}
    )
    plugin_memory_mb: int = field(
        default=8, metadata={"help": "memory cap per plugin runtime, MiB", "key": "pluginMemoryMb"}
    )
    plugin_quarantine_after: int = field(
        default=5,
        metadata={"help": "consecutive calls out of budget, memory or time after which a plugin is skipped for "
                  "pluginQuarantineSeconds (0: never)", "key": "pluginQuarantineAfter"},
    )
    plugin_quarantine_seconds: float = field(
        default=30.0,
        metadata={"help": "first quarantine; doubles while the plugin's trial calls keep failing, "
                  "up to 10 minutes", "key": "pluginQuarantineSeconds"},
    )
    plugin_hosts: int = field(
        default=2,
        metadata={"help": "plugin host processes evaluating plugins in parallel (see README, Plugins)",
                  "key": "pluginHosts"},
    )
    plugin_call_timeout_ms: int = field(
        default=200,
        metadata={"help": "wall-clock limit of one plugin call; past it the host is killed and the plugin "
                  "charged (outcome timeout)", "key": "pluginCallTimeoutMs"},
    )
    plugin_load_timeout_ms: int = field(
        default=2000,
        metadata={"help": "wall-clock limit of loading one plugin; past it the plugin is rejected and its "
                  "last good version kept", "key": "pluginLoadTimeoutMs"},
    )
    plugin_max_input_kib: int = field(
        default=64,
        metadata={"help": "Pods whose plugin input (DeepFlow-shaped metadata) is larger are not sent to "
                  "plugins (counted)", "key": "pluginMaxInputKib"},
    )
    review_budget_ms: int = field(
        default=500, metadata={"help": "time budget for one review; past it: allowed, no patch", "key": "reviewBudgetMs"}
    )
    max_body_bytes: int = field(
        default=7 * 1024 * 1024, metadata={"help": "largest AdmissionReview accepted (413 above)", "key": "maxBodyBytes"}
    )
    body_memory_mb: int = field(
        default=48,
        metadata={"help": "request bodies held in memory across all connections, MiB (503 with Retry-After "
                  "beyond; a quarter is kept for bodies up to 1 MiB)", "key": "bodyMemoryMb"},
    )
    max_connections: int = field(
        default=1000,
        metadata={"help": "open client connections; at the limit the oldest idle one is closed",
                  "key": "maxConnections"},
    )
    idle_timeout_s: float = field(
        default=120.0,
        metadata={"help": "close a keep-alive connection idle this long (keep above the API server's 90 s)",
                  "key": "idleTimeoutSeconds"},
    )
    header_timeout_s: float = field(
        default=10.0,
        metadata={"help": "TLS handshake, and each request's head from its first byte, must arrive within this",
                  "key": "headerTimeoutSeconds"},
    )
    body_timeout_s: float = field(
        default=10.0, metadata={"help": "a request body must arrive within this (408 and close)", "key": "bodyTimeoutSeconds"}
    )
    metrics_port: int = field(
        default=0, metadata={"help": "extra plain-HTTP /metrics port (0: off)", "key": "metricsPort"}
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning, error", "key": "logLevel"})
    workers: int = field(default=1, metadata={"help": "server processes sharing the port (SO_REUSEPORT)", "key": "workers"})
    shutdown_grace_s: float = field(
        default=15.0, metadata={"help": "seconds to finish in-flight reviews on SIGTERM", "key": "shutdownGraceSeconds"}
    )
    shutdown_drain_s: float = field(
        default=3.0,
        metadata={"help": "seconds to keep serving after SIGTERM with readiness false, so endpoints converge "
                  "(part of the grace period)", "key": "shutdownDrainSeconds"},
    )
    event_loop: str = field(
        default="auto", metadata={"help": "event loop: auto (uvloop when installed), uvloop, asyncio", "key": "eventLoop"}
    )
    owner_lookup: str = field(
        default="auto",
        metadata={"help": "read the exact owner chain from list/watch caches of ReplicaSets, Jobs, Deployments, "
                  "StatefulSets, DaemonSets, CronJobs (needs list/watch on them): auto (on in a cluster), on, off",
                  "key": "ownerLookup"},
    )
    owner_wait_ms: int = field(
        default=100,
        metadata={"help": "longest wait for a Pod's owner the caches have not seen yet (at most half the review "
                  "budget); then the built-in rules answer", "key": "ownerWaitMs"},
    )
    rules: list[dict[str, Any]] = field(
        default_factory=list, metadata={"help": "extra owner kind -> type rules (file only)", "key": "rules", "file_only": True}
    )

    def resolved_configmap_namespace(self) -> str:
        return self.configmap_namespace or own_namespace()

    def effective_plugin_source(self) -> str:
        if self.plugin_source != "auto":
            return self.plugin_source
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return "configmap"
        return "directory" if self.plugins_dir else "none"


    def effective_owner_lookup(self) -> bool:
        if self.owner_lookup != "auto":
            return self.owner_lookup == "on"
        return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _coerce(name: str, kind: Any, value: Any, origin: str) -> Any:
    try:
        if kind in (bool, "bool"):
            return _bool(value)
        if kind in (int, "int"):
            if isinstance(value, bool):
                raise ValueError("not an integer")
            return int(value)
        if kind in (float, "float"):
            return float(value)
        if kind in (str, "str"):
            if isinstance(value, (dict, list)):
                raise ValueError("not a string")
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: invalid value for {name}: {exc}") from None
    return value


def load(
    file: str | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge the three layers; unknown file keys are errors (a typo must not be silently ignored)."""
    environ = os.environ if environ is None else environ
    flags = flags or {}
    file = file or environ.get(env_name("config")) or None
    from_file: dict[str, Any] = {}
    if file:
        try:
            raw = yaml.safe_load(Path(file).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {file} must hold a mapping")
        by_key = {f.metadata["key"]: f.name for f in fields(Config)}
        for key, value in raw.items():
            if key not in by_key:
                raise ConfigError(f"config file {file}: unknown setting {key!r}")
            from_file[by_key[key]] = value
    values: dict[str, Any] = {}
    for f in fields(Config):
        if flags.get(f.name) is not None:
            values[f.name] = _coerce(f.name, f.type, flags[f.name], "flag")
        elif not f.metadata.get("file_only") and env_name(f.name) in environ:
            values[f.name] = _coerce(f.name, f.type, environ[env_name(f.name)], env_name(f.name))
        elif f.name in from_file:
            values[f.name] = _coerce(f.name, f.type, from_file[f.name], f"config file {file}")
    config = Config(**values)
    validate(config)
    return config


def validate(config: Config) -> None:
    if config.plugin_source not in {"auto", "configmap", "directory", "none"}:
        raise ConfigError(f"pluginSource must be auto, configmap, directory or none, not {config.plugin_source!r}")
    if config.plugin_source == "directory" and not config.plugins_dir:
        raise ConfigError("pluginSource=directory needs pluginsDir")
    if config.cert_mode not in {"files", "self-managed"}:
        raise ConfigError(f"certMode must be files or self-managed, not {config.cert_mode!r}")
    if not 0 < config.port < 65536:
        raise ConfigError(f"port {config.port} out of range")
    if config.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"logLevel must be debug, info, warning or error, not {config.log_level!r}")
    if not isinstance(config.rules, list):
        raise ConfigError("rules must be a list")
    if config.workers < 1:
        raise ConfigError("workers must be at least 1")
    if config.event_loop not in {"auto", "uvloop", "asyncio"}:
        raise ConfigError(f"eventLoop must be auto, uvloop or asyncio, not {config.event_loop!r}")
    if config.shutdown_drain_s < 0 or config.shutdown_grace_s <= 0:
        raise ConfigError("shutdownDrainSeconds must be >= 0 and shutdownGraceSeconds > 0")
    if config.max_body_bytes < 1024:
        raise ConfigError("maxBodyBytes must be at least 1024")
    if config.body_memory_mb * 1024 * 1024 * 3 // 4 < config.max_body_bytes:
        raise ConfigError("bodyMemoryMb must be large enough that three quarters of it hold one maxBodyBytes body")
    if config.max_connections < 1:
        raise ConfigError("maxConnections must be at least 1")
    if min(config.idle_timeout_s, config.header_timeout_s, config.body_timeout_s) <= 0:
        raise ConfigError("idleTimeoutSeconds, headerTimeoutSeconds and bodyTimeoutSeconds must be > 0")
    if config.owner_lookup not in {"auto", "on", "off"}:
        raise ConfigError(f"ownerLookup must be auto, on or off, not {config.owner_lookup!r}")
    if config.owner_wait_ms < 0:
        raise ConfigError("ownerWaitMs must be >= 0")
    if config.plugin_hosts < 1:
        raise ConfigError("pluginHosts must be at least 1")
    if config.plugin_call_timeout_ms <= 0 or config.plugin_load_timeout_ms <= 0 or config.plugin_max_input_kib <= 0:
        raise ConfigError("pluginCallTimeoutMs, pluginLoadTimeoutMs and pluginMaxInputKib must be > 0")
    if config.plugin_quarantine_after < 0 or config.plugin_quarantine_seconds <= 0:
        raise ConfigError("pluginQuarantineAfter must be >= 0 and pluginQuarantineSeconds > 0")
    validate_prefix(config.prefix)


def validate_prefix(prefix: str) -> None:
    """Every key the prefix makes must be one the API server accepts, or no patch could ever be sent."""
    for key in annotation_keys(prefix):
        problem = annotation_key_problem(key)
        if problem is not None:
            raise ConfigError(f"prefix {prefix!r} makes invalid annotation keys: {problem}")


def settings_table() -> str:
    """The README's settings table, generated so it cannot drift from the code (a test compares them)."""
    rows = ["| flag | environment | file key | default | meaning |", "|---|---|---|---|---|"]
    for f in fields(Config):
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        file_only = f.metadata.get("file_only")
        flag = "—" if file_only else "`--" + f.name.replace("_", "-") + "`"
        env = "—" if file_only else f"`{env_name(f.name)}`"
        rows.append(f"| {flag} | {env} | `{f.metadata['key']}` | `{default!r}` | {f.metadata['help']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
