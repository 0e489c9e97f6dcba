"""Where a release lives, and the connection to its cluster.

Where a release lives: the service's release name and namespace in a kube context, and the
connection to that cluster (the Kubernetes API and Helm) every deploy and day-2 command opens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mlctl.chart.render import chart_dir, check_release_name
from mlctl.config import LoadedConfig
from mlctl.errors import ClusterError, ConfigError, InputError
from mlctl.models import ReleaseImage
from mlctl.names import dns_label_problem
from mlctl.ports import Cluster, Releases
from mlctl.reporting import NullReporter, Reporter


@dataclass(frozen=True)
class Target:
    """Where a release lives: the service, its release name and namespace, and the cluster."""

    loaded: LoadedConfig
    release: str
    namespace: str
    context: str | None
    #: Only pushed, clean images may be deployed here (prod).
    protected: bool = False

    @property
    def env(self) -> str | None:
        """The environment (``--env``) whose settings apply, if any."""
        return self.loaded.environment

    @property
    def name(self) -> str:
        """How messages name where it goes: the environment, else the namespace."""
        return self.env or self.namespace


def resolve_target(
    loaded: LoadedConfig,
    *,
    release: str | None = None,
    namespace: str | None = None,
    context: str | None = None,
) -> Target:
    """The release of the service in ``loaded``'s environment.

    Args:
        loaded: The service's config with its environment applied.
        release: The Helm release name (default: the service's name).
        namespace: The namespace (default: ``deploy.namespace``, else the kube context's).
        context: The kube context (default: ``deploy.context``, else the current one).

    Raises:
        InputError: a release name Helm refuses, or a namespace that is not a DNS label.
    """
    release = release or loaded.config.name
    check_release_name(release)
    context = context or loaded.config.deploy.context
    if not namespace and not loaded.config.deploy.namespace:
        from mlctl.adapters.kube import context_namespace

        namespace = context_namespace(context)
    namespace = namespace or loaded.config.deploy.namespace or "default"
    problem = dns_label_problem(namespace)
    if problem:
        raise InputError(f"namespace {namespace!r} {problem}")
    protected = loaded.config.deploy.protected
    if protected is None:
        protected = loaded.environment in ("prod", "production")
    return Target(loaded, release, namespace, context, protected)


def check_protected(where: Target, image: ReleaseImage) -> None:
    """Refuse what a protected environment (prod) does not take.

    A protected environment (prod) takes only images pushed by digest, and never one its build
    record knows was built from uncommitted changes.

    Raises:
        InputError: saying which rule the image breaks.
    """
    if not where.protected:
        return
    name = where.env or where.namespace
    if image.ref.digest is None:
        raise InputError(
            f"{name} takes only pushed images, by digest: {image.ref.reference} has none",
            hint="promote what runs in staging (mlctl promote --from staging --to " + name + "), or deploy the "
            "digest `mlctl build --push` printed",
        )
    if image.dirty:
        raise InputError(
            f"{name} takes only images built from committed code: {image.ref.reference} was built from "
            "uncommitted changes",
            hint="commit, build --push, deploy to staging, then promote",
        )


def check_collisions(where: Target) -> None:
    """Refuse when another environment of the service resolves to the same cluster, namespace and release.

    Each environment of mlctl.yaml (and the service's own settings, used without ``--env``) is resolved as
    a deploy would resolve it: its kube context's cluster (the server its kubeconfig names), its
    namespace, and the release. Two that meet would replace each other's release (staging's image would go
    live in prod), unless both say that is meant: ``deploy.shared_release: true``.

    Raises:
        ConfigError: naming both environments, the release, namespace and cluster.
    """
    from mlctl.config import load_service_config

    loaded = where.loaded
    mine = _identity(where)
    for env in [None, *loaded.config.environments]:
        if env == loaded.environment:
            continue
        other = resolve_target(load_service_config(loaded.directory, env=env), release=where.release)
        if _identity(other) != mine:
            continue
        if loaded.config.deploy.shared_release and other.loaded.config.deploy.shared_release:
            continue
        cluster = mine[0]
        raise ConfigError(
            f"{_env_name(loaded.environment)} and {_env_name(env)} resolve to the same release: {where.release} in "
            f"namespace {where.namespace} on {cluster}; deploying or promoting one would replace the other",
            hint="give each environment its own deploy.namespace (or deploy.context) in mlctl.yaml; if they are meant "
            "to share one release, set deploy.shared_release: true in both",
        )


def _env_name(env: str | None) -> str:
    return f"environment {env}" if env else "the settings without --env"


def _identity(where: Target) -> tuple[str, str, str]:
    from mlctl.adapters.kube import context_cluster

    return context_cluster(where.context), where.namespace, where.release


def missing_namespace(where: Target, context: str) -> ClusterError:
    """The namespace is not there: what to do about it (a protected environment's is the platform team's)."""
    create = "pass --create-namespace to create it"
    return ClusterError(
        f"namespace {where.namespace!r} does not exist in the cluster (context {context})",
        hint=(
            f"ask the platform team for it (or {create}, or: kubectl create namespace {where.namespace})"
            if where.protected
            else f"{create}, ask the platform team for it, or: kubectl create namespace {where.namespace}"
        ),
    )


@contextmanager
def connected(
    where: Target,
    *,
    cluster: Cluster | None = None,
    releases: Releases | None = None,
    check_namespace: bool = True,
    create_namespace: bool = False,
    reporter: Reporter | None = None,
) -> Iterator[tuple[Cluster, Releases]]:
    """The cluster (checked reachable, the namespace checked present) and Helm on it.

    ``cluster`` and ``releases`` stand in for the real Kubernetes client and Helm engine (tests give
    fakes); the ones this opens itself are closed afterwards. ``create_namespace`` creates a missing
    namespace (as ``helm install --create-namespace``) instead of refusing.
    """
    own: list[Cluster | Releases] = []
    if cluster is None:
        from mlctl.adapters.kube import KubeCluster

        cluster = KubeCluster.connect(where.context)
        own.append(cluster)
    try:
        cluster.info()
        if check_namespace and not cluster.namespace_exists(where.namespace):
            if not create_namespace:
                raise missing_namespace(where, cluster.context)
            (reporter or NullReporter()).step(f"creating namespace {where.namespace}")
            cluster.create_namespace(where.namespace)
        if releases is None:
            from mlctl.adapters.helm import HelmReleases
            from mlctl.adapters.kube import KubeCluster

            releases = HelmReleases(
                chart_dir(),
                namespace=where.namespace,
                kubeconfig=cluster.kubeconfig,
                context=None if cluster.context == "in-cluster" else cluster.context,
                records=cluster if isinstance(cluster, KubeCluster) else None,
            )
            own.append(releases)
        yield cluster, releases
    finally:
        for opened in reversed(own):
            opened.close()
