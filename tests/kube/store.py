"""The emulator's etcd: objects per resource, resourceVersions, and the event log that watches replay.

All access happens on the emulator's event loop thread, so there are no locks: a handler's read-modify-write
has no ``await`` in the middle and is therefore atomic, exactly what optimistic concurrency needs.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import hashlib
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

# ("apps", "deployments"), ("", "pods"): a resource across its versions, as the API server stores it.
ResourceKey = tuple[str, str]


@dataclass(frozen=True)
class Resource:
    """One served resource of the discovery document (group, version, plural) with what a client needs of it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    subresources: frozenset[str]

    @property
    def key(self) -> ResourceKey:
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps`` or ``pods``: how error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Deployment.apps`` or ``Pod``: how validation errors name a kind."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


@dataclass(frozen=True)
class Change:
    """A committed change, as a watch reports it. ``old`` lets a filtered watch see objects enter or leave."""

    type: str  # ADDED, MODIFIED, DELETED
    object: dict[str, Any]
    old: dict[str, Any] | None
    resource_version: int


def now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stable_uid(seed: str) -> str:
    """Deterministic UIDs keep test output and failure messages reproducible."""
    return str(uuid.UUID(hashlib.md5(seed.encode()).hexdigest()))


class Store:
    def __init__(self) -> None:
        self._objects: dict[ResourceKey, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        self._log: dict[ResourceKey, list[Change]] = defaultdict(list)
        self._watchers: dict[ResourceKey, set[asyncio.Queue[Change | None]]] = defaultdict(set)
        self._revision = 0
        self._created = 0

    @property
    def revision(self) -> int:
        return self._revision

    def get(self, key: ResourceKey, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself: callers copy before changing it."""
        return self._objects[key].get((namespace, name))

    def objects(self, key: ResourceKey, namespace: str | None = None) -> list[dict[str, Any]]:
        items = self._objects[key]
        return [obj for (ns, _), obj in sorted(items.items()) if namespace is None or ns == namespace]

    def resource_keys(self) -> list[ResourceKey]:
        return [key for key, objects in self._objects.items() if objects]

    def create(self, key: ResourceKey, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self._created += 1
        meta["uid"] = stable_uid(f"{key}/{meta.get('namespace', '')}/{meta['name']}/{self._created}")
        meta["creationTimestamp"] = now()
        if "spec" in obj:
            meta["generation"] = 1
        return self._commit(key, "ADDED", obj, None)

    def update(self, key: ResourceKey, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new state of an existing object; a spec change bumps ``metadata.generation``."""
        meta = obj["metadata"]
        old = self._objects[key][(meta.get("namespace", ""), meta["name"])]
        for preserved in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if preserved in old["metadata"]:
                meta[preserved] = old["metadata"][preserved]
        if obj.get("spec") != old.get("spec") and "generation" in meta:
            meta["generation"] += 1
        if _without_version(obj) == _without_version(old):
            return old  # a no-op write keeps its resourceVersion and notifies nobody, as in Kubernetes
        return self._commit(key, "MODIFIED", obj, old)

    def delete(self, key: ResourceKey, namespace: str, name: str) -> dict[str, Any]:
        old = self._objects[key][(namespace, name)]
        return self._commit(key, "DELETED", copy.deepcopy(old), old)

    def _commit(self, key: ResourceKey, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        self._revision += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._revision)
        identity = (meta.get("namespace", ""), meta["name"])
        if kind == "DELETED":
            del self._objects[key][identity]
        else:
            self._objects[key][identity] = obj
        change = Change(kind, obj, old, self._revision)
        self._log[key].append(change)
        for queue in self._watchers[key]:
            queue.put_nowait(change)
        return obj

    def changes_since(self, key: ResourceKey, revision: int) -> list[Change]:
        return [change for change in self._log[key] if change.resource_version > revision]

    def subscribe(self, key: ResourceKey) -> asyncio.Queue[Change | None]:
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._watchers[key].add(queue)
        return queue

    def unsubscribe(self, key: ResourceKey, queue: asyncio.Queue[Change | None]) -> None:
        self._watchers[key].discard(queue)

    def close_watches(self) -> None:
        """End every open watch stream (``None`` tells a stream to finish), so the server can stop at once."""
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(None)


def _without_version(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}
