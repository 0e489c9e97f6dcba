"""Planning a build: every rung's inputs, and whether it is present, in the registry, or to be built.

A layer whose tag exists with the very same inputs (locally, or in the registry when pushing) is
reused and never rebuilt; for one that must be built, the plan names the inputs that changed since
the closest earlier image of that layer: the one with the fewest inputs changed, the newest of those
(retrained weights read "changed: weights" even when a build of other code came since).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlctl.config import LoadedConfig
from mlctl.errors import BuildError, ClusterError, InputError, NotFoundError
from mlctl.images import index, wheels
from mlctl.images.context import ServiceFiles, check_secrets
from mlctl.images.index import TorchWheel
from mlctl.images.ladder import DEFAULT_PLATFORM, LABEL_LAYER, Layer, base_layers, digest, service_layer
from mlctl.images.matrix import resolve
from mlctl.images.tags import check_labels, check_tag, source_tag
from mlctl.images.weights import service_inputs
from mlctl.models import PlanEntry
from mlctl.ports import ImageBuilder, LocalImage
from mlctl.reporting import NullReporter, Reporter
from mlctl.resources import cache_dir, data_dir
from mlctl.weights import LABEL as WEIGHTS_LABEL


@dataclass
class Ladder:
    """The planned ladder of one service: its layers bottom up (the service last)."""

    loaded: LoadedConfig
    layers: list[Layer]
    #: Every wheel the builds may install (torch's and the service's), served together.
    wheels: wheels.Wheelhouse
    #: The service image's tags: its git tag first, then the extra ones.
    tags: tuple[str, ...]
    dirty: bool
    #: The root image the python layer starts from.
    root: str
    #: The torch wheel resolution found: the torch layer must hold exactly this.
    torch: TorchWheel
    #: The weights' digest (``sha256:...``); None when the image holds none, or they are not made yet.
    weights: str | None = None
    #: ``model.prepare`` has yet to make the weights: ``mlctl build`` makes them (``prepare_in_image``)
    #: once the base layers exist, then plans again.
    weights_pending: bool = False

    @property
    def service(self) -> Layer:
        return self.layers[-1]


@contextmanager
def engine(builder: ImageBuilder | None, timeout: float = 600.0) -> Iterator[ImageBuilder]:
    """The given engine, or a connection of our own to the local Docker engine, closed afterwards."""
    if builder is not None:
        yield builder
        return
    from mlctl.adapters.docker import DockerImageBuilder

    own = DockerImageBuilder.connect(timeout=timeout)
    try:
        yield own
    finally:
        own.close()


def plan_images(
    loaded: LoadedConfig,
    *,
    root: str | None = None,
    wheelhouse: Path | None = None,
    platform: str = DEFAULT_PLATFORM,
    registry: bool = False,
    labels: Mapping[str, str] | None = None,
    torch_index: str | None = None,
    reporter: Reporter | None = None,
    builder: ImageBuilder | None = None,
) -> list[PlanEntry]:
    """What ``mlctl build`` would do, layer by layer, and which input changed for each rebuild.

    Args:
        loaded: The service's config (``load_service_config``), with its environment applied.
        root: The root image to start from instead of the matrix's.
        wheelhouse: A directory of wheels to install from (offline).
        platform: The platform to build for.
        registry: Also look for missing base layers in ``image.registry``.
        labels: The extra labels the build would get (they are inputs of the service layer).
        torch_index: The wheel index to take torch from instead of the matrix's for the flavour.
        reporter: Progress.
        builder: The engine (default: the local Docker engine).
    """
    reporter = reporter or NullReporter()
    labels = check_labels(labels or {})
    if torch_index is not None:
        check_index_url(torch_index)
    with engine(builder) as builder:
        ladder = plan_ladder(
            loaded,
            builder,
            root=root,
            wheelhouse=wheelhouse,
            platform=platform,
            tags=(),
            labels=labels,
            allow_secrets=None,
            pull_root=False,
            torch_index=torch_index,
            reporter=reporter,
        )
        if registry and loaded.config.image.registry:
            look_in_registry(ladder, builder, set(), reporter, pull=False)
        return [PlanEntry(layer.name, layer.image, _plan_status(layer.status), layer.reason) for layer in ladder.layers]


def check_engine_host() -> None:
    """The build reaches the wheelhouse on this machine's 127.0.0.1: the engine must run on this host.

    Raises:
        BuildError: DOCKER_HOST names another host.
    """
    host = os.environ.get("DOCKER_HOST", "")
    remote = re.match(r"^(?:tcp|ssh|https?)://(?:[^@/]*@)?(\[[^\]]*\]|[^:/]+)", host)
    if remote and remote.group(1) not in ("127.0.0.1", "localhost", "[::1]"):
        raise BuildError(
            f"mlctl build serves the wheelhouse to the build over 127.0.0.1, which the engine at {host} "
            "(another host, or docker-in-docker) cannot reach",
            hint="run mlctl build on the Docker host itself (a machine or VM with Docker, a shell-executor CI runner)",
        )


def check_engine(builder: ImageBuilder) -> None:
    """Raises BuildError for an engine in a VM that cannot reach this host's loopback (Docker Desktop)."""
    if "Docker Desktop" in builder.operating_system():
        raise BuildError(
            "mlctl build serves the wheelhouse to the build over 127.0.0.1, which Docker Desktop's VM cannot reach",
            hint="build on a Linux host's own Docker engine (a Linux machine or VM, a CI runner on a Docker host)",
        )


def plan_ladder(
    loaded: LoadedConfig,
    builder: ImageBuilder,
    *,
    root: str | None,
    wheelhouse: Path | None,
    platform: str,
    tags: Sequence[str],
    labels: Mapping[str, str],
    allow_secrets: Sequence[str] | None,
    pull_root: bool,
    reporter: Reporter,
    torch_index: str | None = None,
) -> Ladder:
    """Every layer of the service's ladder with its inputs and status (present or build, and why).

    The service's files are collected and, unless ``allow_secrets`` is None (a plan), checked for
    secrets first, before any download or pull.

    torch is resolved of the service's flavour only (``mlctl.images.index``): from ``wheelhouse``
    when given, else from ``torch_index`` or the matrix's index for the flavour, and nowhere else.
    """
    from mlctl.adapters.git import source_state

    config = loaded.config

    def secrets(files: ServiceFiles) -> None:
        if allow_secrets is not None:
            memo = cache_dir() / "secret-scan.json"
            check_secrets(
                loaded.directory,
                files,
                allow_secrets,
                memo=memo,
                weights_sha256=config.model.sha256,
                reporter=reporter,
            )

    inputs = service_inputs(loaded, reporter=reporter, check=secrets)
    files = inputs.files
    runtime = config.runtime
    resolved = resolve(runtime.python, runtime.torch, runtime.accelerator, runtime.cuda)
    if platform not in wheels.PLATFORMS:
        raise InputError(f"--platform {platform}: mlctl builds for {', '.join(wheels.PLATFORMS)}")
    root_ref = root or resolved.root
    root_identity = _root_identity(builder, root_ref, pull=pull_root, reporter=reporter)

    cache = cache_dir()
    given = wheels.given_wheelhouse(wheelhouse) if wheelhouse else None
    runtime_dir = cache / "runtime"
    memo = cache / "wheel-digests.json"
    wheels.runtime_wheel(runtime_dir)
    if given is not None:
        torch_wheel = index.torch_in_wheelhouse(given, resolved, wheels.PLATFORMS[platform], platform)
        torch_house = wheels.wheelhouse(given, memo=memo)
        service_house = wheels.wheelhouse(given, runtime_dir, memo=memo)
    else:
        torch_wheel, torch_dir = wheels.download_torch(
            resolved,
            index_url=torch_index or resolved.index_url,
            platform=platform,
            cache=cache / "wheels",
            reporter=reporter,
        )
        requirements = _download_requirements(loaded.directory)
        service_dir = (
            wheels.download(
                requirements,
                python=resolved.python,
                platform=platform,
                cache=cache / "wheels",
                index_url=None,
                reporter=reporter,
            )
            if requirements
            else None
        )
        torch_house = wheels.wheelhouse(torch_dir, memo=memo)
        service_house = wheels.wheelhouse(*(d for d in (service_dir, runtime_dir) if d is not None), memo=memo)

    python, torch = base_layers(resolved, root_ref, root_identity, torch_house.digest, torch_wheel)

    state = source_state(loaded.directory)
    tag = source_tag(state, inputs.digest)
    service = service_layer(loaded, resolved, files, service_house, torch, state, tag, labels, inputs.digest)
    for layer in (python, torch):
        mark(layer, builder)
    if inputs.pending:
        service.status, service.reason = "build", "its weights are made first (model.prepare)"
    else:
        mark(service, builder, state.commit)
    all_tags = (tag, *(t for t in tags if t != tag))
    for extra in all_tags[1:]:
        check_tag(extra)
    return Ladder(
        loaded,
        [python, torch, service],
        _merge(torch_house, service_house),
        all_tags,
        state.dirty,
        root_ref,
        torch_wheel,
        inputs.digest,
        inputs.pending,
    )


def check_index_url(url: str) -> None:
    """A ``--torch-index`` is an http(s) URL.

    Raises:
        InputError: naming it.
    """
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"--torch-index {index.redact(url)}: expected an http(s) URL of a wheel index "
            "(e.g. https://download.pytorch.org/whl/cu130)"
        )


def mark(layer: Layer, builder: ImageBuilder, revision: str | None = None) -> None:
    """Set the layer's status: present (with these very inputs) or build, with the reason."""
    found = builder.inspect(layer.image)
    if found is not None and found.labels.get("mlctl.digest") == layer.digest:
        layer.status, layer.reason = "present", "found on this machine"
        return
    layer.status = "build"
    previous = found if found is not None else _closest(builder, layer)
    if previous is None:
        layer.reason = "no earlier image of this layer on this machine"
        return
    same_revision = previous.labels.get("org.opencontainers.image.revision", "") == (revision or "")
    if found is None and previous.labels.get("mlctl.digest") == layer.digest and same_revision:
        # The very image exists under another name (e.g. the registry prefix changed): tag it.
        builder.tag(previous.id, layer.repository, layer.tag)
        layer.status, layer.reason = (
            "present",
            f"same inputs as {previous.tags[0] if previous.tags else previous.id[:19]}",
        )
        return
    try:
        before = json.loads(previous.labels.get("mlctl.inputs", "{}"))
    except ValueError:
        before = {}
    changed = [name for name, value in layer.inputs.items() if before.get(name) != value]
    old_weights, new_weights = previous.labels.get(WEIGHTS_LABEL), layer.labels.get(WEIGHTS_LABEL)
    if "weights" in changed and old_weights and new_weights and old_weights != new_weights:
        changed[changed.index("weights")] = f"weights ({_short(old_weights)} -> {_short(new_weights)})"
    layer.reason = "changed: " + ", ".join(changed) if changed else "inputs changed"


def _short(digest: str) -> str:
    return f"sha256:{digest.removeprefix('sha256:')[:12]}"


def look_in_registry(
    ladder: Ladder, builder: ImageBuilder, forced: set[str], reporter: Reporter, *, pull: bool = True
) -> None:
    """Find missing base layers in ``image.registry``: pull them (a build) or just say so (a plan)."""
    registry = ladder.loaded.config.image.registry.rstrip("/")
    for layer in ladder.layers[:-1]:
        layer.remote = f"{registry}/mlctl-{layer.name}:{layer.tag}"
        if layer.status == "present" or layer.name in forced:
            continue
        if builder.remote_exists(layer.remote):
            if not pull:
                layer.status, layer.reason = "in registry", f"found as {layer.remote}"
                continue
            reporter.step(f"{layer.name} layer: pulling {layer.remote}")
            builder.pull(layer.remote)
            builder.tag(layer.remote, layer.repository, layer.tag)
            layer.status, layer.reason = "pulled", f"found as {layer.remote}"


def _closest(builder: ImageBuilder, layer: Layer) -> LocalImage | None:
    """The earlier image of the layer with the fewest inputs other than ``layer``'s, the newest of those.

    The newest alone would explain retrained weights by whatever other code was built since.
    """
    label = f"{LABEL_LAYER}={layer.name}"
    candidates = list(builder.list_images(label))
    if layer.name == "service":
        candidates = [i for i in candidates if i.labels.get("mlctl.service") == layer.labels.get("mlctl.service")]

    def changed(image: LocalImage) -> int:
        try:
            before = json.loads(image.labels.get("mlctl.inputs", "{}"))
        except ValueError:
            before = {}
        if not isinstance(before, dict):
            before = {}
        return sum(before.get(name) != value for name, value in layer.inputs.items())

    if not candidates:
        return None
    fewest = min(changed(image) for image in candidates)
    return max((image for image in candidates if changed(image) == fewest), key=lambda image: image.created)


def _plan_status(status: str) -> str:
    return {"present": "present", "in registry": "in registry", "pulled": "in registry"}.get(status, "build")


def _download_requirements(service_dir: Path) -> list[str]:
    """The service's requirements as pip on the host can resolve them.

    The service's requirements as pip on the host can resolve them: mlctl-serve is not on an index
    mlctl relies on, so its own dependencies stand in for it (its wheel is built from mlctl's copy).
    """
    requirements = wheels.service_requirements(service_dir)
    runtime = wheels.read_toml(data_dir("runtime") / "pyproject.toml")["project"]["dependencies"]
    kept = [r for r in requirements if not r.lower().startswith(("mlctl-serve", "mlctl_serve"))]
    if len(kept) != len(requirements):
        kept += [r for r in runtime if not r.lower().startswith("torch")]
    return sorted(set(kept))


def _root_identity(builder: ImageBuilder, ref: str, *, pull: bool, reporter: Reporter) -> str:
    """The root's identity: its layer digests and config. A root not on this machine is pulled.

    Raises:
        ClusterError: the root is not here and its registry cannot be reached (exit 9, as any
            registry that does not answer).
        InputError: the registry answers that there is no such image (exit 4: a wrong name).
    """
    from mlctl.images.root import pull_failure

    found = builder.inspect(ref)
    if found is None and pull:
        reporter.step(f"pulling the root image {ref}")
        try:
            builder.pull(ref)
        except (ClusterError, NotFoundError) as exc:
            raise pull_failure(builder, ref, exc) from None
        found = builder.inspect(ref)
    if found is None:
        return digest("missing", ref)
    return digest(json.dumps({"layers": found.diff_ids, "config": found.config}, sort_keys=True))


def _merge(a: wheels.Wheelhouse, b: wheels.Wheelhouse) -> wheels.Wheelhouse:
    directories = tuple(dict.fromkeys((*a.directories, *b.directories)))
    return wheels.Wheelhouse(directories, digest(a.digest, b.digest))
