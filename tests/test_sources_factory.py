"""build_source picks the configured source; kube_api_client reaches the cluster a kubeconfig names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fakeapi import FakeConfigMapAPI, write_kubeconfig
from tests.support.recorders import RecordingObserver, RecordingSink
from tests.support.waiting import wait_for
from webhook.cluster.client import api_client as kube_api_client
from webhook.config import Config
from webhook.plugins.sources.configmap import ConfigMapSource
from webhook.plugins.sources.directory import DirectorySource
from webhook.plugins.sources.factory import build_source


def test_none_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert build_source(Config(plugin_source="none"), RecordingSink(), RecordingObserver()) is None
    assert (
        build_source(Config(), RecordingSink(), RecordingObserver()) is None
    )  # auto, outside a cluster, no dir


def test_auto_outside_a_cluster_with_a_directory_watches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (tmp_path / "hello.lua").write_text("function GetWorkloadTypeAndName(m) return '', '' end")
    sink = RecordingSink()
    source = build_source(Config(plugins_dir=str(tmp_path)), sink, RecordingObserver())
    assert isinstance(source, DirectorySource)
    source.start()
    try:
        wait_for(source.synced, what="directory sync")
    finally:
        source.stop()
    assert sink.snapshots == [{"hello": "function GetWorkloadTypeAndName(m) return '', '' end"}]


def test_configmap_source_reads_the_configured_configmap(tmp_path: Path) -> None:
    with FakeConfigMapAPI() as fake:
        fake.put("elsewhere", "my-plugins", {"hello.lua": "x", "other": "y"})
        fake.put("elsewhere", "workload-tagger-plugins", {"wrong.lua": "x"})
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
        config = Config(
            plugin_source="configmap",
            kubeconfig=str(kubeconfig),
            configmap_namespace="elsewhere",
            configmap_name="my-plugins",
        )
        sink = RecordingSink()
        source = build_source(config, sink, RecordingObserver())
        assert isinstance(source, ConfigMapSource)
        source.start()
        try:
            wait_for(source.synced, what="configmap sync")
        finally:
            source.stop()
        assert sink.snapshots == [{"hello": "x"}]


def test_kube_api_client_uses_the_kubeconfig_server(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1")
    api_client = kube_api_client(Config(kubeconfig=str(kubeconfig)))
    assert api_client.configuration.host == "http://127.0.0.1:1"
    assert api_client.configuration.api_key == {"BearerToken": "Bearer test-token"}


def test_kube_api_client_prefers_the_in_cluster_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import incluster_config, kube_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("service-account-token")
    ca.write_text("not checked here")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    # A default kubeconfig exists too, but in a Pod the service account wins.
    fallback = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1")
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(fallback))
    api_client = kube_api_client(Config())
    assert api_client.configuration.host == "https://10.0.0.1:443"
    assert api_client.configuration.api_key == {"BearerToken": "bearer service-account-token"}
    assert api_client.configuration.ssl_ca_cert == str(ca)

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")  # outside a Pod: the default kubeconfig
    assert kube_api_client(Config()).configuration.host == "http://127.0.0.1:1"
