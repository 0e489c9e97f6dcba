"""The only module that imports the official Kubernetes client.

``KubeCluster`` implements ``mlctl.ports.Cluster``, the narrow interface deploys use: reachability,
namespaces, nodes, the rollout's Deployment, ReplicaSets, pods, events and logs. Each object is read
as the API's JSON and parsed once into a frozen view (``mlctl.views``), so the core never reads the
client's model classes or dict keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from mlctl.errors import ClusterError, EnvironmentProblem
from mlctl.ports import ClusterInfo
from mlctl.views import Autoscaler, Deployment, Event, Node, Pod, ReplicaSet


def _kubeconfig_path() -> str:
    # Read KUBECONFIG now: the client library reads it once, at import.
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def _pod_namespace() -> str:
    """The namespace of the pod mlctl runs in (from its service account), else "default"."""
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _in_cluster(context: str | None) -> bool:
    return context is None and "KUBERNETES_SERVICE_HOST" in os.environ and not os.environ.get("KUBECONFIG")


class KubeCluster:
    """A Kubernetes API server, reached as kubectl would reach it (``mlctl.ports.Cluster``)."""

    def __init__(self, api: Any, *, context: str, server: str, namespace: str, kubeconfig: str | None) -> None:
        self._api = api
        self.context = context
        self.server = server
        #: The namespace of the context (or of the pod, in-cluster).
        self.namespace = namespace
        #: The kubeconfig file used (None in-cluster), for Helm to use the same.
        self.kubeconfig = kubeconfig
        #: Seconds to wait for an answer to one request.
        self.timeout = 10.0
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}  # (apiVersion, kind) -> (path, namespaced)

    @classmethod
    def connect(cls, context: str | None = None, *, timeout: float = 10.0) -> KubeCluster:
        """Load the kube context (or the in-cluster service account) without contacting the server.

        Raises:
            EnvironmentProblem: no usable kubeconfig or no such context.
        """
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        configuration = client.Configuration()
        if _in_cluster(context):
            try:
                config.load_incluster_config(client_configuration=configuration)
            except ConfigException as exc:
                raise EnvironmentProblem(f"in-cluster config failed: {exc}") from None
            namespace, name, path = _pod_namespace(), "in-cluster", None
        else:
            path = _kubeconfig_path()
            try:
                contexts, active = config.list_kube_config_contexts(config_file=path)
                if context is not None and context not in [c["name"] for c in contexts]:
                    known = ", ".join(c["name"] for c in contexts) or "none"
                    raise EnvironmentProblem(f"no kube context {context!r} in {path}; contexts: {known}")
                chosen = next(c for c in contexts if c["name"] == (context or active["name"]))
                config.load_kube_config(config_file=path, context=chosen["name"], client_configuration=configuration)
            except (ConfigException, TypeError, StopIteration) as exc:
                raise EnvironmentProblem(
                    f"no usable kubeconfig: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                    hint="set KUBECONFIG or create ~/.kube/config (your platform team has one for you)",
                ) from None
            name = chosen["name"]
            namespace = chosen.get("context", {}).get("namespace") or "default"
        configuration.retries = 0
        cluster = cls(
            client.ApiClient(configuration),
            context=name,
            server=configuration.host,
            namespace=namespace,
            kubeconfig=path,
        )
        cluster.timeout = timeout
        return cluster

    def close(self) -> None:
        self._api.close()

    # --- requests --------------------------------------------------------------------------------------

    def _get(self, path: str, query: dict[str, str] | None = None) -> Any:
        return json.loads(self._raw("GET", path, query))

    def _raw(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> str:
        from kubernetes.client.exceptions import ApiException

        headers_in = {"Accept": "application/json, */*"}
        if body is not None:
            headers_in["Content-Type"] = content_type
        try:
            method_, url, headers, body, post = self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers_in,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(
                method_, url, header_params=headers, body=body, post_params=post, _request_timeout=self.timeout
            )
            response.read()
        except ApiException as exc:
            raise self._api_error(exc.status, exc.reason, exc.body, method, path) from None
        except Exception as exc:  # urllib3 raises several unrelated types for network failures
            if type(exc).__module__.startswith(("urllib3", "socket", "ssl")) or isinstance(exc, OSError):
                reason = str(getattr(exc, "reason", exc)).split(": ")[-1]
                raise ClusterError(
                    f"cannot reach the API server at {self.server} (context {self.context}): {reason}",
                    hint="check the VPN/network, or pick another context with --context",
                ) from None
            raise
        text = (response.data or b"").decode("utf-8", errors="replace")
        if not 200 <= response.status < 300:
            raise self._api_error(response.status, response.reason, text, method, path)
        return text

    def _api_error(
        self, status: int, reason: str | None, body: str | bytes | None, method: str, path: str
    ) -> ClusterError:
        try:
            data = json.loads(body or "{}")
        except ValueError:
            data = {}
        message = (data.get("message") if isinstance(data, dict) else None) or reason or ""
        if status == 403:
            return ClusterError(
                f"forbidden: {message}",
                hint="ask the cluster's admins for that permission (or use a context that has it)",
            )
        if status == 401:
            return ClusterError(
                f"the cluster at {self.server} refused our credentials: {message}",
                hint="log in again (your token may have expired)",
            )
        if status == 404:
            return ClusterError(f"not found: {message or path}")
        if status == 409:
            return ClusterError(f"conflict: {message}")
        return ClusterError(f"the API server at {self.server} answered {status} to {method} {path}: {message}")

    # --- what deploys read -----------------------------------------------------------------------------

    def info(self) -> ClusterInfo:
        """Ask the server for its version: the reachability check."""
        version = self._get("/version").get("gitVersion")
        return ClusterInfo(self.context, self.server, str(version) if version else None)

    def namespace_exists(self, namespace: str) -> bool:
        try:
            self._get(f"/api/v1/namespaces/{namespace}")
        except ClusterError as exc:
            if exc.message.startswith("not found"):
                return False
            raise
        return True

    def _resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """The path prefix and namespacedness of a kind, from the server's discovery documents (cached)."""
        cache = self._resources
        if (api_version, kind) not in cache:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            for item in self._get(base).get("resources", []):
                if "/" not in item.get("name", ""):
                    cache[(api_version, str(item.get("kind")))] = (
                        f"{base}/{{ns}}{item['name']}",
                        bool(item["namespaced"]),
                    )
            if (api_version, kind) not in cache:
                raise ClusterError(f"the cluster does not serve {kind} ({api_version})")
        return cache[(api_version, kind)]

    def _object_path(self, manifest: Mapping[str, Any], namespace: str) -> str:
        template, namespaced = self._resource(str(manifest.get("apiVersion")), str(manifest.get("kind")))
        metadata = manifest.get("metadata") or {}
        scope = f"namespaces/{metadata.get('namespace') or namespace}/" if namespaced else ""
        return template.format(ns=scope) + f"/{metadata.get('name')}"

    def live_object(self, manifest: Mapping[str, Any], namespace: str) -> dict[str, Any] | None:
        """The object a manifest describes, as it is in the cluster now (None when there is none)."""
        try:
            found: dict[str, Any] = self._get(self._object_path(manifest, namespace))
        except ClusterError as exc:
            if exc.message.startswith("not found"):
                return None
            raise
        return found

    def apply_dry_run(self, manifest: Mapping[str, Any], namespace: str, field_manager: str) -> dict[str, Any]:
        """What the object would be after a server-side apply of ``manifest`` by ``field_manager`` (nothing changes).

        ``dryRun=All``: the server runs the whole write (defaulting, admission, the merge with the live
        object and what other managers own) and returns the result without storing it. ``force`` takes the
        fields it applies, as the owner of the release's fields does.
        """
        query = {"dryRun": "All", "fieldManager": field_manager, "force": "true"}
        text = self._raw(
            "PATCH",
            self._object_path(manifest, namespace),
            query,
            body=dict(manifest),
            content_type="application/apply-patch+yaml",
        )
        result: dict[str, Any] = json.loads(text)
        return result

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret as the API returns it (for Helm's release records), or None."""
        try:
            found: dict[str, Any] = self._get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except ClusterError as exc:
            if exc.message.startswith("not found"):
                return None
            raise
        return found

    def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> bool:
        """PUT a Secret read before; False when it changed meanwhile (409: read it again and retry)."""
        try:
            self._raw("PUT", f"/api/v1/namespaces/{namespace}/secrets/{name}", body=body)
        except ClusterError as exc:
            if exc.message.startswith("conflict"):
                return False
            raise
        return True

    def create_namespace(self, namespace: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        self._raw("POST", "/api/v1/namespaces", body=body)

    def nodes(self) -> list[Node]:
        return [Node.from_api(item) for item in self._get("/api/v1/nodes").get("items", [])]

    def bound_pods(self) -> list[Pod]:
        # The field selectors every API server supports for pods (spec.nodeName, status.phase).
        query = {"fieldSelector": "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"}
        return [Pod.from_api(item) for item in self._get("/api/v1/pods", query).get("items", [])]

    def autoscaler(self, namespace: str, name: str) -> Autoscaler | None:
        try:
            found = self._get(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}")
        except ClusterError as exc:
            if exc.message.startswith("not found"):
                return None
            raise
        return Autoscaler.from_api(found)

    def deployment(self, namespace: str, name: str) -> Deployment | None:
        try:
            return Deployment.from_api(self._get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"))
        except ClusterError as exc:
            if exc.message.startswith("not found"):
                return None
            raise

    def replica_sets(self, namespace: str, selector: str) -> list[ReplicaSet]:
        found = self._get(f"/apis/apps/v1/namespaces/{namespace}/replicasets", {"labelSelector": selector})
        return [ReplicaSet.from_api(item) for item in found.get("items", [])]

    def pods(self, namespace: str, selector: str) -> list[Pod]:
        found = self._get(f"/api/v1/namespaces/{namespace}/pods", {"labelSelector": selector})
        return [Pod.from_api(item) for item in found.get("items", [])]

    def events(self, namespace: str, name: str) -> list[Event]:
        """Events about the object called ``name`` (core/v1 Events, as kubectl describe shows them)."""
        items = self._get(f"/api/v1/namespaces/{namespace}/events", {"fieldSelector": f"involvedObject.name={name}"})
        return [Event.from_api(item) for item in items.get("items", [])]

    def pod_log(
        self, namespace: str, pod: str, *, container: str | None = None, previous: bool = False, tail: int | None = None
    ) -> str:
        query = {"previous": "true" if previous else "false"}
        if container:
            query["container"] = container
        if tail is not None:
            query["tailLines"] = str(tail)
        return self._raw("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log", query)

    def follow_log(
        self, namespace: str, pod: str, *, container: str | None = None, tail: int | None = None
    ) -> Iterator[str]:
        """Lines of a container's log as they come (``kubectl logs -f``)."""
        from kubernetes import client, watch

        api = client.CoreV1Api(self._api)
        kwargs: dict[str, Any] = {"container": container} if container else {}
        if tail is not None:
            kwargs["tail_lines"] = tail
        stream = watch.Watch().stream(api.read_namespaced_pod_log, pod, namespace, **kwargs)
        yield from stream


def context_namespace(context: str | None = None) -> str:
    """The namespace kubectl would use.

    The namespace kubectl would use: the kube context's, or the pod's in-cluster, else "default".
    Reads the kubeconfig only (no server contact); a missing or broken one means "default".
    """
    if _in_cluster(context):
        return _pod_namespace()
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        contexts, active = config.list_kube_config_contexts(config_file=_kubeconfig_path())
    except (ConfigException, OSError, TypeError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == (context or (active or {}).get("name"))), None)
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def context_cluster(context: str | None = None) -> str:
    """Which cluster a kube context reaches, for telling two contexts of one cluster apart from two clusters.

    The server URL its kubeconfig names (``in-cluster`` inside a pod); the context's name when the
    kubeconfig cannot tell. Reads the kubeconfig only (no server contact).
    """
    if _in_cluster(context):
        return "in-cluster"
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import KubeConfigMerger

    unknown = f"context {context}" if context else "the current kube context"
    try:
        merged = KubeConfigMerger(_kubeconfig_path()).config
        data = merged.value if merged is not None else {}
        name = context or data.get("current-context")
        contexts = [getattr(c, "value", c) for c in data.get("contexts") or []]  # merged entries are ConfigNodes
        clusters = [getattr(c, "value", c) for c in data.get("clusters") or []]
        chosen = next((c for c in contexts if c.get("name") == name), None)
        cluster_name = ((chosen or {}).get("context") or {}).get("cluster")
        cluster = next((c for c in clusters if c.get("name") == cluster_name), None)
    except (ConfigException, OSError, TypeError, AttributeError, ValueError):
        return unknown
    server = ((cluster or {}).get("cluster") or {}).get("server") if cluster_name else None
    return str(server) if server else unknown
