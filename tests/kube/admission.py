"""What kube-apiserver does to a request body before storing it: decoding checks, defaulting, validation.

Texts follow the API server's, because they reach users verbatim through Helm and the Python client:
* decoding (400 BadRequest): ``Deployment in version "v1" cannot be handled as a Deployment: strict decoding
  error: unknown field "spec.template.spec.containers[0].imagePullPolicyy"``;
* server-side apply (400): ``failed to create typed patch object (ml/x; apps/v1, Kind=Deployment):
  .spec.template.spec.containers[name="server"].imagePullPolicyy: field not declared in schema``;
* validation (422 Invalid): ``Deployment.apps "Bad_Name" is invalid: metadata.name: Invalid value: ...``.
Only the defaults and validations that clients or the simulated controllers depend on are modelled.
"""

from __future__ import annotations

import base64
import binascii
import re
from decimal import Decimal
from typing import Any

from kube.schema import Problem, Schemas, dotted, keyed, parse_amount
from kube.status import Cause, GoLiteral, bad_request, go_value, invalid
from kube.store import Resource

QUANTITY_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = DNS1123_LABEL + r"(\." + DNS1123_LABEL + r")*"
DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
NAME_RULES = {
    "subdomain": (
        DNS1123_SUBDOMAIN,
        253,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
        "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
        f"'{DNS1123_SUBDOMAIN}')",
    ),
    "label": (
        DNS1123_LABEL,
        63,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
        f"end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
        f"'{DNS1123_LABEL}')",
    ),
    "dns1035": (
        DNS1035_LABEL,
        63,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
        "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
        f"validation is '{DNS1035_LABEL}')",
    ),
}
LABEL_VALUE_ERROR = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    f"validation is '{LABEL_VALUE}')"
)
# Kinds whose names are not RFC 1123 subdomains.
NAME_KINDS = {"Service": "dns1035", "Namespace": "label"}
POD_TEMPLATE_KINDS = {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"}


class Admission:
    def __init__(self, schemas: Schemas) -> None:
        self.schemas = schemas
        self._service_ips = 0

    # --- decoding -----------------------------------------------------------------------------------------------

    def check_body(self, resource: Resource, obj: dict[str, Any], *, validation: str, apply: bool) -> list[str]:
        """Schema-check a request body the way decoding does. Returns the warnings of ``fieldValidation=Warn``
        (unknown fields are then dropped, as with ``Ignore``); raises a 400 ApiError otherwise."""
        root = self.schemas.root(resource.group, resource.version, resource.kind)
        if root is None:
            return []
        strict = validation == "Strict"
        found = [p for p in self.schemas.check(obj, root, prune=not strict) if p.kind != "required"]
        unknown = [p for p in found if p.kind == "unknown"]
        problems = [p for p in found if p.kind != "quantity" and (strict or p.kind != "unknown")]
        if apply and problems:
            raise bad_request(self._apply_error(resource, obj, problems))
        first = next((p for p in problems if p.kind == "type"), None)
        if first is not None:  # Go's JSON decoding stops at the first type error
            got = {"boolean": "bool"}.get(_json_name(first.got), _json_name(first.got))
            go_path = ".".join(part for part in first.path if isinstance(part, str))
            detail = f"json: cannot unmarshal {got} into Go struct field {first.go_struct}.{go_path} of type "
            raise bad_request(self._decode_error(resource, detail + first.go_type))
        if any(p.kind == "quantity" for p in found):
            raise bad_request(self._decode_error(resource, QUANTITY_ERROR))
        if resource.kind == "Secret":
            _check_base64(resource, obj)
        if problems:  # only unknown fields are left, and the request asked for Strict
            fields = ", ".join(f'unknown field "{dotted(p.path)}"' for p in problems)
            raise bad_request(self._decode_error(resource, f"strict decoding error: {fields}"))
        return [f'unknown field "{dotted(p.path)}"' for p in unknown] if validation == "Warn" else []

    def _apply_error(self, resource: Resource, obj: dict[str, Any], problems: list[Problem]) -> str:
        meta = obj.get("metadata") or {}
        who = f"{meta['namespace']}/{meta.get('name', '')}" if meta.get("namespace") else meta.get("name", "")
        texts = [f"{keyed(p.path)}: {_apply_problem(p)}" for p in problems]
        listed = texts[0] if len(texts) == 1 else "\n".join(["errors:", *(f"  {t}" for t in texts)])
        return f"failed to create typed patch object ({who}; {resource.api_version}, Kind={resource.kind}): {listed}"

    @staticmethod
    def _decode_error(resource: Resource, detail: str) -> str:
        return f'{resource.kind} in version "{resource.version}" cannot be handled as a {resource.kind}: {detail}'

    # --- defaulting and validation ------------------------------------------------------------------------------

    def admit(self, resource: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Default, normalise and validate ``obj`` (in place) for a create (``old`` None) or an update."""
        self._default(resource, obj, old)
        root = self.schemas.root(resource.group, resource.version, resource.kind)
        problems = self.schemas.check(obj, root) if root is not None else []
        # Status is the controllers' record, not user input: the API server does not validate it like a spec.
        causes = [Cause(dotted(p.path), "Required") for p in problems if p.kind == "required" and p.path[0] != "status"]
        causes += _validate(resource, obj, old)
        if causes:
            raise invalid(resource, obj["metadata"].get("name", ""), causes)
        if root is not None:
            self.schemas.normalise_quantities(obj, root)

    def _default(self, resource: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        kind = resource.kind
        spec = obj.get("spec")
        if kind == "Deployment" and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {})
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                rolling.setdefault("maxSurge", "25%")
                rolling.setdefault("maxUnavailable", "25%")
        elif kind == "ReplicaSet" and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
        if kind in POD_TEMPLATE_KINDS and isinstance(spec, dict):
            template_spec = (spec.get("template") or {}).get("spec")
            if isinstance(template_spec, dict):
                default_pod_spec(template_spec)
        elif kind == "Pod" and isinstance(spec, dict):
            default_pod_spec(spec)
            spec.setdefault("serviceAccountName", "default")
            obj["status"] = obj.get("status") or {"phase": "Pending"}
        elif kind == "Service" and isinstance(spec, dict):
            self._default_service(spec, (old or {}).get("spec") or {})
        elif kind == "Secret":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None) or {}
            if string_data:  # write-only convenience: folded into data, never stored
                data = obj["data"] = obj.get("data") or {}
                for key, value in string_data.items():
                    data[key] = base64.b64encode(value.encode()).decode()
        elif kind == "Namespace":
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj["status"] = {"phase": "Active"}

    def _default_service(self, spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            # clusterIP is allocated once and survives updates that do not mention it.
            if not spec.get("clusterIP"):
                spec["clusterIP"] = old_spec.get("clusterIP") or self._allocate_ip()
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))

    def _allocate_ip(self) -> str:
        self._service_ips += 1
        return f"10.96.{self._service_ips // 250}.{self._service_ips % 250 + 2}"


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        image = str(container.get("image", ""))
        tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
        container.setdefault("imagePullPolicy", "IfNotPresent" if tagged or "@" in image else "Always")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
        for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if isinstance(probe, dict):
                probe.setdefault("timeoutSeconds", 1)
                probe.setdefault("periodSeconds", 10)
                probe.setdefault("successThreshold", 1)
                probe.setdefault("failureThreshold", 3)
                if isinstance(probe.get("httpGet"), dict):
                    probe["httpGet"].setdefault("scheme", "HTTP")


def _validate(resource: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    meta = obj.get("metadata") or {}
    causes = _name_causes(resource.kind, meta.get("name"))
    causes += _label_causes("metadata.labels", meta.get("labels"))
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
    if spec is None:
        return causes
    if resource.kind in POD_TEMPLATE_KINDS:
        template = spec.get("template") or {}
        template_labels = (template.get("metadata") or {}).get("labels") or {}
        causes += _label_causes("spec.template.metadata.labels", template_labels)
        causes += _selector_causes(resource, spec, template_labels, old)
        if isinstance(template.get("spec"), dict):
            causes += _pod_spec_causes("spec.template.spec", template["spec"])
    elif resource.kind == "Pod":
        causes += _pod_spec_causes("spec", spec)
    elif resource.kind == "Service" and spec.get("type") != "ExternalName" and not spec.get("ports"):
        causes.append(Cause("spec.ports", "Required"))
    return causes


def _name_causes(kind: str, name: str | None) -> list[Cause]:
    if not name:
        return [Cause("metadata.name", "Required", detail="name or generateName is required")]
    pattern, limit, message = NAME_RULES[NAME_KINDS.get(kind, "subdomain")]
    causes = []
    if len(name) > limit:
        causes.append(Cause("metadata.name", "Invalid", name, f"must be no more than {limit} characters"))
    if not re.fullmatch(pattern, name):
        causes.append(Cause("metadata.name", "Invalid", name, message))
    return causes


def _label_causes(field: str, labels: dict[str, Any] | None) -> list[Cause]:
    causes = []
    for value in (labels or {}).values():
        text = str(value)
        if len(text) > 63:
            causes.append(Cause(field, "Invalid", text, "must be no more than 63 characters"))
        if not re.fullmatch(LABEL_VALUE, text):
            causes.append(Cause(field, "Invalid", text, LABEL_VALUE_ERROR))
    return causes


def _selector_causes(
    resource: Resource, spec: dict[str, Any], labels: dict[str, str], old: dict[str, Any] | None
) -> list[Cause]:
    selector = spec.get("selector")
    if not isinstance(selector, dict) or resource.kind not in ("Deployment", "ReplicaSet"):
        return []
    causes = []
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions")
    shown = GoLiteral(
        f"v1.LabelSelector{{MatchLabels:{go_value(match_labels)}, "
        f"MatchExpressions:[]v1.LabelSelectorRequirement{'{...}' if expressions else '(nil)'}}}"
    )
    if not match_labels and not expressions:
        causes.append(
            Cause("spec.selector", "Invalid", shown, f"empty selector is invalid for {resource.kind.lower()}")
        )
    elif any(labels.get(k) != v for k, v in match_labels.items()):
        causes.append(
            Cause("spec.template.metadata.labels", "Invalid", labels, "`selector` does not match template `labels`")
        )
    old_selector = ((old or {}).get("spec") or {}).get("selector")
    if old is not None and old_selector != selector:
        causes.append(Cause("spec.selector", "Invalid", shown, "field is immutable"))
    return causes


def _pod_spec_causes(path: str, spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    containers = spec.get("containers")
    if not containers:
        return [Cause(f"{path}.containers", "Required")]
    seen: set[str] = set()
    for index, container in enumerate(containers):
        where = f"{path}.containers[{index}]"
        name = str(container.get("name", ""))
        if name in seen:
            causes.append(Cause(f"{where}.name", "Duplicate", name))
        seen.add(name)
        if name and not re.fullmatch(DNS1123_LABEL, name):
            causes.append(Cause(f"{where}.name", "Invalid", name, NAME_RULES["label"][2]))
        for port_index, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort")
            if isinstance(number, int) and not 1 <= number <= 65535:
                detail = "must be between 1 and 65535, inclusive"
                causes.append(Cause(f"{where}.ports[{port_index}].containerPort", "Invalid", number, detail))
        causes += _resource_causes(f"{where}.resources", container.get("resources") or {})
    return causes


def _resource_causes(path: str, resources: dict[str, Any]) -> list[Cause]:
    """Extended resources (``nvidia.com/gpu``) are whole numbers, not overcommitted: request == limit."""
    limits = {k: parse_amount(v) for k, v in (resources.get("limits") or {}).items()}
    requests = {k: parse_amount(v) for k, v in (resources.get("requests") or {}).items()}
    causes = []
    for where, amounts in (("limits", limits), ("requests", requests)):
        for name, amount in amounts.items():
            if amount is not None and _is_extended(name) and amount != amount.to_integral_value():
                causes.append(Cause(f"{path}.{where}[{name}]", "Invalid", _text(amount), "must be an integer"))
    for name, requested in requests.items():
        limit = limits.get(name)
        if requested is None:
            continue
        if _is_extended(name) and limit is None:
            causes.append(
                Cause(f"{path}.limits", "Required", detail="Limit must be set for non overcommitable resources")
            )
        elif _is_extended(name) and limit is not None and requested != limit:
            detail = f"must be equal to {name} limit of {_text(limit)}"
            causes.append(Cause(f"{path}.requests", "Invalid", _text(requested), detail))
        elif limit is not None and requested > limit:
            detail = f"must be less than or equal to {name} limit of {_text(limit)}"
            causes.append(Cause(f"{path}.requests", "Invalid", _text(requested), detail))
    return causes


def _is_extended(name: str) -> bool:
    return "/" in name and not name.split("/", 1)[0].endswith("kubernetes.io") and not name.startswith("hugepages-")


def _text(amount: Decimal) -> str:
    return str(amount.normalize()) if amount != amount.to_integral_value() else str(int(amount))


def _check_base64(resource: Resource, obj: dict[str, Any]) -> None:
    for value in (obj.get("data") or {}).values():
        try:
            base64.b64decode(value or "", validate=True)
        except binascii.Error:
            detail = "illegal base64 data at input byte 0"
            raise bad_request(Admission._decode_error(resource, detail)) from None


def _apply_problem(problem: Problem) -> str:
    if problem.kind == "unknown":
        return "field not declared in schema"
    if problem.kind == "key":
        return (
            f"element {problem.got}: associative list with keys has an element that omits key field "
            f'"{problem.expected}" (and doesn\'t have default value)'
        )
    wanted = {"integer": "numeric (int or float)", "number": "numeric (int or float)", "boolean": "boolean"}
    expected = next((wanted[t] for t in problem.expected.split("/") if t in wanted), problem.expected.split("/")[0])
    if expected in ("array", "object"):
        expected = {"array": "list", "object": "map"}[expected]
    got = problem.got
    shown = _json_name(got) if expected.startswith("numeric") else f"&value.valueUnstructured{{Value:{got!r}}}"
    return f"expected {expected}, got {shown}"


def _json_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "null"
