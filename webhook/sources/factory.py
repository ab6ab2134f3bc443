"""Pick and build the configured plugin source; one place that knows how to reach a cluster."""

from __future__ import annotations

from typing import Any

from webhook.config import Config
from webhook.errors import CLIError
from webhook.sources import PluginSink, PluginSource, SourceObserver


def kube_api_client(config: Config) -> Any:
    """A ``kubernetes.client.ApiClient``: the given kubeconfig, else in-cluster, else the default kubeconfig.

    Raises :class:`CLIError` with one line when none of them is usable, so the CLI and the server
    both fail with the same clear message instead of a traceback.
    """
    from kubernetes import client
    from kubernetes import config as kube_config

    configuration = client.Configuration()
    try:
        if config.kubeconfig:
            kube_config.load_kube_config(config_file=config.kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            try:
                kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except kube_config.ConfigException:
                kube_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (kube_config.ConfigException, OSError, ValueError, TypeError) as exc:
        where = (
            f"kubeconfig {config.kubeconfig}"
            if config.kubeconfig
            else "no in-cluster config and no kubeconfig"
        )
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise CLIError(f"cannot reach a cluster: {where}: {detail}") from None
    return client.ApiClient(configuration)


def build_source(config: Config, sink: PluginSink, observer: SourceObserver) -> PluginSource | None:
    """The source ``config.effective_plugin_source()`` names, not yet started; ``None`` for "none"."""
    kind = config.effective_plugin_source()
    if kind == "none":
        return None
    if kind == "directory":
        from webhook.sources.directory import DirectorySource

        if not config.plugins_dir:
            raise CLIError("plugin source 'directory' needs --plugins-dir")
        return DirectorySource(config.plugins_dir, sink, observer=observer)
    if kind == "configmap":
        from kubernetes import client

        from webhook.sources.configmap import ConfigMapSource

        return ConfigMapSource(
            client.CoreV1Api(kube_api_client(config)),
            config.resolved_configmap_namespace(),
            config.configmap_name,
            sink,
            observer=observer,
            clear_on_delete=config.clear_on_delete,
        )
    raise CLIError(f"unknown plugin source {kind!r}")
