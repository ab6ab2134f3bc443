"""What a Pod is stored with after our patch, and the annotation prefixes tests look for."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

import jsonpatch
import orjson

from tests.support.factories import review
from webhook.admission import review as admission
from webhook.admission.handler import PodMutator

OURS = "workload-tagger.io/"
OTEL = "resource.opentelemetry.io/"
# A Kubernetes qualified annotation key: DNS-subdomain prefix, '/', a name of at most 63 characters.
QUALIFIED = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def admit(mutator: PodMutator, obj: dict[str, Any]) -> dict[str, Any]:
    """The annotations the Pod is stored with after the webhook's patch (if any)."""
    decision = mutator.handle(admission.decode_for_mutation(orjson.dumps(review(obj))))
    assert decision.error is None
    patch = decision.response.patch
    stored = obj if patch is None else jsonpatch.apply_patch(copy.deepcopy(obj), json.loads(base64.b64decode(patch.encoded)))
    return dict(stored["metadata"].get("annotations") or {})
