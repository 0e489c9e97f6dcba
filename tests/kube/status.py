"""API errors as ``meta/v1 Status`` objects, with the texts kube-apiserver uses (clients match on reason and code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kube.store import Resource


@dataclass
class ApiError(Exception):
    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_status(self) -> dict[str, Any]:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        return {**status, "details": self.details} if self.details else status


@dataclass(frozen=True)
class Cause:
    """One field error of a 422 Invalid, e.g. ``metadata.name: Invalid value: "x": <detail>``."""

    field: str
    kind: str  # Required, Invalid, Duplicate, Unsupported, Forbidden
    value: Any = None
    detail: str = ""

    @property
    def message(self) -> str:
        text = f"{self.kind} value" if self.kind != "Forbidden" else "Forbidden"
        if self.kind in ("Invalid", "Duplicate", "Unsupported"):
            text += f": {go_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def details(resource: Resource, name: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": name, "group": resource.group, "kind": resource.plural}
    return {k: v for k, v in {**base, **extra}.items() if v != ""}


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource.qualified} "{name}" not found', details(resource, name))


def already_exists(resource: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{resource.qualified} "{name}" already exists', details(resource, name))


def conflict(resource: Resource, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, details(resource, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(resource: Resource, name: str, causes: list[Cause]) -> ApiError:
    listed = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(str(c) for c in causes) + "]"
    reasons = {"Required": "FieldValueRequired", "Duplicate": "FieldValueDuplicate", "Forbidden": "FieldValueForbidden"}
    detail = {
        "name": name,
        "group": resource.group,
        "kind": resource.kind,
        "causes": [
            {"reason": reasons.get(c.kind, f"FieldValue{c.kind}"), "message": c.message, "field": c.field}
            for c in causes
        ],
    }
    return ApiError(422, "Invalid", f'{resource.qualified_kind} "{name}" is invalid: {listed}', detail)


def unknown_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


class GoLiteral(str):
    """A value already printed the Go way (e.g. a struct), shown as is in a validation message."""


def go_value(value: Any) -> str:
    """A value as Go's %#v prints it in validation messages."""
    if isinstance(value, GoLiteral):
        return str(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        items = ", ".join(f'"{k}":"{v}"' for k, v in sorted(value.items()))
        return "map[string]string{" + items + "}"
    return str(value)
