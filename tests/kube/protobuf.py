"""Decode the protobuf bodies that client-go sends, into the JSON form the rest of the emulator works with.

Since client-go 1.33, typed clientsets (Helm's release storage: Secrets, ConfigMaps; ``create_namespace``:
Namespaces; typed deletes: DeleteOptions) send ``application/vnd.kubernetes.protobuf``. The body is the magic
``k8s\\x00`` followed by a ``runtime.Unknown`` envelope whose ``raw`` field holds the object message.

Only the messages those clients send are described here, field numbers as in Kubernetes' ``generated.proto``.
Responses are always JSON, which client-go accepts because it also lists JSON in its Accept header.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """The body is not a protobuf message this emulator understands."""


# A message description: field number -> (JSON name, kind, nested description for messages).
# Kinds: string, bytes (base64 in JSON, as the API server renders []byte), int, counter (an int omitted when 0),
# bool, time, message, repeated_string, repeated_message, map_string (map<string,string>), map_bytes.
# Go's proto2 marshalling writes empty strings, zero counters and zero times; its JSON omits them, and so does this.
Fields = dict[int, tuple[str, str, "Fields | None"]]

TIME: Fields = {1: ("seconds", "int", None), 2: ("nanos", "int", None)}
TYPE_META: Fields = {1: ("apiVersion", "string", None), 2: ("kind", "string", None)}
OWNER_REFERENCE: Fields = {
    1: ("kind", "string", None),
    3: ("name", "string", None),
    4: ("uid", "string", None),
    5: ("apiVersion", "string", None),
    6: ("controller", "bool", None),
    7: ("blockOwnerDeletion", "bool", None),
}
OBJECT_META: Fields = {
    1: ("name", "string", None),
    2: ("generateName", "string", None),
    3: ("namespace", "string", None),
    5: ("uid", "string", None),
    6: ("resourceVersion", "string", None),
    7: ("generation", "counter", None),
    8: ("creationTimestamp", "time", TIME),
    9: ("deletionTimestamp", "time", TIME),
    10: ("deletionGracePeriodSeconds", "int", None),
    11: ("labels", "map_string", None),
    12: ("annotations", "map_string", None),
    13: ("ownerReferences", "repeated_message", OWNER_REFERENCE),
    14: ("finalizers", "repeated_string", None),
    # 17 is managedFields: the emulator does not track field ownership that way, so it is skipped.
}
# By kind alone: DeleteOptions arrive with the apiVersion of whichever group's client sent them.
MESSAGES: dict[str, Fields] = {
    "Secret": {
        1: ("metadata", "message", OBJECT_META),
        2: ("data", "map_bytes", None),
        3: ("type", "string", None),
        4: ("stringData", "map_string", None),
        5: ("immutable", "bool", None),
    },
    "ConfigMap": {
        1: ("metadata", "message", OBJECT_META),
        2: ("data", "map_string", None),
        3: ("binaryData", "map_bytes", None),
        4: ("immutable", "bool", None),
    },
    "Namespace": {
        1: ("metadata", "message", OBJECT_META),
        2: ("spec", "message", {1: ("finalizers", "repeated_string", None)}),
    },
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "int", None),
        2: ("preconditions", "message", {1: ("uid", "string", None), 2: ("resourceVersion", "string", None)}),
        3: ("orphanDependents", "bool", None),
        4: ("propagationPolicy", "string", None),
        5: ("dryRun", "repeated_string", None),
    },
}
UNKNOWN: Fields = {1: ("typeMeta", "message", TYPE_META), 2: ("raw", "bytes", None)}


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded Kubernetes object (with its ``k8s\\x00`` envelope) as its JSON dict."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the protobuf body does not start with the k8s envelope magic")
    envelope = _message(body[len(MAGIC) :], UNKNOWN, raw_bytes=True)
    type_meta = envelope.get("typeMeta", {})
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    fields = MESSAGES.get(kind)
    if fields is None:
        raise ProtobufError(f"the emulator cannot decode protobuf for {api_version or '?'}, Kind={kind or '?'}")
    obj = _message(envelope.get("raw", b""), fields)
    return {"apiVersion": api_version, "kind": kind, **obj}


def _message(data: bytes, fields: Fields, *, raw_bytes: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in fields:
            continue
        name, kind, nested = fields[number]
        if kind == "string":
            if value:
                result[name] = _text(value)
        elif kind == "bytes":
            result[name] = value if raw_bytes else base64.b64encode(_bytes(value)).decode()
        elif kind == "int" or (kind == "counter" and value):
            result[name] = _int(value)
        elif kind == "bool":
            result[name] = bool(_int(value))
        elif kind == "time":
            seconds = _message(_bytes(value), TIME).get("seconds", 0)
            if seconds:
                stamp = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
                result[name] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif kind == "message":
            assert nested is not None
            result[name] = _message(_bytes(value), nested)
        elif kind == "repeated_string":
            result.setdefault(name, []).append(_text(value))
        elif kind == "repeated_message":
            assert nested is not None
            result.setdefault(name, []).append(_message(_bytes(value), nested))
        elif kind in ("map_string", "map_bytes"):
            entry = {number: item for number, item in _fields(_bytes(value))}
            key = _text(entry.get(1, b""))
            item = _bytes(entry.get(2, b""))
            result.setdefault(name, {})[key] = (
                item.decode() if kind == "map_string" else base64.b64encode(item).decode()
            )
    return result


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varints and fixed-width numbers, bytes for length-delimited."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(data, position)
            yield number, value
        elif wire_type == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise ProtobufError("truncated protobuf message")
            yield number, data[position : position + length]
            position += length
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            yield number, int.from_bytes(data[position : position + width], "little")
            position += width
        else:
            raise ProtobufError(f"unsupported protobuf wire type {wire_type}")


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ProtobufError("truncated protobuf varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a length-delimited protobuf field")
    return value


def _text(value: int | bytes) -> str:
    return _bytes(value).decode()


def _int(value: int | bytes) -> int:
    if not isinstance(value, int):
        raise ProtobufError("expected a numeric protobuf field")
    # int64 fields are two's complement varints: negative numbers use all 64 bits.
    return value - (1 << 64) if value >= 1 << 63 else value
