"""Label and field selectors, in the query-string syntax and as ``LabelSelector`` objects."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]

# One requirement of a label selector: "key in (a,b)", "key notin (a)", "key=v", "key==v", "key!=v", "key", "!key".
_SET_REQUIREMENT = re.compile(r"^\s*(!?)\s*([^\s!=,()]+)\s*(?:(in|notin)\s*\(([^)]*)\)|(==|=|!=)\s*([^\s,]*))?\s*$")


class SelectorError(ValueError):
    pass


def label_matcher(selector: str | None) -> Matcher:
    """A predicate on objects for a ``labelSelector`` query parameter."""
    if not selector:
        return lambda obj: True
    checks: list[Callable[[dict[str, str]], bool]] = []
    for requirement in _split(selector):
        match = _SET_REQUIREMENT.match(requirement)
        if not match:
            raise SelectorError(f"unable to parse requirement: {requirement!r}")
        negated, key, set_op, values_text, op, value = match.groups()
        if set_op:
            values = {v.strip() for v in values_text.split(",") if v.strip()}
            checks.append(_set_check(key, set_op == "in", values))
        elif op:
            checks.append(_value_check(key, op != "!=", value))
        else:
            checks.append(_exists_check(key, not negated))
    return lambda obj: all(check(obj.get("metadata", {}).get("labels") or {}) for check in checks)


def field_matcher(selector: str | None) -> Matcher:
    """A predicate for a ``fieldSelector``: any dotted path (``involvedObject.name=x``, ``spec.nodeName=``)."""
    if not selector:
        return lambda obj: True
    checks: list[tuple[list[str], bool, str]] = []
    for requirement in _split(selector):
        op = "!=" if "!=" in requirement else "==" if "==" in requirement else "="
        path, _, value = requirement.partition(op)
        if not path:
            raise SelectorError(f"invalid field selector: {requirement!r}")
        checks.append((path.strip().split("."), op != "!=", value.strip()))

    def matches(obj: dict[str, Any]) -> bool:
        return all((_field(obj, path) == value) == wanted for path, wanted, value in checks)

    return matches


def selector_matcher(selector: dict[str, Any] | None) -> Matcher:
    """A predicate for a ``LabelSelector`` object (matchLabels and matchExpressions), as controllers use them."""
    if selector is None:
        return lambda obj: False  # a nil selector selects nothing
    checks: list[Callable[[dict[str, str]], bool]] = [
        _value_check(key, True, value) for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], set(expression.get("values") or [])
        if operator in ("In", "NotIn"):
            checks.append(_set_check(key, operator == "In", values))
        else:
            checks.append(_exists_check(key, operator == "Exists"))
    return lambda obj: all(check(obj.get("metadata", {}).get("labels") or {}) for check in checks)


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` value lists."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part for part in [*parts, current] if part.strip()]


def _set_check(key: str, inside: bool, values: set[str]) -> Callable[[dict[str, str]], bool]:
    # "notin" also matches objects without the label, as in Kubernetes.
    return lambda labels: (key in labels and labels[key] in values) == inside


def _value_check(key: str, equal: bool, value: str) -> Callable[[dict[str, str]], bool]:
    return lambda labels: (labels.get(key) == value) == equal


def _exists_check(key: str, present: bool) -> Callable[[dict[str, str]], bool]:
    return lambda labels: (key in labels) == present


def _field(obj: dict[str, Any], path: list[str]) -> str:
    value: Any = obj
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)
