"""The generic owner fallback (setting ``ownerFallback``): name the owner of every Pod nobody else claims.

A Pod whose controller owner no rule or plugin resolves (Kubeflow ``PyTorchJob``, Spark
``SparkApplication``, Argo ``Workflow``, Tekton ``TaskRun``, KubeVirt ``VirtualMachineInstance``,
operator CRDs) is tagged with that owner: type = the owner's kind, name = its name, no platform,
``resolved-by: builtin:owner``. Static Pods are the one owner kind given a meaning: the kubelet
creates a mirror Pod named ``<static pod>-<node>``, owned by its ``v1`` Node, so the workload is
the static Pod itself (type ``StaticPod``, ``resolved-by: builtin:static-pod``), not the Node.

Only the controller owner reference counts (the one a controller manages the Pod through), not a
plain owner; a Pod without one is left alone. The resolver runs this after the rules and the
plugins, so both still win. Pure: no I/O.
"""

from __future__ import annotations

from webhook.resolution.model import Owner, PodMeta, Resolution
from webhook.resolution.rules import select_owner

OWNER = "builtin:owner"
STATIC_POD = "builtin:static-pod"
STATIC_POD_TYPE = "StaticPod"


def controller_owner(owner_refs: object) -> Owner | None:
    """The well-formed owner reference marked ``controller: true``; None when there is none."""
    if not isinstance(owner_refs, list):
        return None
    for ref in owner_refs:
        if isinstance(ref, dict) and ref.get("controller") is True:
            owner = select_owner([ref])  # one parser of owner references
            if owner is not None:
                return owner
    return None


def owner_fallback(pod: PodMeta) -> Resolution | None:
    """The Pod's controller owner as its workload; a static Pod's own name when that owner is its Node."""
    owner = controller_owner(pod.owner_references)
    if owner is None:
        return None
    if owner.api_version == "v1" and owner.kind == "Node":
        return static_pod(pod, owner)
    return Resolution(owner.kind, owner.name, None, OWNER, owner)


def static_pod(pod: PodMeta, node: Owner) -> Resolution | None:
    """``etcd-control-plane`` on Node ``control-plane`` is static Pod ``etcd``.

    A mirror Pod's name is always ``<static pod name>-<node name>``; a name without that suffix
    (not one the kubelet made) is kept whole. A Pod without a name is not resolved.
    """
    name = pod.name if type(pod.name) is str else ""
    suffix = "-" + node.name
    if name.endswith(suffix) and len(name) > len(suffix):
        name = name[: -len(suffix)]
    if not name:
        return None
    return Resolution(STATIC_POD_TYPE, name, None, STATIC_POD, node)
