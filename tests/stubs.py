"""Small stand-ins for the protocols of mlctl.ports, for fast tests of the deploy logic.

``StubCluster`` and ``StubReleases`` keep their state in memory and follow the rules mlctl relies
on from Kubernetes and Helm (named in each method); what a rollout does is scripted (``outcome``).
The integration tests (test_deploy.py) run the same code against the real Helm engine and the
Kubernetes API emulator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mlctl.errors import ClusterError
from mlctl.ports import FAILED, UNVERIFIED, ClusterInfo, Revision
from mlctl.views import Autoscaler, Container, Deployment, Event, Node, Pod, ReplicaSet


@dataclass
class StubCluster:
    """A cluster whose Deployments roll out as ``outcome`` says: "ready" at once, "deadline" (the controller
    reports ProgressDeadlineExceeded, as it does after progressDeadlineSeconds), or "unschedulable" (every
    pod of the new revision waits for a node: PodScheduled False, Insufficient nvidia.com/gpu). A rollback
    rolls out as ``rollback_outcome`` says."""

    namespaces: set[str] = field(default_factory=lambda: {"ml"})
    node_list: list[Node] = field(default_factory=lambda: [Node("cpu-0")])
    outcome: str = "ready"
    rollback_outcome: str = "ready"
    deployments: dict[tuple[str, str], Deployment] = field(default_factory=dict)
    #: Pods bound to nodes in every namespace (what uses the GPUs), for the GPU gate.
    bound: list[Pod] = field(default_factory=list)
    autoscalers: dict[tuple[str, str], Autoscaler] = field(default_factory=dict)
    context: str = "stub"
    kubeconfig: str | None = None
    closed: bool = False
    created_namespaces: list[str] = field(default_factory=list)
    #: Old pods of the release on their way out (Terminating).
    stopping: list[Pod] = field(default_factory=list)

    def roll_out(self, namespace: str, name: str, values: Mapping[str, Any]) -> None:
        """What the Deployment controller makes of an applied release."""
        image = values["image"]
        ref = f"{image['repository']}:{image['tag']}" + (f"@{image['digest']}" if image["digest"] else "")
        replicas = int(values.get("replicaCount", 1))
        ready = replicas if self.outcome == "ready" else 0
        self.deployments[(namespace, name)] = Deployment(
            name,
            replicas=replicas,
            observed_generation=1,
            ready=ready,
            updated=ready,
            available=ready,
            total=replicas,
            revision="1",
            deadline_exceeded=self.outcome == "deadline",
            images={"server": ref},
        )

    # --- mlctl.ports.Cluster -----------------------------------------------------------------------------

    def info(self) -> ClusterInfo:
        return ClusterInfo(self.context, "https://stub", "v1.31.0")

    def namespace_exists(self, namespace: str) -> bool:
        return namespace in self.namespaces

    def create_namespace(self, namespace: str) -> None:
        self.namespaces.add(namespace)
        self.created_namespaces.append(namespace)

    def nodes(self) -> list[Node]:
        return list(self.node_list)

    def bound_pods(self) -> list[Pod]:
        return list(self.bound)

    def deployment(self, namespace: str, name: str) -> Deployment | None:
        return self.deployments.get((namespace, name))

    def autoscaler(self, namespace: str, name: str) -> Autoscaler | None:
        return self.autoscalers.get((namespace, name))

    def replica_sets(self, namespace: str, selector: str) -> list[ReplicaSet]:
        # One ReplicaSet per Deployment, of its current revision.
        return [ReplicaSet(f"{n}-h", "1", "h") for (ns, n) in self.deployments if ns == namespace]

    def pods(self, namespace: str, selector: str) -> list[Pod]:
        """The new revision's pods: ready ones, or with outcome "unschedulable" ones waiting for a node; and
        asked for every pod of the release (no pod-template-hash), the old ones in ``stopping`` too."""
        pods = [] if "pod-template-hash" in selector else list(self.stopping)
        for (ns, name), deployment in self.deployments.items():
            if ns != namespace or f"={name}," not in f"{selector},":
                continue
            for i in range(deployment.replicas):
                if i < deployment.ready:
                    container = Container("server", deployment.image, ready=True)
                    pods.append(Pod(f"{name}-h-{i}", "Running", node="cpu-0", scheduled=True, containers=(container,)))
                elif self.outcome == "unschedulable":
                    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
                    pods.append(Pod(f"{name}-h-{i}", scheduled=False, unschedulable_message=message, gpus=1))
        return pods

    def events(self, namespace: str, name: str) -> list[Event]:
        return []

    def live_object(self, manifest: Mapping[str, Any], namespace: str) -> dict[str, Any] | None:
        return None

    def apply_dry_run(self, manifest: Mapping[str, Any], namespace: str, field_manager: str) -> dict[str, Any]:
        return dict(manifest)

    def pod_log(
        self, namespace: str, pod: str, *, container: str | None = None, previous: bool = False, tail: int | None = None
    ) -> str:
        raise ClusterError(f"not found: pods {pod!r}")

    def follow_log(
        self, namespace: str, pod: str, *, container: str | None = None, tail: int | None = None
    ) -> Iterator[str]:
        yield from ()

    def close(self) -> None:
        self.closed = True


@dataclass
class _Stored:
    revision: Revision
    values: dict[str, Any]
    description: str


@dataclass
class StubReleases:
    """Helm releases in one namespace, as Helm keeps them: every install, upgrade and rollback is a
    new revision, the one before it becomes superseded; rollback re-applies an old revision's values."""

    cluster: StubCluster
    namespace: str = "ml"
    stored: dict[str, list[_Stored]] = field(default_factory=dict)
    #: Every change made, in order: ("install", release, revision), ("rollback", release, to)...
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    #: Every preview asked for (changes nothing): (release, upgrade).
    previews: list[tuple[str, bool]] = field(default_factory=list)
    closed: bool = False

    def _apply(
        self, action: str, release: str, values: Mapping[str, Any], description: str, rollout: str = UNVERIFIED
    ) -> int:
        history = self.stored.setdefault(release, [])
        for i, old in enumerate(history):
            if old.revision.status == "deployed":  # Helm supersedes only deployed revisions, never failed ones
                history[i] = replace(old, revision=replace(old.revision, status="superseded"))
        number = len(history) + 1 if not history else history[-1].revision.revision + 1
        revision = Revision(number, "deployed", f"2026-01-01T00:00:{number:02d}Z", "model-service-0.1.0", "", rollout)
        history.append(_Stored(revision, dict(values), description))
        self.calls.append((action, release, number))
        self.cluster.roll_out(self.namespace, release, values)
        return number

    @staticmethod
    def _manifest(values: Mapping[str, Any]) -> str:
        # The pod template is what the values make of it: any change of them rolls the pods.
        spec = {"template": values}
        return "---\nkind: Deployment\nmetadata:\n  name: stub\nspec: " + json.dumps(spec, sort_keys=True) + "\n"

    # --- mlctl.ports.Releases ----------------------------------------------------------------------------

    def history(self, release: str) -> list[Revision]:
        return [s.revision for s in self.stored.get(release, [])]

    def description(self, release: str, revision: int) -> str:
        return next(s.description for s in self.stored[release] if s.revision.revision == revision)

    def manifest(self, release: str, revision: int | None = None) -> str:
        stored = self.stored[release]
        chosen = stored[-1] if revision is None else next(s for s in stored if s.revision.revision == revision)
        return self._manifest(chosen.values)

    def preview(self, release: str, values: Mapping[str, Any], *, upgrade: bool) -> str:
        self.previews.append((release, upgrade))
        return self._manifest(values)

    def install(self, release: str, values: Mapping[str, Any], *, timeout: int, description: str) -> int:
        assert not self.stored.get(release), "Helm refuses to install over an existing release"
        return self._apply("install", release, values, description)

    def upgrade(self, release: str, values: Mapping[str, Any], *, timeout: int, description: str) -> int:
        return self._apply("upgrade", release, values, description)

    def rollback(self, release: str, revision: int | None, *, timeout: int) -> None:
        target = next(s for s in self.stored[release] if s.revision.revision == revision)
        self.calls.append(("rollback", release, target.revision.revision))
        self.cluster.outcome = self.cluster.rollback_outcome
        # Helm copies the old revision's labels (mlctl.rollout among them) to the rollback's revision.
        self._apply("rolled back", release, target.values, f"Rollback to {revision}", target.revision.rollout)
        self.calls.pop()  # recorded as the rollback itself

    def mark(self, release: str, revision: int, outcome: str, *, description: str | None = None) -> None:
        history = self.stored[release]
        for i, stored in enumerate(history):
            if stored.revision.revision == revision:
                status = "failed" if outcome == FAILED else stored.revision.status
                history[i] = replace(
                    stored,
                    revision=replace(stored.revision, status=status, rollout=outcome),
                    description=description or stored.description,
                )
        self.calls.append(("mark " + outcome, release, revision))

    def uninstall(self, release: str, *, timeout: int) -> None:
        self.stored.pop(release, None)
        self.cluster.deployments.pop((self.namespace, release), None)
        self.calls.append(("uninstall", release, 0))

    def close(self) -> None:
        self.closed = True

    def values(self, release: str) -> dict[str, Any]:
        """The values of the release's latest revision."""
        return self.stored[release][-1].values
