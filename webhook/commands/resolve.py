"""`workload-tagger resolve FILE`: the answer `/mutate` would give, computed by the same handler."""

from __future__ import annotations

import argparse
import sys

import orjson

from webhook.admission.review import AdmissionRequest, PodObject
from webhook.app import build_mutator, plugin_set_for_cli
from webhook.commands.inputs import PodInput, load_pods
from webhook.config import Config
from webhook.errors import UserError
from webhook.resolution.model import UNRESOLVED_JSON


def as_request(pod: PodInput) -> AdmissionRequest:
    """What `/mutate` would have been given for this Pod: the review itself, or a Pod CREATE."""
    if pod.review is not None:
        return pod.review
    return AdmissionRequest(
        api_version="admission.k8s.io/v1", uid="offline", operation="CREATE", group="", version="v1",
        kind="Pod", resource="pods", sub_resource="", namespace=pod.namespace, object=PodObject.of(pod.obj), dry_run=True,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="Pod, Pod metadata, AdmissionReview or List (JSON/YAML; - for stdin)")


def run(args: argparse.Namespace, config: Config) -> int:
    """Print one JSON object per Pod, computed by exactly the handler `/mutate` uses."""
    pods = load_pods(args.file)
    mutator = build_mutator(config, plugin_set_for_cli(config))
    for pod in pods:
        decision = mutator.handle(as_request(pod))
        if decision.error:
            raise UserError(f"{pod.label}: resolution failed: {decision.error}")
        out = decision.resolution.as_json() if decision.resolution else UNRESOLVED_JSON
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0
