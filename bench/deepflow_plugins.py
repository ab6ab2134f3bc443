"""Ten distinct DeepFlow-style plugins for the server benchmark, written into a directory.

Each is what a DeepFlow user would have on their server: it decodes the metadata with dkjson
and looks for its own operator's CRD kind in ``ownerReferences``. None of them claims the
benchmark's Pods (a ReplicaSet owner on everyday Pods, which the built-in rules answer first;
a ``ShardedWorker`` owner on worst-case Pods, so all of them run to the end and return "","").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HEADER = 'package.path = package.path..";/bin/?.lua"\nlocal dkjson = require("dkjson")\n'


@dataclass(frozen=True)
class CRD:
    name: str
    group: str
    kind: str
    workload_type: str
    name_expr: str  # Lua expression over `owner` giving the workload name


CRDS = (
    CRD("elasticsearch", "elasticsearch.k8s.elastic.co", "Elasticsearch", "statefulset", 'owner["name"] .. "-es"'),
    CRD("rabbitmq", "rabbitmq.com", "RabbitmqCluster", "statefulset", 'owner["name"] .. "-server"'),
    CRD("clickhouse", "clickhouse.altinity.com", "ClickHouseInstallation", "statefulset", 'owner["name"]'),
    CRD("argo-rollout", "argoproj.io", "Rollout", "deployment", 'string.gsub(owner["name"], "%-%x+$", "")'),
    CRD("redis-cluster", "redis.kun", "DistributedRedisCluster", "statefulset", 'owner["name"]'),
    CRD("mysql-operator", "mysql.presslabs.org", "MysqlCluster", "statefulset", 'owner["name"] .. "-mysql"'),
    CRD("kafka-strimzi", "kafka.strimzi.io", "StrimziPodSet", "statefulset", 'owner["name"]'),
    CRD("spark-app", "sparkoperator.k8s.io", "SparkApplication", "job", 'owner["name"]'),
    CRD("tidb-cluster", "pingcap.com", "TidbCluster", "statefulset", 'owner["name"]'),
    CRD("flink-deploy", "flink.apache.org", "FlinkDeployment", "deployment", 'owner["name"]'),
)

BODY = """
function GetWorkloadTypeAndName(metaJsonStr)
    local meta, pos, err = dkjson.decode(metaJsonStr, 1, nil)
    if err or type(meta) ~= "table" then
        return "", ""
    end
    local owners = meta["ownerReferences"]
    if owners == nil then
        return "", ""
    end
    for _, owner in ipairs(owners) do
        local group = string.match(owner["apiVersion"] or "", "^([^/]+)/")
        if group == "{group}" and owner["kind"] == "{kind}" then
            local name = {name_expr}
            return "{workload_type}", name
        end
    end
    return "", ""
end
"""


def source(crd: CRD) -> str:
    return f"-- {crd.kind} ({crd.group}) Pods belong to a {crd.workload_type}\n" + HEADER + BODY.format(
        group=crd.group, kind=crd.kind, name_expr=crd.name_expr, workload_type=crd.workload_type
    )


def write(directory: Path, count: int) -> Path:
    """The first ``count`` plugins as ``<name>.lua`` in ``directory`` (created); returns it."""
    if count > len(CRDS):
        raise ValueError(f"only {len(CRDS)} distinct plugins are defined")
    directory.mkdir(parents=True, exist_ok=True)
    for crd in CRDS[:count]:
        (directory / f"{crd.name}.lua").write_text(source(crd))
    return directory
