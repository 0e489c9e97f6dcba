"""Rendered manifests checked against the official Kubernetes schemas (kubernetes-validate, strict).

``kubernetes_validate.validate`` re-reads a 1.5 MB definitions file on every call and stops at the first
error. This builds the same validator it builds (same schema files, same JSON-schema draft, strict mode:
unknown fields are errors) once per Kubernetes version and kind, and reports every error.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from typing import Any

import jsonschema
from referencing import Registry, Resource

#: The Kubernetes releases the chart must render valid manifests for (issue 5).
KUBE_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34")


class NoSchema(LookupError):
    """The Kubernetes release has no schema for this apiVersion and kind (a CRD, or a removed API)."""


@functools.cache
def _schema_dir(version: str) -> Any:
    return importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local-strict"


@functools.cache
def _registry(version: str) -> Registry:
    definitions = json.loads((_schema_dir(version) / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()  # type: ignore[return-value]


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _schema_dir(version) / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        raise NoSchema(f"Kubernetes {version} has no schema for {api_version} {kind}")
    schema = json.loads(path.read_text())
    registry = Resource.from_contents(schema) @ _registry(version)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_errors(document: dict[str, Any], version: str) -> list[str]:
    """Every strict-schema error of one manifest for Kubernetes ``version`` (``"1.31"``)."""
    validator = _validator(version, document["apiVersion"], document["kind"])
    return [
        f"{document['kind']}/{document['metadata']['name']} .{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]
