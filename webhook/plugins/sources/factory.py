"""Pick and build the configured plugin source."""

from __future__ import annotations

from webhook.config import Config
from webhook.errors import UserError
from webhook.plugins.sources import PluginSink, PluginSource, SourceObserver


def build_source(config: Config, sink: PluginSink, observer: SourceObserver) -> PluginSource | None:
    """The source ``config.effective_plugin_source()`` names, not yet started; ``None`` for "none"."""
    kind = config.effective_plugin_source()
    if kind == "none":
        return None
    if kind == "directory":
        from webhook.plugins.sources.directory import DirectorySource

        if not config.plugins_dir:
            raise UserError("plugin source 'directory' needs --plugins-dir")
        return DirectorySource(config.plugins_dir, sink, observer=observer)
    if kind == "configmap":
        from kubernetes import client

        from webhook.cluster.client import api_client
        from webhook.plugins.sources.configmap import ConfigMapSource

        return ConfigMapSource(
            client.CoreV1Api(api_client(config)),
            config.resolved_configmap_namespace(),
            config.configmap_name,
            sink,
            observer=observer,
            clear_on_delete=config.clear_on_delete,
        )
    raise UserError(f"unknown plugin source {kind!r}")
