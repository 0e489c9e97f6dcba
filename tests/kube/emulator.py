"""A Kubernetes API emulator for tests: the real Helm engine and the official Python client work against it.

    with FakeCluster() as cluster:
        cluster.add_namespace("ml")
        cluster.add_node("gpu-0", gpus=1, product="NVIDIA-A100-SXM4-80GB")
        kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig", namespace="ml")
        ...  # helm_python / kubernetes / mlctl against it

It serves HTTP on 127.0.0.1 from a background thread with its own event loop, and simulates the parts of a
cluster a deploy tool observes: the Deployment and ReplicaSet controllers, a scheduler (GPUs, taints, node
affinity), kubelets (image pulls, crashes, probes, logs), Events and garbage collection. test_emulator.py
holds it to what the real API server and the real clients do (exact error texts included).

Not modelled (don't test these against it): RBAC, admission webhooks, quotas and LimitRanges; field ownership
conflicts of server-side apply; finalizers (deletes are immediate, except that pods on a node are Terminating
for 0.3 s; dependents go within a tick); Jobs, StatefulSets, DaemonSets and the PDB controller (their objects
are stored, never acted on); metrics (the HPA controller only holds its target within min..max replicas); init
containers; "410 Gone" for old resourceVersions; pagination; Table output for kubectl; protobuf responses.
Each module says what it approximates.
"""

from __future__ import annotations

import asyncio
import copy
import pathlib
import socket
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import yaml
from aiohttp import web
from kube.apiserver import ApiServer, LocalClient
from kube.controllers import Simulation
from kube.discovery import Discovery
from kube.schema import Schemas
from kube.status import ApiError
from kube.store import Resource, Store

T = TypeVar("T")


class FakeCluster:
    """A Kubernetes API emulator on 127.0.0.1 (background thread with its own event loop) plus simulated controllers.

    Behaviour knobs, read by the simulated kubelet on every tick (set them before or during a test):

    * ``bad_images``: images that never pull (ErrImagePull, then ImagePullBackOff, Warning "Failed" Events);
    * ``crash_images``: image -> (exit code, log lines): the container prints the lines and exits. With
      ``restartPolicy: Always`` that repeats (CrashLoopBackOff; exit code 137 is reported as OOMKilled); with
      ``Never`` the pod ends Succeeded (exit 0) or Failed, which is how a Helm test hook passes or fails;
    * ``slow_images``: image -> seconds until the container is ready; a startup (or liveness) probe with a
      shorter budget gets it killed and restarted, as the kubelet does.
    """

    def __init__(self, kube_version: str = "1.31") -> None:
        self.kube_version = kube_version
        self.url = ""
        self.bad_images: set[str] = set()
        self.crash_images: dict[str, tuple[int, list[str]]] = {}
        self.slow_images: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._controllers: asyncio.Task[None] | None = None
        self._store = Store()
        self._discovery = Discovery(kube_version)
        self._api = ApiServer(self._store, self._discovery, Schemas(kube_version), self._pod_logs)
        self._client = LocalClient(self._api)
        self._simulation = Simulation(self._client, self)

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def __enter__(self) -> FakeCluster:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-kubernetes", daemon=True)
        self._thread.start()
        self._call_async(self._start())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        assert self._loop is not None
        assert self._thread is not None
        self._call_async(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        # A bug in the emulator must not pass for a behaviour of the code under test.
        errors = self._api.internal_errors + self._simulation.errors
        if errors and exc_type is None:
            raise AssertionError("the Kubernetes emulator failed internally:\n" + "\n".join(errors))

    async def _start(self) -> None:
        for name in ("default", "kube-system"):
            self._client.create(_namespace(name))
        # handler_cancellation: a watch whose client went away stops at once instead of waiting for an event.
        server = web.Server(self._api.handle, handler_cancellation=True)
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._controllers = asyncio.create_task(self._simulation.run())

    async def _stop(self) -> None:
        assert self._controllers is not None
        assert self._runner is not None
        self._controllers.cancel()
        self._store.close_watches()
        await self._runner.cleanup()

    # --- setup helpers ------------------------------------------------------------------------------------------

    def kubeconfig(self, path: pathlib.Path, *, namespace: str = "default", context: str = "fake") -> pathlib.Path:
        """Write a kubeconfig for this cluster (token auth, plain-HTTP server URL) and return its path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "fake-token"}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
            "current-context": context,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def add_namespace(self, name: str) -> None:
        self._call(lambda: self._client.create(_namespace(name)))

    def add_node(
        self,
        name: str,
        *,
        gpus: int = 0,
        product: str | None = None,
        driver_major: int | None = None,
        taints: list[dict[str, Any]] | None = None,
        labels: dict[str, str] | None = None,
        cpu: str = "8",
        memory: str = "32Gi",
    ) -> None:
        """A Ready node; with ``gpus``, ``nvidia.com/gpu`` capacity and the labels NVIDIA's feature discovery sets."""
        node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **({"nvidia.com/gpu.count": str(gpus)} if gpus else {}),
            **({"nvidia.com/gpu.product": product} if product else {}),
            **({"nvidia.com/cuda.driver.major": str(driver_major)} if driver_major is not None else {}),
            **(labels or {}),
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": node_labels},
            "spec": {"taints": copy.deepcopy(taints)} if taints else {},
        }
        self._call(lambda: self._simulation.register_node(node, cpu=cpu, memory=memory, gpus=gpus))

    def add_custom_resource(self, api_version: str, kind: str, plural: str, *, namespaced: bool = True) -> None:
        """Serve a custom resource, as if its CustomResourceDefinition were installed (e.g. the Prometheus
        Operator's ``monitoring.coreos.com/v1`` ServiceMonitor). Its objects are stored without a schema."""
        group, _, version = api_version.rpartition("/")
        resource = Resource(
            group=group,
            version=version,
            plural=plural,
            kind=kind,
            namespaced=namespaced,
            verbs=frozenset({"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}),
            subresources=frozenset(),
        )
        self._call(lambda: self._discovery.add(resource))

    def inject_fault(self, method: str, plural: str, status: int, reason: str, message: str, times: int = 1) -> None:
        """Fail the next ``times`` matching requests with this Status, before they read or change anything.

        ``method`` is an RBAC verb (get, list, watch, create, update, patch, delete, deletecollection) or an HTTP
        method (GET covers get/list/watch, POST is create, PUT is update, DELETE covers both deletes). ``plural``
        is the resource, e.g. "deployments", or "deployments/status" for a subresource.
        """
        error = ApiError(status, reason, message)
        self._call(lambda: self._api.inject_fault(method, plural, error, times))

    # --- inspection ---------------------------------------------------------------------------------------------

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The current objects of a resource (copies), e.g. ``objects("pods", "ml")``; all namespaces by default."""
        resource = self._discovery.by_plural(plural)
        if resource is None:
            raise KeyError(f"no resource {plural!r} is served")
        return self._call(lambda: copy.deepcopy(self._store.objects(resource.key, namespace)))

    def logs(self) -> list[tuple[str, str]]:
        """(method, path with query) of every request received so far."""
        return self._call(lambda: list(self._api.requests))

    def _pod_logs(self, namespace: str, pod: str, container: str | None, previous: bool) -> str:
        return self._simulation.logs(namespace, pod, container, previous)

    # --- thread plumbing ----------------------------------------------------------------------------------------

    def _call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the emulator's loop: the store is only ever touched from that thread."""

        async def run() -> T:
            return function()

        return self._call_async(run())

    def _call_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            raise RuntimeError("the FakeCluster is not started: use it as a context manager")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
