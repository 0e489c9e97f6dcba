"""The HTTP side of the emulator: routing, the API verbs, watches, pod logs and fault injection.

It runs on aiohttp's low-level server in the emulator's event loop. Every request is answered from the
``Store``; the simulated controllers change the same store, so clients see their work as a real API server
would show it (resourceVersions, watch events).
"""

from __future__ import annotations

import asyncio
import copy
import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web
from kube import protobuf
from kube.admission import Admission
from kube.discovery import Discovery
from kube.schema import Schemas, merge_patch
from kube.selection import SelectorError, field_matcher, label_matcher
from kube.status import ApiError, already_exists, bad_request, conflict, details, not_found, unknown_path
from kube.store import Change, Resource, Store, now, stable_uid

JSON = "application/json"
# Verbs as RBAC names them, for each HTTP method: (on a collection, on a named object).
VERBS = {
    "GET": ("list", "get"),
    "POST": ("create", "create"),
    "PUT": ("update", "update"),
    "PATCH": ("patch", "patch"),
    "DELETE": ("deletecollection", "delete"),
}
HTTP_ALIASES = {
    "post": {"create"},
    "put": {"update"},
    "get": {"get", "list", "watch"},
    "delete": {"delete", "deletecollection"},
}

# (namespace, pod, container or None, previous) -> log text; raises ApiError when there are no logs to show.
LogSource = Callable[[str, str, str | None, bool], str]


@dataclass(frozen=True)
class Route:
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class Fault:
    verbs: set[str]
    plural: str
    error: ApiError
    remaining: int


class ApiServer:
    def __init__(self, store: Store, discovery: Discovery, schemas: Schemas, log_source: LogSource) -> None:
        self.store = store
        self.discovery = discovery
        self.schemas = schemas
        self.admission = Admission(schemas)
        self.log_source = log_source
        self.requests: list[tuple[str, str]] = []
        self.internal_errors: list[str] = []
        self._faults: list[Fault] = []
        # Server-side apply: the last configuration each field manager applied, per object uid.
        self._applied: dict[tuple[str, str], dict[str, Any]] = {}
        self._generated = 0

    def inject_fault(self, method: str, plural: str, error: ApiError, times: int) -> None:
        verbs = HTTP_ALIASES.get(method.lower(), {method.lower()})
        self._faults.append(Fault(verbs, plural, error, times))

    # --- entry point --------------------------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        try:
            body = await request.read()
            return await self._dispatch(request, body)
        except ApiError as error:
            return web.json_response(error.to_status(), status=error.code)
        except Exception as error:  # a bug in the emulator: answer like kube-apiserver, keep it for the test
            self.internal_errors.append(f"{request.method} {request.path_qs}\n{traceback.format_exc()}")
            status = ApiError(500, "InternalError", f"Internal error occurred: {error!r}")
            return web.json_response(status.to_status(), status=500)

    async def _dispatch(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        document = self._non_resource(path) if request.method == "GET" else None
        if document is not None:
            return web.json_response(document)
        route = self._route(path)
        params = dict(request.query)
        collection_verb, named_verb = VERBS.get(request.method, ("", ""))
        verb = named_verb if route.name else collection_verb
        if verb in ("get", "list") and params.get("watch") in ("true", "1"):
            verb = "watch"
        self._check_faults(verb, route)
        if route.subresource not in (None, "status", "log") or (route.subresource == "log" and verb != "get"):
            raise unknown_path()
        if route.subresource == "log":
            assert route.name is not None
            assert route.namespace is not None
            text = self.log_source(
                route.namespace, route.name, params.get("container"), params.get("previous") == "true"
            )
            if params.get("tailLines", "").isdigit():  # the kubelet's tail: the last N lines
                lines = text.splitlines(keepends=True)
                text = "".join(lines[max(0, len(lines) - int(params["tailLines"])) :])
            return web.Response(text=text, content_type="text/plain")
        if verb == "watch":
            return await self._watch(request, route, params)
        handlers = {
            "get": self._get,
            "list": self._list,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }
        if verb not in handlers or verb not in route.resource.verbs:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        data = _decode(request, body) if body else None
        status, result, warnings = handlers[verb](route, data, params, request.content_type)
        quoted = [json.dumps(warning) for warning in warnings]  # 299 - "unknown field \"spec.x\""
        headers = {"Warning": ", ".join(f"299 - {text}" for text in quoted)} if warnings else None
        return web.json_response(result, status=status, headers=headers)

    def _non_resource(self, path: str) -> dict[str, Any] | None:
        discovery = self.discovery
        parts = path.strip("/").split("/")
        if path == "/version":
            return discovery.server_version()
        if path == "/api":
            return discovery.core_versions()
        if path == "/apis":
            return discovery.group_list()
        if path == "/openapi/v3":
            return discovery.openapi_index()
        if path.startswith("/openapi/v3/"):
            return discovery.openapi_document(path.removeprefix("/openapi/v3")) or _raise(unknown_path())
        if parts[0] == "api" and len(parts) == 2:
            return discovery.resource_list("", parts[1]) or _raise(unknown_path())
        if parts[0] == "apis" and len(parts) == 2:
            return discovery.group(parts[1]) if parts[1] in discovery.group_versions() else _raise(unknown_path())
        if parts[0] == "apis" and len(parts) == 3:
            return discovery.resource_list(parts[1], parts[2]) or _raise(unknown_path())
        return None

    def _route(self, path: str) -> Route:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise unknown_path()
        namespace = None
        # "namespaces/ml/pods/x" is a namespaced resource; "namespaces/ml" and "namespaces/ml/status" are Namespaces.
        if rest[0] == "namespaces" and len(rest) >= 3 and self.discovery.lookup(group, version, rest[2]):
            namespace, rest = rest[1], rest[2:]
        resource = self.discovery.lookup(group, version, rest[0])
        if resource is None or len(rest) > 3 or (namespace is not None and not resource.namespaced):
            raise unknown_path()
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        return Route(resource, namespace if resource.namespaced else None, name, subresource)

    def _check_faults(self, verb: str, route: Route) -> None:
        """Injected faults answer before anything is read or changed."""
        plural = route.resource.plural + (f"/{route.subresource}" if route.subresource else "")
        for fault in self._faults:
            if fault.remaining > 0 and verb in fault.verbs and fault.plural == plural:
                fault.remaining -= 1
                error = copy.copy(fault.error)
                error.details = details(route.resource, route.name or "")
                raise error

    # --- reads --------------------------------------------------------------------------------------------------

    def _get(self, route: Route, data: Any, params: dict[str, str], content_type: str) -> tuple[int, Any, list[str]]:
        return 200, self._existing(route), []

    def _list(self, route: Route, data: Any, params: dict[str, str], content_type: str) -> tuple[int, Any, list[str]]:
        matches = _matcher(params)
        items = [obj for obj in self.store.objects(route.resource.key, route.namespace) if matches(obj)]
        return 200, self._list_of(route.resource, items), []

    def _list_of(self, resource: Resource, items: list[dict[str, Any]]) -> dict[str, Any]:
        # Lists are never paginated (``limit`` is ignored): a missing ``continue`` tells clients they have it all.
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": str(self.store.revision)},
            "items": items,
        }

    async def _watch(self, request: web.BaseRequest, route: Route, params: dict[str, str]) -> web.StreamResponse:
        if route.name:  # the deprecated ".../pods/x?watch=true" form
            params["fieldSelector"] = ",".join(
                filter(None, [params.get("fieldSelector"), f"metadata.name={route.name}"])
            )
        selected = _matcher(params)

        def matches(obj: dict[str, Any] | None) -> bool:
            namespace_ok = (
                route.namespace is None or (obj or {}).get("metadata", {}).get("namespace") == route.namespace
            )
            return obj is not None and namespace_ok and selected(obj)

        key = route.resource.key
        queue = self.store.subscribe(key)
        response = web.StreamResponse(headers={"Content-Type": JSON})
        try:
            await response.prepare(request)
            for initial in self._initial_events(route, params, matches):
                await response.write(_line(initial))
            timeout = float(params.get("timeoutSeconds") or 0) or None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    change = await asyncio.wait_for(queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if change is None:  # the emulator is stopping
                    break
                event = _event(change, matches)
                if event is not None:
                    await response.write(_line(event))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away (a cancelled handler is cleaned up by the finally clause as well)
        finally:
            self.store.unsubscribe(key, queue)
        return response

    def _initial_events(
        self, route: Route, params: dict[str, str], matches: Callable[[Any], bool]
    ) -> list[dict[str, Any]]:
        key = route.resource.key
        version = params.get("resourceVersion") or "0"
        if params.get("sendInitialEvents") == "true" or version == "0":
            # Start with the current state (a WatchList ends that with the initial-events-end bookmark).
            events = [
                {"type": "ADDED", "object": obj} for obj in self.store.objects(key, route.namespace) if matches(obj)
            ]
            if params.get("sendInitialEvents") == "true":
                bookmark = {
                    "kind": route.resource.kind,
                    "apiVersion": route.resource.api_version,
                    "metadata": {
                        "resourceVersion": str(self.store.revision),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }
                events.append({"type": "BOOKMARK", "object": bookmark})
            return events
        if not version.isdigit():
            raise bad_request(f"invalid resource version: {version}")
        changes = self.store.changes_since(key, int(version))
        return [event for change in changes if (event := _event(change, matches)) is not None]

    def _existing(self, route: Route) -> dict[str, Any]:
        assert route.name is not None
        obj = self.store.get(route.resource.key, route.namespace or "", route.name)
        if obj is None:
            raise not_found(route.resource, route.name)
        return obj

    # --- writes -------------------------------------------------------------------------------------------------

    def _create(self, route: Route, data: Any, params: dict[str, str], content_type: str) -> tuple[int, Any, list[str]]:
        if route.name or route.subresource:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        obj = self._body(route, data)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            self._generated += 1
            meta["name"] = meta["generateName"] + stable_uid(str(self._generated))[:5]
        warnings = self.admission.check_body(route.resource, obj, validation=_validation(params), apply=False)
        return 201, self._store_new(route, obj, params), warnings

    def _update(self, route: Route, data: Any, params: dict[str, str], content_type: str) -> tuple[int, Any, list[str]]:
        live = self._existing(route)
        obj = self._body(route, data)
        version = obj["metadata"].get("resourceVersion")
        if version and version != live["metadata"]["resourceVersion"]:
            raise conflict(route.resource, live["metadata"]["name"])
        warnings = self.admission.check_body(route.resource, obj, validation=_validation(params), apply=False)
        return 200, self._store_update(route, obj, live, params), warnings

    def _patch(self, route: Route, data: Any, params: dict[str, str], content_type: str) -> tuple[int, Any, list[str]]:
        if content_type == "application/apply-patch+yaml":
            return self._apply(route, data, params)
        live = self._existing(route)
        root = self.schemas.root(route.resource.group, route.resource.version, route.resource.kind)
        if content_type == "application/json-patch+json":
            patched = _json_patch(live, data)
        elif content_type == "application/merge-patch+json":
            patched = merge_patch(live, data)
        elif content_type == "application/strategic-merge-patch+json":
            patched = self.schemas.strategic_merge(live, data, root)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted "
                "media types include: application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml, application/strategic-merge-patch+json",
            )
        obj = self._body(route, patched)
        warnings = self.admission.check_body(route.resource, obj, validation=_validation(params), apply=False)
        return 200, self._store_update(route, obj, live, params), warnings

    def _apply(self, route: Route, data: Any, params: dict[str, str]) -> tuple[int, Any, list[str]]:
        manager = params.get("fieldManager")
        if not manager:
            message = (
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
            )
            raise ApiError(422, "Invalid", message)
        applied = self._body(route, data)
        warnings = self.admission.check_body(route.resource, applied, validation=_validation(params), apply=True)
        live = self.store.get(route.resource.key, route.namespace or "", route.name or "")
        if live is None:
            result = self._store_new(route, copy.deepcopy(applied), params)
            status = 201
        else:
            root = self.schemas.root(route.resource.group, route.resource.version, route.resource.kind)
            previous = self._applied.get((live["metadata"]["uid"], manager))
            merged = self.schemas.apply(live, previous, applied, root)
            result = self._store_update(route, merged, live, params)
            status = 200
        if params.get("dryRun") != "All":
            self._applied[(result["metadata"]["uid"], manager)] = applied
        return status, result, warnings

    def _body(self, route: Route, data: Any) -> dict[str, Any]:
        """The request object, checked against the URL it was sent to."""
        if not isinstance(data, dict):
            raise bad_request("Object 'Kind' is missing in the request body")
        obj = copy.deepcopy(data)
        resource = route.resource
        api_version, kind = obj.setdefault("apiVersion", resource.api_version), obj.setdefault("kind", resource.kind)
        if (api_version, kind) != (resource.api_version, resource.kind):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({resource.api_version})"
                if api_version != resource.api_version
                else f"the kind in the data ({kind}) does not match the expected kind ({resource.kind})"
            )
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if route.name and meta.setdefault("name", route.name) != route.name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({route.name})"
            )
        if route.namespace and meta.setdefault("namespace", route.namespace) != route.namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        for server_owned in ("managedFields", "selfLink"):
            meta.pop(server_owned, None)
        return obj

    def _store_new(self, route: Route, obj: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        return self.create_object(route.resource, obj, dry_run=params.get("dryRun") == "All")

    def _store_update(
        self, route: Route, obj: dict[str, Any], live: dict[str, Any], params: dict[str, str]
    ) -> dict[str, Any]:
        dry_run = params.get("dryRun") == "All"
        return self.update_object(route.resource, obj, live, status=route.subresource == "status", dry_run=dry_run)

    # --- the write path, shared by HTTP requests and the in-process controllers ---------------------------------

    def create_object(self, resource: Resource, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        meta = obj["metadata"]
        namespace = meta.get("namespace", "") if resource.namespaced else ""
        if namespace and self.store.get(("", "namespaces"), "", namespace) is None:
            raise ApiError(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )
        name = meta.get("name", "")
        if name and self.store.get(resource.key, namespace, name) is not None:
            raise already_exists(resource, name)
        for server_owned in ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp"):
            meta.pop(server_owned, None)
        if "status" in resource.subresources:  # status is the controllers' to write
            root = self.schemas.root(resource.group, resource.version, resource.kind)
            obj["status"] = self.schemas.empty_status(root) if root is not None else {}
        self.admission.admit(resource, obj, None)
        return obj if dry_run else self.store.create(resource.key, obj)

    def update_object(
        self, resource: Resource, obj: dict[str, Any], live: dict[str, Any], *, status: bool, dry_run: bool = False
    ) -> dict[str, Any]:
        """Replace ``live`` by ``obj``: writes to the main resource keep the status, /status writes only change it."""
        if status:
            obj = {**copy.deepcopy(live), "status": obj.get("status")}
        elif "status" in resource.subresources and "status" in live:
            obj["status"] = copy.deepcopy(live["status"])
        self.admission.admit(resource, obj, live)
        return obj if dry_run else self.store.update(resource.key, obj)

    def _delete(self, route: Route, data: Any, params: dict[str, str], content_type: str) -> tuple[int, Any, list[str]]:
        live = self._existing(route)
        options = data if isinstance(data, dict) else {}
        policy = params.get("propagationPolicy") or options.get("propagationPolicy")
        if params.get("dryRun") == "All" or "All" in (options.get("dryRun") or []):
            return 200, live, []
        grace = params.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        immediately = grace is not None and int(grace) == 0
        deleted = self.delete_object(route.resource, live, orphan=policy == "Orphan", immediately=immediately)
        if route.resource.kind == "Pod":  # pods answer with the object, most resources with a Status
            return 200, deleted, []
        meta = deleted["metadata"]
        success = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details(route.resource, meta["name"], uid=meta["uid"]),
        }
        return 200, success, []

    def _delete_collection(
        self, route: Route, data: Any, params: dict[str, str], content_type: str
    ) -> tuple[int, Any, list[str]]:
        matches = _matcher(params)
        items = [obj for obj in self.store.objects(route.resource.key, route.namespace) if matches(obj)]
        for obj in items:
            self.delete_object(route.resource, obj, orphan=False)
        return 200, self._list_of(route.resource, items), []

    def delete_object(
        self, resource: Resource, obj: dict[str, Any], *, orphan: bool, immediately: bool = False
    ) -> dict[str, Any]:
        """Delete an object. A pod on a node only gets its ``deletionTimestamp`` (Terminating): its kubelet stops
        it and then deletes it for good. Everything else goes at once (finalizers are not modelled); dependents
        follow through the garbage collector, unless orphaned."""
        meta = obj["metadata"]
        namespace = meta.get("namespace", "")
        if resource.kind == "Pod" and obj["spec"].get("nodeName") and not immediately:
            if meta.get("deletionTimestamp"):
                return obj
            terminating = copy.deepcopy(obj)
            grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
            terminating["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=grace)
            return self.store.update(resource.key, terminating)
        if orphan:
            for key in self.store.resource_keys():
                for dependent in self.store.objects(key, namespace):
                    refs = dependent["metadata"].get("ownerReferences") or []
                    if any(ref.get("uid") == meta["uid"] for ref in refs):
                        updated = copy.deepcopy(dependent)
                        updated["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != meta["uid"]]
                        self.store.update(key, updated)
        if resource.kind == "Namespace":  # a namespace takes its content with it (at once, not "Terminating")
            for key in self.store.resource_keys():
                for item in self.store.objects(key, meta["name"]):
                    if item["metadata"].get("namespace"):
                        self.store.delete(key, meta["name"], item["metadata"]["name"])
        return self.store.delete(resource.key, namespace, meta["name"])


def _raise(error: ApiError) -> Any:
    raise error


def _decode(request: web.BaseRequest, body: bytes) -> Any:
    content_type = request.content_type
    try:
        if content_type == protobuf.CONTENT_TYPE:
            return protobuf.decode(body)
        if content_type.endswith("yaml"):
            return yaml.safe_load(body)
        return json.loads(body)
    except (ValueError, yaml.YAMLError) as error:
        raise bad_request(f"the body of the request could not be decoded: {error}") from None


def _validation(params: dict[str, str]) -> str:
    """fieldValidation: Strict rejects unknown fields, Warn (the server's default) and Ignore drop them."""
    return params.get("fieldValidation") or "Warn"


def _matcher(params: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
    try:
        by_label = label_matcher(params.get("labelSelector"))
        by_field = field_matcher(params.get("fieldSelector"))
    except SelectorError as error:
        raise bad_request(str(error)) from None
    return lambda obj: by_label(obj) and by_field(obj)


def _event(change: Change, matches: Callable[[Any], bool]) -> dict[str, Any] | None:
    """The watch event a filtered watcher sees: objects entering or leaving the selection are ADDED or DELETED."""
    if change.type == "DELETED":
        kind = "DELETED" if matches(change.object) else None
    else:
        was, now = change.old is not None and matches(change.old), matches(change.object)
        kind = ("MODIFIED" if was else "ADDED") if now else ("DELETED" if was else None)
    return {"type": kind, "object": change.object} if kind else None


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"


def _json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902 (add, remove, replace, test; enough for clients' status and scale patches)."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp")
    result = copy.deepcopy(target)
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].lstrip("/").split("/")]
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        op = operation["op"]
        if op == "test" and (node[int(last)] if isinstance(node, list) else node.get(last)) != operation.get("value"):
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: "
                f"testing value {operation['path']} failed",
            )
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add":
                node.insert(index, operation["value"])
            elif op == "remove":
                del node[index]
            elif op == "replace":
                node[index] = operation["value"]
        elif op in ("add", "replace"):
            node[last] = operation["value"]
        elif op == "remove":
            node.pop(last, None)
    return result


class LocalClient:
    """The simulated controllers' API client: the same write path as HTTP requests, minus the network."""

    def __init__(self, api: ApiServer) -> None:
        self._api = api

    def resource(self, api_version: str, kind: str) -> Resource:
        resource = self._api.discovery.by_kind(api_version, kind)
        if resource is None:
            raise KeyError(f"{api_version} {kind} is not served")
        return resource

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self._api.store.get(self.resource(api_version, kind).key, namespace, name)
        return copy.deepcopy(obj) if obj is not None else None

    def objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return copy.deepcopy(self._api.store.objects(self.resource(api_version, kind).key, namespace))

    def uids(self) -> set[str]:
        store = self._api.store
        return {obj["metadata"]["uid"] for key in store.resource_keys() for obj in store.objects(key)}

    def dependents(self) -> list[dict[str, Any]]:
        """Every object with ownerReferences, of any resource (what the garbage collector looks at)."""
        store = self._api.store
        owned = [
            obj for key in store.resource_keys() for obj in store.objects(key) if obj["metadata"].get("ownerReferences")
        ]
        return copy.deepcopy(owned)

    def server_version(self) -> dict[str, Any]:
        return self._api.discovery.server_version()

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._api.create_object(self.resource(obj["apiVersion"], obj["kind"]), copy.deepcopy(obj))

    def update(self, obj: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
        resource = self.resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        live = self._api.store.get(resource.key, meta.get("namespace", ""), meta["name"])
        if live is None:
            raise not_found(resource, meta["name"])
        return self._api.update_object(resource, copy.deepcopy(obj), live, status=status)

    def delete(self, obj: dict[str, Any], *, immediately: bool = False) -> None:
        """Delete like a client with default options; ``immediately`` is the kubelet's final delete of a pod."""
        resource = self.resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        live = self._api.store.get(resource.key, meta.get("namespace", ""), meta["name"])
        if live is not None:
            self._api.delete_object(resource, live, orphan=False, immediately=immediately)
