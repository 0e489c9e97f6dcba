"""``mlctl deploy`` and the release's later life: status, logs, history, rollback, delete, diff.

A deploy renders the chart, checks that some node can ever run a replica (the GPU gate), installs
or upgrades a Helm release in the environment's namespace, and follows the rollout until every
replica is ready. When it fails it says why in plain words, rolls back to the last good revision
(or removes a failed first install), and exits with the rollout-failure code.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlctl.chart.core import (
    chart_dir,
    chart_values,
    check_release_name,
    joined,
    manifest_documents,
    parse_image,
    render_values,
)
from mlctl.config import LoadedConfig, load_service_config
from mlctl.deploy.gate import GateResult, gpu_gate
from mlctl.deploy.watch import INSTANCE, Rollout, current_pods, pod_state, watch_rollout
from mlctl.errors import ClusterError, DeployError, InputError, MlctlError
from mlctl.models import DeployResult, ImageRef, ReleaseRevision, ReleaseStatus, RenderedRelease, ResourceChange
from mlctl.names import dns_label_problem
from mlctl.reporting import NullReporter, Reporter

if TYPE_CHECKING:
    from mlctl.adapters.helm import HelmEngine
    from mlctl.adapters.kube import Cluster


#: Seconds Helm's own actions may take (applying manifests, deleting them); the rollout is watched apart.
HELM_TIMEOUT_S = 300
#: Seconds the watch waits past the Deployment's progress deadline for the controller to call it.
DEADLINE_GRACE_S = 15


@dataclass(frozen=True)
class Target:
    """Where a release lives: the service, its release name and namespace, and the cluster."""

    loaded: LoadedConfig
    release: str
    namespace: str
    context: str | None
    #: The environment (``--env``), if any.
    env: str | None = None
    #: Only pushed, clean images may be deployed here (prod).
    protected: bool = False


def target(
    project_dir: Path | str | None = None,
    *,
    env: str | None = None,
    release: str | None = None,
    namespace: str | None = None,
    context: str | None = None,
) -> Target:
    loaded = load_service_config(project_dir, env=env)
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
        protected = env in ("prod", "production")
    return Target(loaded, release, namespace, context, env, protected)


def check_protected(where: Target, ref: ImageRef) -> None:
    """A protected environment (prod) takes only images that were pushed (by digest) from a clean tree."""
    if not where.protected:
        return
    name = where.env or where.namespace
    if ref.digest is None:
        raise InputError(
            f"{name} takes only pushed images, by digest: {ref.reference} has none",
            hint="promote what runs in staging (mlctl promote --from staging --to " + name + "), or deploy the "
            "digest `mlctl build --push` printed",
        )
    if "-dirty-" in ref.tag:
        raise InputError(
            f"{name} takes only images built from committed code: {ref.reference} was built from uncommitted changes",
            hint="commit, build --push, deploy to staging, then promote",
        )


@contextmanager
def connected(where: Target, *, check_namespace: bool = True) -> Iterator[tuple[Cluster, HelmEngine]]:
    """The cluster (checked reachable, the namespace checked present) and a Helm engine on it."""
    from mlctl.adapters.helm import HelmEngine
    from mlctl.adapters.kube import Cluster

    cluster = Cluster.connect(where.context)
    try:
        cluster.info()
        if check_namespace and not cluster.namespace_exists(where.namespace):
            raise ClusterError(
                f"namespace {where.namespace!r} does not exist in the cluster (context {cluster.context})",
                hint=f"ask the platform team for it, or create it: kubectl create namespace {where.namespace}",
            )
        helm = HelmEngine(
            namespace=where.namespace,
            kubeconfig=cluster.kubeconfig,
            context=None if cluster.context == "in-cluster" else cluster.context,
        )
        try:
            yield cluster, helm
        finally:
            helm.close()
    finally:
        cluster.close()


# --- images and values -----------------------------------------------------------------------------


def resolve_image(loaded: LoadedConfig, image: str | None, *, require_digest: bool, reporter: Reporter) -> ImageRef:
    """The image to deploy: ``--image``, else the image ``mlctl build`` tags for the current commit
    (with the digest the local engine recorded when it was pushed)."""
    if image:
        ref = parse_image(image)
    else:
        from mlctl.images.core import service_image

        built = parse_image(service_image(loaded))
        ref = ImageRef(built.repository, built.tag, _pushed_digest(built.repository, built.tag))
    if ref.digest is None:
        if require_digest:
            raise InputError(
                f"the image {ref.reference} has no digest and --require-digest is set",
                hint="pass --image REPOSITORY:TAG@sha256:... (as `mlctl build --push --json` prints it)",
            )
        reporter.warn(f"{ref.reference} has no digest: tags can move; push it and deploy by digest")
    return ref


def _pushed_digest(repository: str, tag: str) -> str | None:
    try:
        from mlctl.adapters.docker import ImageBuilder

        builder = ImageBuilder.connect(timeout=5)
    except MlctlError:  # no engine here (a CI deploy job): deploy by tag
        return None
    try:
        found = builder.inspect(f"{repository}:{tag}")
        if found is None:
            return None
        for repo_digest in found.repo_digests:
            name, _, digest = repo_digest.partition("@")
            if name == repository:
                return digest
        return None
    finally:
        builder.close()


def merged_values(base: dict[str, Any], values_files: Sequence[Path], sets: Sequence[str]) -> dict[str, Any]:
    """Chart values from mlctl.yaml, then ``--values`` files, then ``--set`` (Helm's syntax)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    result = copy.deepcopy(base)
    for path in values_files:
        try:
            data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
        except (OSError, YAMLError) as exc:
            raise InputError(f"--values {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"--values {path}: must hold a mapping of chart values")
        result = _deep_merge(result, data)
    from mlctl.adapters.helm import parse_set

    for item in sets:
        result = _deep_merge(result, parse_set(item))
    return result


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(
    where: Target,
    image: ImageRef,
    *,
    values_files: Sequence[Path] = (),
    sets: Sequence[str] = (),
    min_driver_major: int = 0,
) -> RenderedRelease:
    """The chart rendered offline for the service; every values problem is listed at once."""
    base = chart_values(where.loaded.config, image, min_driver_major=min_driver_major)
    values = merged_values(base, values_files, sets)
    return render_values(values, release=where.release, namespace=where.namespace)


# --- deploy ----------------------------------------------------------------------------------------


def deploy_service(
    project_dir: Path | str | None = None,
    *,
    env: str | None = None,
    image: str | None = None,
    release: str | None = None,
    namespace: str | None = None,
    context: str | None = None,
    values_files: Sequence[Path] = (),
    sets: Sequence[str] = (),
    require_digest: bool = False,
    wait: bool = True,
    timeout_s: float | None = None,
    dry_run: bool = False,
    reporter: Reporter | None = None,
) -> DeployResult:
    """Install or upgrade the service's release and follow the rollout.

    Raises:
        InputError: bad flags or values. ClusterError: the cluster is unreachable, forbids us, or
        lacks the namespace. DeployError: no node can run it (GPU gate), or the rollout failed
        (after rolling back).

    With ``dry_run`` everything up to the install is done (values, cluster, namespace, GPU gate,
    what would change) and nothing is changed.
    """
    reporter = reporter or NullReporter()
    started = time.monotonic()
    where = target(project_dir, env=env, release=release, namespace=namespace, context=context)
    ref = resolve_image(where.loaded, image, require_digest=require_digest, reporter=reporter)
    check_protected(where, ref)
    rendered = render(where, ref, values_files=values_files, sets=sets)  # values are checked before any cluster call
    with connected(where) as (cluster, helm):
        gate = _gate(cluster, where, rendered, reporter)
        if gate.min_driver_major:
            rendered = render(where, ref, values_files=values_files, sets=sets, min_driver_major=gate.min_driver_major)
        values = dict(rendered.values)
        history = helm.history(where.release)
        deployed = [r for r in history if r.status == "deployed"]
        # The watch outlives the Deployment's own deadline a little, so that the controller's verdict
        # (ProgressDeadlineExceeded) is what ends it, not our clock.
        timeout = int(timeout_s or _progress_deadline(rendered) + DEADLINE_GRACE_S)
        description = f"mlctl deploy {ref.reference}"
        from mlctl.adapters.helm import load_chart

        chart = load_chart(chart_dir())
        try:
            planned = helm.preview(chart, where.release, values, upgrade=True) if deployed else None
            if planned is not None and _same_manifests(helm.manifest(where.release), planned):
                reporter.step(f"{where.release}: nothing changed since revision {deployed[-1].revision}")
                return _result(cluster, where, "unchanged", deployed[-1].revision, ref, started, gate)
            if dry_run:
                if planned is None:
                    planned = (
                        helm.preview(chart, where.release, values, upgrade=False)
                        if not history
                        else joined(dict(rendered.manifests))  # only a failed install exists: it would be replaced
                    )
                plan = "would-upgrade" if deployed else "would-install"
                reporter.step(
                    f"dry run: {where.release} {plan.replace('-', ' ')} in {where.namespace} with {ref.reference}"
                    + (f" (revision {deployed[-1].revision} is live)" if deployed else "")
                )
                result = _result(cluster, where, plan, deployed[-1].revision if deployed else None, ref, started, gate)
                return dataclasses.replace(result, manifest=planned)
            if history and not deployed:
                reporter.step(f"{where.release}: removing the failed earlier install")
                helm.uninstall(where.release, timeout=HELM_TIMEOUT_S)
                history = []
            if history:
                reporter.step(f"upgrading {where.release} in {where.namespace} to {ref.reference}")
                revision = helm.upgrade(chart, where.release, values, timeout=HELM_TIMEOUT_S, description=description)
            else:
                reporter.step(f"installing {where.release} in {where.namespace} ({ref.reference})")
                revision = helm.install(chart, where.release, values, timeout=HELM_TIMEOUT_S, description=description)
        finally:
            chart.close()
        if not wait:
            return _result(cluster, where, "deployed", revision, ref, started, gate)
        reporter.step(f"waiting for {_replicas(rendered)} replica(s) to be ready (up to {timeout} s)")
        rollout = watch_rollout(
            cluster,
            where.namespace,
            where.release,
            timeout_s=timeout,
            startup_budget_s=int(values["probes"]["startupBudgetSeconds"]),
            memory_limit=str(values["resources"]["memoryLimit"]),
            reporter=reporter,
        )
        if not rollout.ok:
            _undo(helm, where, deployed, reporter)
            raise _failure(where, rollout, deployed)
        return _result(cluster, where, "deployed", revision, ref, started, gate, rollout)


def promote(
    project_dir: Path | str | None = None,
    *,
    source: str,
    to: str,
    wait: bool = True,
    timeout_s: float | None = None,
    reporter: Reporter | None = None,
) -> DeployResult:
    """Deploy to ``to`` exactly the image (by digest) that runs in ``source``: never a rebuild.

    Raises:
        InputError: the same environment twice, nothing deployed in ``source``, or an image there that is
        not pinned by digest. DeployError: ``source`` is not healthy, or the deploy to ``to`` failed.
    """
    reporter = reporter or NullReporter()
    if source == to:
        raise InputError(f"--from and --to are both {source!r}")
    origin = target(project_dir, env=source)
    with connected(origin) as (cluster, helm):
        live = [r for r in helm.history(origin.release) if r.status == "deployed"]
        deployment = cluster.deployment(origin.namespace, origin.release) if live else None
    if not live or deployment is None:
        raise InputError(
            f"nothing of {origin.release} is deployed in {source} (namespace {origin.namespace})",
            hint=f"deploy it there first: mlctl deploy --env {source}",
        )
    containers = deployment["spec"]["template"]["spec"]["containers"]
    image = str(next((c for c in containers if c.get("name") == "server"), containers[0])["image"])
    desired = int(deployment["spec"].get("replicas", 1))
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    if ready < desired:
        raise DeployError(
            f"{source} is not healthy ({ready}/{desired} replicas of revision {live[-1].revision} ready): "
            "only what works there is promoted",
            hint=f"see `mlctl status --env {source}`",
        )
    ref = parse_image(image)
    if ref.digest is None:
        raise InputError(
            f"{source} runs {image}, which is not pinned by digest, so {to} cannot get exactly the same image",
            hint=f"deploy {source} by digest (mlctl build --push prints it; --require-digest enforces it)",
        )
    reporter.step(f"promoting {ref.reference} from {source} (revision {live[-1].revision}) to {to}")
    return deploy_service(
        project_dir, env=to, image=ref.reference, require_digest=True, wait=wait, timeout_s=timeout_s, reporter=reporter
    )


def _gate(cluster: Cluster, where: Target, rendered: RenderedRelease, reporter: Reporter) -> GateResult:
    from mlctl.images.matrix import resolve

    gpu = rendered.values["resources"]["gpu"]  # mlctl.yaml, with --values/--set on top
    gpus, products = int(gpu.get("count", 0)), list(gpu.get("products") or [])
    if gpus <= 0:
        return GateResult(())
    runtime = where.loaded.config.runtime
    min_driver = resolve(runtime.python, runtime.torch, runtime.accelerator, runtime.cuda).min_driver
    try:
        nodes = cluster.nodes()
    except ClusterError as exc:
        reporter.warn(f"cannot read the cluster's nodes ({exc.message}): the GPU check is skipped")
        return GateResult(())
    result = gpu_gate(nodes, gpus=gpus, products=products, min_driver=min_driver)
    for warning in result.warnings:
        reporter.warn(warning)
    return result


def _replicas(rendered: RenderedRelease) -> int:
    values = rendered.values
    scaling = values.get("autoscaling") or {}
    return int(scaling["minReplicas"] if scaling.get("enabled") else values.get("replicaCount", 1))


def _progress_deadline(rendered: RenderedRelease) -> int:
    for document in manifest_documents(rendered.manifests.get("deployment.yaml", "")):
        if document.get("kind") == "Deployment":
            return int(document["spec"]["progressDeadlineSeconds"])
    return 600


def _same_manifests(live: str, new: str) -> bool:
    return _documents_by_name(live) == _documents_by_name(new)


def _documents_by_name(text: str) -> dict[str, Any]:
    return {f"{d.get('kind')}/{d.get('metadata', {}).get('name')}": d for d in manifest_documents(text)}


def _undo(helm: HelmEngine, where: Target, deployed: list[Any], reporter: Reporter) -> None:
    if deployed:
        reporter.step(f"rolling {where.release} back to revision {deployed[-1].revision}")
        helm.rollback(where.release, deployed[-1].revision, timeout=HELM_TIMEOUT_S)
    else:
        reporter.step(f"removing the failed first install of {where.release}")
        helm.uninstall(where.release, timeout=HELM_TIMEOUT_S)


def _failure(where: Target, rollout: Rollout, deployed: list[Any]) -> DeployError:
    findings = list(rollout.findings)
    if rollout.timed_out:
        head = f"{where.release}: {rollout.ready}/{rollout.desired} replicas ready after {rollout.seconds:.0f} s"
    else:
        head = f"{where.release}: the rollout failed after {rollout.seconds:.0f} s"
    undone = f"rolled back to revision {deployed[-1].revision}" if deployed else "the failed install was removed"
    return DeployError(
        f"{head}; {undone}", hint=None if findings else "see `mlctl status` and `mlctl logs`", findings=findings
    )


def _result(
    cluster: Cluster,
    where: Target,
    status: str,
    revision: int | None,
    ref: ImageRef,
    started: float,
    gate: GateResult,
    rollout: Rollout | None = None,
) -> DeployResult:
    deployment = cluster.deployment(where.namespace, where.release)
    pods = (
        tuple(pod_state(p) for p in current_pods(cluster, where.namespace, where.release, deployment))
        if deployment
        else ()
    )
    desired = int((deployment or {}).get("spec", {}).get("replicas", 0))
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas", 0) or 0)
    return DeployResult(
        where.release,
        where.namespace,
        status,
        revision,
        ref.reference,
        ready,
        desired,
        round(time.monotonic() - started, 2),
        gate.warnings,
        pods,
    )


# --- day 2 -----------------------------------------------------------------------------------------


def release_status(where: Target) -> ReleaseStatus:
    with connected(where) as (cluster, helm):
        history = helm.history(where.release)
        if not history:
            raise InputError(
                f"no release {where.release!r} in namespace {where.namespace}", hint="deploy it first: mlctl deploy"
            )
        latest = history[-1]
        deployment = cluster.deployment(where.namespace, where.release)
        pods = cluster.pods(where.namespace, f"{INSTANCE}={where.release}")
        image = ""
        if deployment:
            containers = deployment["spec"]["template"]["spec"]["containers"]
            image = str(containers[0].get("image", "")) if containers else ""
        return ReleaseStatus(
            release=where.release,
            namespace=where.namespace,
            revision=latest.revision,
            status=latest.status,
            updated=latest.updated,
            image=image,
            ready=int(((deployment or {}).get("status") or {}).get("readyReplicas", 0) or 0),
            desired=int((deployment or {}).get("spec", {}).get("replicas", 0)),
            pods=tuple(pod_state(p) for p in pods),
        )


def release_history(where: Target) -> list[ReleaseRevision]:
    with connected(where) as (_, helm):
        history = helm.history(where.release)
        if not history:
            raise InputError(f"no release {where.release!r} in namespace {where.namespace}")
        return [
            ReleaseRevision(r.revision, r.status, r.updated, r.chart, helm.description(where.release, r.revision))
            for r in history
        ]


def rollback_release(
    where: Target, revision: int | None, *, wait: bool, timeout_s: float | None, reporter: Reporter | None = None
) -> DeployResult:
    reporter = reporter or NullReporter()
    started = time.monotonic()
    with connected(where) as (cluster, helm):
        history = helm.history(where.release)
        if not history:
            raise InputError(f"no release {where.release!r} in namespace {where.namespace}")
        if revision is None:
            deployed = [r.revision for r in history if r.status in ("superseded", "deployed")]
            earlier = [r for r in deployed if r < history[-1].revision]
            if not earlier:
                raise InputError(f"{where.release} has no earlier revision to roll back to")
            revision = earlier[-1]
        elif revision not in [r.revision for r in history]:
            known = ", ".join(str(r.revision) for r in history)
            raise InputError(f"{where.release} has no revision {revision}; it has {known}")
        reporter.step(f"rolling {where.release} back to revision {revision}")
        helm.rollback(where.release, revision, timeout=HELM_TIMEOUT_S)
        live = cluster.deployment(where.namespace, where.release) or {}
        deadline = int((live.get("spec") or {}).get("progressDeadlineSeconds") or 600)
        timeout = int(timeout_s or deadline + DEADLINE_GRACE_S)
        new = helm.history(where.release)[-1].revision
        config = where.loaded.config
        if wait:
            rollout = watch_rollout(
                cluster,
                where.namespace,
                where.release,
                timeout_s=timeout,
                startup_budget_s=config.probes.startup_budget_s,
                memory_limit=None,
                reporter=reporter,
            )
            if not rollout.ok:
                raise DeployError(
                    f"{where.release}: revision {revision} did not become ready either",
                    hint=None if rollout.findings else "see `mlctl status` and `mlctl logs`",
                    findings=rollout.findings,
                )
        deployment = cluster.deployment(where.namespace, where.release)
        image = str(deployment["spec"]["template"]["spec"]["containers"][0]["image"]) if deployment else ""
        return _result(
            cluster, where, "deployed", new, parse_image(image) if image else ImageRef("", ""), started, GateResult(())
        )


def delete_release(where: Target, *, reporter: Reporter | None = None) -> str:
    reporter = reporter or NullReporter()
    with connected(where) as (_, helm):
        if not helm.history(where.release):
            raise InputError(f"no release {where.release!r} in namespace {where.namespace}")
        reporter.step(f"deleting {where.release} from {where.namespace}")
        helm.uninstall(where.release, timeout=HELM_TIMEOUT_S)
    return where.release


def diff_release(
    where: Target, image: ImageRef, *, values_files: Sequence[Path] = (), sets: Sequence[str] = ()
) -> list[ResourceChange]:
    """What a deploy would change, resource by resource, against the live release."""
    rendered = render(where, image, values_files=values_files, sets=sets)
    from mlctl.adapters.helm import load_chart

    with connected(where) as (_, helm):
        history = helm.history(where.release)
        deployed = any(r.status == "deployed" for r in history)
        live = helm.manifest(where.release) if deployed else ""
        if history and not deployed:
            planned = joined(dict(rendered.manifests))  # only a failed install exists
        else:
            chart = load_chart(chart_dir())
            try:
                planned = helm.preview(chart, where.release, dict(rendered.values), upgrade=deployed)
            finally:
                chart.close()
    before, after = _documents_by_name(live), _documents_by_name(planned)
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = _yaml(before.get(name)), _yaml(after.get(name))
        if old == new:
            continue
        kind = "added" if name not in before else "removed" if name not in after else "changed"
        text = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"live {name}", f"new {name}"))
        changes.append(ResourceChange(name, kind, text))
    return changes


def _yaml(document: Any) -> str:
    if document is None:
        return ""
    import io

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096  # a long image reference stays on its line, where the diff shows it
    yaml.indent(mapping=2, sequence=4, offset=2)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()
