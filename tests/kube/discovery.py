"""API discovery (``/api``, ``/apis``, ``/api/v1``, ``/apis/apps/v1``, ...), ``/version`` and the OpenAPI v3 index.

The resource list is kmock's bundled discovery dump of a k3s cluster (24 group-versions: core, apps, batch,
networking, policy, autoscaling v1/v2, rbac, ...), read through kmock's public ``ResourcesArray``. Client-go's
RESTMapper builds its kind->resource mapping from these documents, so Helm can only apply kinds listed here.
"""

from __future__ import annotations

import functools
import re
import warnings
from typing import Any

import kmock
from kube.store import Resource

# Kubernetes' version priority: GA before beta before alpha, higher numbers first.
_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int]:
    match = _VERSION.match(version)
    if not match:
        return (-1, 0, 0)
    major, stage, minor = match.groups()
    return ({"alpha": 0, "beta": 1, None: 2}[stage], int(major), int(minor or 0))


@functools.lru_cache(maxsize=1)
def _bundled_resources() -> tuple[Resource, ...]:
    bundled = kmock.ResourcesArray()
    with warnings.catch_warnings():  # kmock 0.8 reads its data with the deprecated importlib.resources.read_binary
        warnings.simplefilter("ignore", DeprecationWarning)
        bundled.load_bundled()
    resources = []
    for ref in bundled:
        info = bundled[ref]
        assert ref.group is not None
        assert ref.version is not None
        assert ref.plural is not None
        resources.append(
            Resource(
                group=ref.group,
                version=ref.version,
                plural=ref.plural,
                kind=info.kind or ref.plural.capitalize(),
                namespaced=bool(info.namespaced),
                verbs=frozenset(info.verbs),
                subresources=frozenset(info.subresources),
            )
        )
    return tuple(resources)


class Discovery:
    def __init__(self, kube_version: str) -> None:
        self.kube_version = kube_version
        self._resources = {(r.group, r.version, r.plural): r for r in _bundled_resources()}
        self._by_kind = {(r.api_version, r.kind): r for r in self._resources.values()}

    def add(self, resource: Resource) -> None:
        """Serve one more resource, as installing a CustomResourceDefinition does."""
        self._resources[(resource.group, resource.version, resource.plural)] = resource
        self._by_kind[(resource.api_version, resource.kind)] = resource

    def lookup(self, group: str, version: str, plural: str) -> Resource | None:
        return self._resources.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> Resource | None:
        return self._by_kind.get((api_version, kind))

    def by_plural(self, plural: str) -> Resource | None:
        """``pods`` (the core group wins over metrics.k8s.io), or ``events.events.k8s.io`` with a group."""
        name, _, group = plural.partition(".")
        candidates = [r for r in self._resources.values() if r.plural == name and (r.group == group or not group)]
        candidates.sort(key=lambda r: (r.group != "", r.group, [-p for p in version_priority(r.version)]))
        return candidates[0] if candidates else None

    def group_versions(self) -> dict[str, list[str]]:
        """Group -> its versions, preferred first ('' is the core group)."""
        groups: dict[str, set[str]] = {}
        for group, version, _ in self._resources:
            groups.setdefault(group, set()).add(version)
        return {
            group: sorted(versions, key=version_priority, reverse=True) for group, versions in sorted(groups.items())
        }

    # --- documents ----------------------------------------------------------------------------------------------

    def server_version(self) -> dict[str, Any]:
        major, minor = self.kube_version.lstrip("v").split(".")[:2]
        return {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{major}.{minor}.0",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2024-01-01T00:00:00Z",
            "goVersion": "go1.22.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def core_versions(self) -> dict[str, Any]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}

    def group_list(self) -> dict[str, Any]:
        groups = [self.group(name) for name in self.group_versions() if name]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def group(self, name: str) -> dict[str, Any]:
        versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in self.group_versions().get(name, [])]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": name,
            "versions": versions,
            "preferredVersion": versions[0] if versions else None,
        }

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        served = sorted(
            (r for r in self._resources.values() if (r.group, r.version) == (group, version)), key=lambda r: r.plural
        )
        if not served:
            return None
        entries = []
        for resource in served:
            entry = {
                "name": resource.plural,
                "singularName": resource.kind.lower(),
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": sorted(resource.verbs),
            }
            entries.append(entry)
            entries += [
                {
                    "name": f"{resource.plural}/{sub}",
                    "singularName": "",
                    "namespaced": resource.namespaced,
                    "kind": resource.kind,
                    "verbs": ["get", "patch", "update"],
                }
                for sub in sorted(resource.subresources)
            ]
        # The core group's groupVersion is plain "v1": with "/v1" client-go's RESTMapper drops every core kind.
        group_version = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}

    def openapi_index(self) -> dict[str, Any]:
        """``/openapi/v3``: Helm consults it (through kubectl's query-param verifier) before every apply."""
        paths = {}
        for group, versions in self.group_versions().items():
            for version in versions:
                path = f"apis/{group}/{version}" if group else f"api/{version}"
                paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}"}
        return {"paths": paths}

    def openapi_document(self, path: str) -> dict[str, Any] | None:
        """``/openapi/v3/apis/apps/v1``: only what kubectl's field-validation check reads, one PATCH operation per
        kind that declares the ``fieldValidation`` query parameter. Without it, Helm falls back to client-side
        validation, which needs ``/openapi/v2`` (``failed to download openapi``)."""
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            return None
        served = [r for r in self._resources.values() if (r.group, r.version) == (group, version)]
        if not served:
            return None
        paths = {}
        for resource in served:
            scope = "namespaces/{namespace}/" if resource.namespaced else ""
            patch = {
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": resource.kind},
                "parameters": [
                    {"name": name, "in": "query", "schema": {"type": "string"}}
                    for name in ("dryRun", "fieldManager", "fieldValidation", "force")
                ],
            }
            paths[f"/{path.strip('/')}/{scope}{resource.plural}/{{name}}"] = {"patch": patch}
        info = {"title": "Kubernetes", "version": self.server_version()["gitVersion"]}
        return {"openapi": "3.0.0", "info": info, "paths": paths, "components": {"schemas": {}}}
