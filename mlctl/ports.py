"""The narrow interfaces the core needs from the outside world, and the plain data they exchange.

``Cluster`` (the Kubernetes API), ``Releases`` (Helm) and ``ImageBuilder`` (the Docker engine) are
protocols: ``mlctl.adapters`` implements them with the real SDKs, and the core (deploy, promote,
rollback, build) accepts any object that has their methods, so most of its behaviour is tested with
small fakes; the integration tests use the real adapters against the Kubernetes emulator, Helm and
Docker. A second backend (a ``helm`` binary, another registry client) implements the same protocol.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlctl.views import Autoscaler, Deployment, Event, Node, Pod, ReplicaSet

# --- Kubernetes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster that answered: its context, server and version."""

    context: str
    server: str
    version: str | None


class Cluster(Protocol):
    """A Kubernetes API server, as far as deploying and watching a service goes."""

    #: The kube context's name ("in-cluster" inside a pod).
    context: str
    #: The kubeconfig file used (None in-cluster), for Helm to reach the same cluster.
    kubeconfig: str | None

    def info(self) -> ClusterInfo:
        """Ask for the server's version: the reachability check (raises ClusterError)."""

    def namespace_exists(self, namespace: str) -> bool: ...

    def create_namespace(self, namespace: str) -> None: ...

    def nodes(self) -> list[Node]: ...

    def bound_pods(self) -> list[Pod]:
        """Every pod bound to a node that still holds its resources, in all namespaces (what the GPUs are used by)."""

    def deployment(self, namespace: str, name: str) -> Deployment | None: ...

    def autoscaler(self, namespace: str, name: str) -> Autoscaler | None: ...

    def replica_sets(self, namespace: str, selector: str) -> list[ReplicaSet]: ...

    def pods(self, namespace: str, selector: str) -> list[Pod]: ...

    def events(self, namespace: str, name: str) -> list[Event]:
        """Events about the object called ``name``."""

    def live_object(self, manifest: Mapping[str, Any], namespace: str) -> dict[str, Any] | None:
        """The object ``manifest`` describes as it is in the cluster now, None when there is none."""

    def apply_dry_run(self, manifest: Mapping[str, Any], namespace: str, field_manager: str) -> dict[str, Any]:
        """What the object would be after a server-side apply of ``manifest`` (``dryRun=All``: nothing changes)."""

    def pod_log(
        self, namespace: str, pod: str, *, container: str | None = None, previous: bool = False, tail: int | None = None
    ) -> str: ...

    def follow_log(
        self, namespace: str, pod: str, *, container: str | None = None, tail: int | None = None
    ) -> Iterator[str]: ...

    def close(self) -> None: ...


# --- Helm -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    """One revision of a Helm release."""

    revision: int
    #: Helm's status: deployed, superseded, failed, pending-install...
    status: str
    updated: str
    chart: str
    app_version: str = ""
    #: How mlctl saw its rollout go (the release label ``mlctl.rollout``): "healthy", "failed", "unverified"
    #: (applied, not watched), or "" when mlctl never said (a revision made by another tool).
    rollout: str = ""

    @property
    def failed(self) -> bool:
        """The revision failed: Helm says so, or mlctl watched its rollout fail."""
        return self.status == "failed" or self.rollout == "failed"


#: The outcomes ``Releases.mark`` records.
HEALTHY, FAILED, UNVERIFIED = "healthy", "failed", "unverified"


class Releases(Protocol):
    """Helm releases of one chart in one namespace (the chart's path is the implementation's)."""

    namespace: str

    def history(self, release: str) -> list[Revision]:
        """The release's revisions, oldest first; empty when there is no such release."""

    def description(self, release: str, revision: int) -> str:
        """What Helm wrote for one revision ("Install complete", "Rollback to 1", mlctl's own words)."""

    def manifest(self, release: str, revision: int | None = None) -> str:
        """The manifests Helm applied for the revision (default: the latest)."""

    def preview(self, release: str, values: Mapping[str, Any], *, upgrade: bool) -> str:
        """The manifests an install or upgrade would apply now (a server-side dry run)."""

    def install(self, release: str, values: Mapping[str, Any], *, timeout: int, description: str) -> int:
        """Install without waiting for the rollout; the revision (its rollout UNVERIFIED until marked)."""

    def upgrade(self, release: str, values: Mapping[str, Any], *, timeout: int, description: str) -> int:
        """Upgrade without waiting for the rollout; the new revision (its rollout UNVERIFIED until marked)."""

    def rollback(self, release: str, revision: int | None, *, timeout: int) -> None: ...

    def mark(self, release: str, revision: int, outcome: str, *, description: str | None = None) -> None:
        """Record how a revision's rollout went (HEALTHY, FAILED or UNVERIFIED) where other tools read it.

        FAILED also sets Helm's own status of the revision to ``failed`` (``helm history`` shows it, and Helm's
        rollback then leaves it so); ``description`` replaces what ``helm history`` says of it.
        """

    def uninstall(self, release: str, *, timeout: int) -> None: ...

    def close(self) -> None: ...


# --- the Docker engine --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalImage:
    """An image in the local engine."""

    id: str
    tags: tuple[str, ...]
    labels: dict[str, str]
    #: The uncompressed digests of the image's layers (RootFS.Layers), bottom first.
    diff_ids: tuple[str, ...]
    #: The parts of the image config that change what runs: Env, Entrypoint, Cmd, User, WorkingDir.
    config: dict[str, Any]
    size: int
    created: str
    repo_digests: tuple[str, ...]


@dataclass
class BuildLog:
    """What a build printed, for progress and for explaining a failure."""

    step: str = ""
    step_index: int = 0
    step_count: int = 0
    cached_steps: int = 0
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    #: The step images this build committed (not taken from the cache), oldest first.
    created: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PushReport:
    """What a push uploaded, layer by layer."""

    digest: str | None
    #: Final status of each layer: "Pushed", "Layer already exists", "Mounted from ...".
    layers: dict[str, str]
    #: Bytes uploaded for the layers that were pushed (as the engine reports its progress).
    bytes_pushed: int


LineHandler = Callable[[str, BuildLog], None]


class ImageBuilder(Protocol):
    """The Docker engine, as far as building and shipping images goes."""

    def operating_system(self) -> str: ...

    def inspect(self, ref: str) -> LocalImage | None: ...

    def list_images(self, label: str) -> list[LocalImage]:
        """Local images carrying ``label`` (``key`` or ``key=value``)."""

    def tag(self, image: str, repository: str, tag: str) -> None: ...

    def remove(self, ref: str) -> None: ...

    def build(
        self,
        context: bytes,
        *,
        tag: str | None,
        buildargs: dict[str, str],
        nocache: bool = False,
        platform: str | None = None,
        on_line: LineHandler | None = None,
    ) -> tuple[str, BuildLog]:
        """Build from a tar context and tag it (None: untagged); the image ID (raises BuildError naming the step)."""

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        mounts: Mapping[str, str],
        workdir: str,
        env: Mapping[str, str],
        user: str,
        labels: Mapping[str, str],
        on_line: Callable[[str], None] | None = None,
    ) -> tuple[int, str]:
        """Run ``argv`` to its end in a container of ``image`` (host directory -> container path ``mounts``).

        Returns its exit status (127: the program was not found) and its last output; the container is removed.
        """

    def pull(self, ref: str) -> None:
        """Pull ``ref``.

        Raises NotFoundError for an image the registry does not have, ClusterError for a registry
        that cannot be reached.
        """

    def import_image(self, tarball: str, repository: str, tag: str, changes: list[str]) -> str:
        """A root file system tarball as an image (``docker import``); its ID."""

    def probe(self, image: str, command: list[str], *, timeout: float = 300.0) -> tuple[int, str]:
        """Run a command in a throwaway container of ``image`` (no network); its exit status and output."""

    def remote_exists(self, ref: str) -> bool: ...

    def push(self, ref: str, on_status: Callable[[str], None] | None = None) -> PushReport: ...

    def close(self) -> None: ...
