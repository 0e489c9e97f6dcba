"""The API's structural schema: validation, and the merges that depend on list semantics.

The schemas are kubernetes-validate's strict JSON schemas (the OpenAPI definitions of each Kubernetes release,
with ``additionalProperties: false``). The emulator walks them itself instead of running jsonschema, because it
needs what a JSON-schema validator does not give: every problem at once with its path in the two notations the
API server uses, the Kubernetes list semantics (``x-kubernetes-list-type: map`` with its keys, strategic-merge
keys), and which fields are quantities.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity
from kubernetes_validate.utils import all_versions
from packaging.version import Version

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
QUANTITY_PATTERN = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
# Key fields of associative lists that the API server defaults, so a list item may omit them.
KEY_DEFAULTS = {"protocol": "TCP"}


@dataclass(frozen=True)
class Node:
    """A resolved schema node, with the name of the definition it came from (for Go type names in errors)."""

    schema: dict[str, Any]
    name: str | None = None

    @property
    def types(self) -> set[str]:
        declared = self.schema.get("type")
        if declared is None and "oneOf" in self.schema:  # Quantity and IntOrString: string or number
            return {t for option in self.schema["oneOf"] for t in _as_list(option.get("type"))}
        return set(_as_list(declared))

    @property
    def list_type(self) -> str:
        return str(self.schema.get("x-kubernetes-list-type", "atomic"))

    @property
    def list_keys(self) -> list[str]:
        return list(self.schema.get("x-kubernetes-list-map-keys", []))

    @property
    def merge_key(self) -> str | None:
        strategy = self.schema.get("x-kubernetes-patch-strategy", "")
        return self.schema.get("x-kubernetes-patch-merge-key") if "merge" in strategy else None

    @property
    def merges_primitives(self) -> bool:
        return "merge" in self.schema.get("x-kubernetes-patch-strategy", "") and not self.merge_key

    @property
    def atomic_map(self) -> bool:
        return self.schema.get("x-kubernetes-map-type") == "atomic"


@dataclass(frozen=True)
class Item:
    """A list element in a path: its index, and its key fields when the list is associative."""

    index: int
    keys: dict[str, Any] = field(default_factory=dict)


Path = tuple["str | Item", ...]


@dataclass(frozen=True)
class Problem:
    """One schema violation. ``kind``: unknown (field), type, required, quantity (malformed), or key (an item of an
    associative list lacks a key field; ``path`` is the list's, ``got`` the item's index)."""

    kind: str
    path: Path
    expected: str = ""  # for type: the JSON type(s) wanted; for required and key: the field name
    got: Any = None  # for type: the value found
    go_struct: str = ""  # for type: the innermost Go struct, as json's unmarshal errors name it
    go_type: str = ""


def dotted(path: Path) -> str:
    """``spec.template.spec.containers[0].image``: the notation of validation and strict-decoding errors."""
    text = ""
    for part in path:
        text += f"[{part.index}]" if isinstance(part, Item) else ("." if text else "") + part
    return text


def keyed(path: Path) -> str:
    """``.spec.template.spec.containers[name="server"].image``: the notation of server-side apply errors."""
    text = ""
    for part in path:
        if isinstance(part, Item) and part.keys:
            text += "[" + ",".join(f"{key}={json.dumps(value)}" for key, value in part.keys.items()) + "]"
        elif isinstance(part, Item):
            text += f"[{part.index}]"
        else:
            text += "." + part
    return text


class Schemas:
    """The OpenAPI definitions of one Kubernetes minor version."""

    def __init__(self, kube_version: str) -> None:
        self.version = _closest_version(kube_version)
        self._defs = _load_definitions(self.version)
        self._roots: dict[tuple[str, str, str], str] = {}
        for name, schema in self._defs.items():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                self._roots[(gvk["group"], gvk["version"], gvk["kind"])] = name

    def root(self, group: str, version: str, kind: str) -> Node | None:
        name = self._roots.get((group, version, kind))
        return Node(self._defs[name], name) if name else None

    def resolve(self, schema: dict[str, Any]) -> Node:
        ref = schema.get("$ref")
        if ref is None:
            return Node(schema)
        target = ref.rsplit("/", 1)[-1]
        return Node(self._defs[target], target)

    def child(self, node: Node, key: str) -> Node | None:
        """The schema of ``key`` inside an object node; None when the field is not declared."""
        properties = node.schema.get("properties")
        if properties is not None and key in properties:
            return self.resolve(properties[key])
        extra = node.schema.get("additionalProperties")
        if isinstance(extra, dict):
            return self.resolve(extra)
        if properties is None and extra is None:  # free-form object (e.g. RawExtension, JSON)
            return Node({})
        return None

    def items(self, node: Node) -> Node:
        return self.resolve(node.schema.get("items", {}))

    # --- validation ---------------------------------------------------------------------------------------------

    def check(self, obj: dict[str, Any], root: Node, *, prune: bool = False) -> list[Problem]:
        """Every problem in ``obj``. With ``prune``, unknown fields are also removed (fieldValidation Warn/Ignore)."""
        problems: list[Problem] = []
        self._check(obj, root, (), "", problems, prune)
        return problems

    def _check(self, value: Any, node: Node, path: Path, struct: str, problems: list[Problem], prune: bool) -> None:
        types = node.types
        if value is None:
            return  # every optional field in these schemas is nullable; required ones are checked by the parent
        if types and _json_type(value) not in types and not (_json_type(value) == "integer" and "number" in types):
            wanted = "/".join(sorted(types - {"null"}))
            problems.append(Problem("type", path, wanted, value, struct, self._go_type(node)))
            return
        if node.name == QUANTITY and isinstance(value, str) and not QUANTITY_PATTERN.match(value):
            problems.append(Problem("quantity", path, got=value))
        if isinstance(value, dict):
            struct = _short(node.name) if node.name and "properties" in node.schema else struct
            for key in node.schema.get("required", []):
                if value.get(key) is None:
                    problems.append(Problem("required", (*path, key), key))
            for key in list(value):
                child = self.child(node, key)
                if child is None:
                    problems.append(Problem("unknown", (*path, key)))
                    if prune:
                        del value[key]
                    continue
                self._check(value[key], child, (*path, key), struct, problems, prune)
        elif isinstance(value, list):
            item_node = self.items(node)
            keys = node.list_keys if node.list_type == "map" else []
            for index, item in enumerate(value):
                item_keys = (
                    {key: item.get(key, KEY_DEFAULTS.get(key)) for key in keys} if isinstance(item, dict) else {}
                )
                for key, key_value in item_keys.items():
                    if key_value is None:
                        problems.append(Problem("key", path, key, index))
                item_path = (*path, Item(index, {k: v for k, v in item_keys.items() if v is not None}))
                self._check(item, item_node, item_path, struct, problems, prune)

    def _go_type(self, node: Node) -> str:
        if node.name in (QUANTITY, INT_OR_STRING):
            return {QUANTITY: "resource.Quantity", INT_OR_STRING: "intstr.IntOrString"}[node.name]
        types = node.types - {"null"}
        if "array" in types:
            return "[]" + self._go_type(self.items(node))
        if "object" in types:
            if node.name and "properties" in node.schema:
                return _short(node.name, qualified=True)
            extra = node.schema.get("additionalProperties")
            return "map[string]" + (self._go_type(self.resolve(extra)) if isinstance(extra, dict) else "interface {}")
        if "integer" in types:
            return str(node.schema.get("format", "int64"))
        go_types = {"string": "string", "boolean": "bool", "number": "float64"}
        return go_types.get(next(iter(types), ""), "interface {}")

    def empty_status(self, root: Node) -> dict[str, Any]:
        """A new object's status as Go serialises it: required (non-omitempty) fields at their zero values,
        e.g. ``{"desiredReplicas": 0}`` for an HPA; the Python client's models insist on them."""
        status = self.child(root, "status")
        if status is None:
            return {}
        zeros = {"integer": 0, "number": 0, "string": "", "boolean": False}
        required = status.schema.get("required", [])
        fields = {key: self.child(status, key) for key in required}
        return {key: next((zeros[t] for t in node.types if t in zeros), None) for key, node in fields.items() if node}

    # --- normalisation ------------------------------------------------------------------------------------------

    def normalise_quantities(self, value: Any, node: Node) -> Any:
        """Numbers in quantity fields become strings, as a real server always returns them (pydantic needs that)."""
        if node.name == QUANTITY and isinstance(value, (int, float)) and not isinstance(value, bool):
            return _quantity_text(value)
        if isinstance(value, dict):
            for key, item in value.items():
                child = self.child(node, key)
                if child is not None:
                    value[key] = self.normalise_quantities(item, child)
        elif isinstance(value, list):
            item_node = self.items(node)
            value[:] = [self.normalise_quantities(item, item_node) for item in value]
        return value

    # --- merges ---------------------------------------------------------------------------------------------------

    def strategic_merge(self, target: Any, patch: Any, node: Node | None) -> Any:
        """A strategic merge patch: lists with a patch merge key merge by that key, ``$patch`` directives apply."""
        if not isinstance(patch, dict) or not isinstance(target, dict):
            return copy.deepcopy(patch)
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        result = copy.deepcopy(target)
        for key, value in patch.items():
            if key.startswith("$"):  # $setElementOrder, $retainKeys, ...: ordering hints the emulator ignores
                continue
            child = self.child(node, key) if node is not None else None
            if value is None:
                result.pop(key, None)
            elif isinstance(value, list) and child is not None and child.merge_key:
                result[key] = self._merge_keyed(result.get(key) or [], value, child)
            elif isinstance(value, list) and child is not None and child.merges_primitives:
                result[key] = list(dict.fromkeys([*(result.get(key) or []), *value]))
            else:
                result[key] = self.strategic_merge(result.get(key), value, child)
        return result

    def _merge_keyed(self, target: list[Any], patch: list[Any], node: Node) -> list[Any]:
        key = node.merge_key
        item_node = self.items(node)
        result = copy.deepcopy(target)
        for item in patch:
            position = next((i for i, old in enumerate(result) if old.get(key) == item.get(key)), None)
            if item.get("$patch") == "delete":
                if position is not None:
                    del result[position]
            elif position is None:
                result.append({k: v for k, v in item.items() if not k.startswith("$")})
            else:
                result[position] = self.strategic_merge(result[position], item, item_node)
        return result

    def apply(self, live: Any, previous: Any, applied: Any, node: Node | None) -> Any:
        """Server-side apply, approximated: ``applied`` is merged into ``live``, and fields this manager applied
        before (``previous``) but no longer applies are removed. Associative lists merge by their keys; atomic
        lists and atomic maps are replaced. Ownership conflicts between managers are not modelled."""
        if not isinstance(applied, dict) or not isinstance(live, dict) or (node is not None and node.atomic_map):
            return copy.deepcopy(applied)
        previous = previous if isinstance(previous, dict) else {}
        result = copy.deepcopy(live)
        for key in previous.keys() - applied.keys():
            result.pop(key, None)
        for key, value in applied.items():
            child = self.child(node, key) if node is not None else None
            if isinstance(value, list) and child is not None and child.list_type == "map" and child.list_keys:
                result[key] = self._apply_keyed(result.get(key) or [], previous.get(key) or [], value, child)
            else:
                result[key] = self.apply(result.get(key), previous.get(key), value, child)
        return result

    def _apply_keyed(self, live: list[Any], previous: list[Any], applied: list[Any], node: Node) -> list[Any]:
        def identity(item: Any) -> tuple[Any, ...]:
            return tuple(item.get(k, KEY_DEFAULTS.get(k)) for k in node.list_keys) if isinstance(item, dict) else ()

        item_node = self.items(node)
        live_by_key = {identity(item): item for item in live}
        previous_by_key = {identity(item): item for item in previous}
        applied_keys = {identity(item) for item in applied}
        result = [
            self.apply(live_by_key.get(identity(item), {}), previous_by_key.get(identity(item)), item, item_node)
            for item in applied
        ]
        # Items other managers own stay; items only this manager had applied go away with it.
        result += [item for key, item in live_by_key.items() if key not in applied_keys and key not in previous_by_key]
        return result


def parse_amount(quantity: Any) -> Decimal | None:
    """A quantity ("500m", "32Gi", 2) as a number; None when malformed."""
    try:
        return Decimal(str(parse_quantity(quantity)))
    except ValueError:
        return None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@functools.lru_cache(maxsize=4)
def _load_definitions(version: str) -> dict[str, Any]:
    # Loaded once per process: the file is 1.5 MB and every FakeCluster of a test session shares it.
    files = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    definitions: dict[str, Any] = json.loads((files / "_definitions.json").read_text())["$defs"]
    return definitions


def _closest_version(kube_version: str) -> str:
    """The newest bundled schema release not newer than the requested minor version (as kubernetes-validate does)."""
    wanted = Version(kube_version.lstrip("v"))
    candidates = [v for v in all_versions() if Version(v).release[:2] <= wanted.release[:2]]
    if not candidates:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {kube_version}")
    return str(candidates[-1])


def _as_list(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "null"


def _short(name: str, *, qualified: bool = False) -> str:
    """``io.k8s.api.core.v1.Container`` -> ``Container`` (or ``v1.Container``, as Go prints the type)."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if qualified else parts[-1]


def _quantity_text(number: float) -> str:
    if float(number).is_integer():
        return str(int(number))
    milli = number * 1000
    return f"{int(milli)}m" if float(milli).is_integer() else str(number)
