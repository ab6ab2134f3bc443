"""Debian's Prometheus on loopback, and reading answers back through its HTTP API."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port
from tests.support.waiting import wait_for


def prom_get(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else base + path
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def query(base: str, expr: str) -> list[dict[str, Any]]:
    data = prom_get(base, "/api/v1/query", query=expr)
    assert data["resultType"] == "vector", (expr, data)
    result: list[dict[str, Any]] = data["result"]
    return result




def value(base: str, expr: str) -> float | None:
    result = query(base, expr)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def launch_prometheus(tmp_path: Path, config: dict[str, Any]) -> tuple[str, subprocess.Popen[bytes]]:
    """Debian's prometheus on loopback with this configuration; its base URL once it is ready."""
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                "/usr/bin/prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(base + "/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            assert proc.poll() is None, log_path.read_text()
            return False

    try:
        wait_for(ready, timeout=15, what="prometheus ready", interval=0.25)
    except BaseException:
        proc.terminate()
        proc.wait(10)
        raise
    return base, proc
