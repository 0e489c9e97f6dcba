"""core/v1 Events, recorded the way client-go's event recorder does: repeats aggregate into ``count``."""

from __future__ import annotations

from typing import Any

from kube.apiserver import LocalClient
from kube.store import now

# Event names are "<object>.<hex>"; real ones use the Unix time in nanoseconds, this a counter on a fixed base.
_NAME_BASE = 0x17E0000000000000


class EventRecorder:
    def __init__(self, client: LocalClient) -> None:
        self._client = client
        self._names: dict[tuple[str, ...], str] = {}
        self._created = 0

    def record(
        self,
        obj: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        component: str,
        *,
        host: str = "",
        field_path: str = "",
    ) -> None:
        """Record an Event about ``obj`` (``type_``: Normal or Warning); a repeated one only bumps its count."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        identity = (namespace, meta["uid"], field_path, type_, reason, message, component)
        existing = self._names.get(identity)
        if existing is not None:
            event = self._client.get("v1", "Event", namespace, existing)
            if event is not None:
                event["count"] = event.get("count", 1) + 1
                event["lastTimestamp"] = now()
                self._client.update(event)
                return
        self._created += 1
        name = f"{meta['name']}.{_NAME_BASE + self._created:x}"
        self._names[identity] = name
        involved = {
            "kind": obj["kind"],
            "namespace": meta.get("namespace", ""),
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": obj["apiVersion"],
            "resourceVersion": meta.get("resourceVersion", ""),
            **({"fieldPath": field_path} if field_path else {}),
        }
        stamp = now()
        self._client.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {k: v for k, v in involved.items() if v != ""},
                "reason": reason,
                "message": message,
                "source": {"component": component, **({"host": host} if host else {})},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "type": type_,
                "reportingComponent": component,
                "reportingInstance": host,
            }
        )
