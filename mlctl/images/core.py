"""``mlctl build``: the layer ladder root -> python -> torch -> service, built with the Docker engine.

Each base layer's tag is a hash of its inputs: the Dockerfile, its build arguments, the files it
copies, the wheels it installs, and its parent's identity (the root's layer digests and config, or
the parent layer's own input hash; never an image ID, which changes on every re-import). A layer
whose tag exists (locally, or in the registry when pushing) is reused and never rebuilt. The service
image is tagged from git (``<tree>-g<commit>``, plus ``-dirty-<content>`` for uncommitted changes)
and carries its input hash as a label, so an unchanged service is not rebuilt either.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlctl.config import LoadedConfig, load_service_config, serving_environment
from mlctl.errors import BuildError, ConflictError, InputError
from mlctl.images import locks, wheels
from mlctl.images.context import ServiceFiles, collect
from mlctl.images.matrix import Resolved, resolve
from mlctl.models import BuildResult, ImageRef, LadderImage, LayerResult, PlanEntry, PushResult
from mlctl.reporting import NullReporter, Reporter
from mlctl.resources import cache_dir, data_dir

if TYPE_CHECKING:
    from mlctl.adapters.docker import ImageBuilder, LocalImage

LAYERS = ("python", "torch", "service")
BASE_REPOSITORY = "mlctl/{layer}"
SERVICE_UID = 10001
LABEL_LAYER = "org.mlctl.layer"
DEFAULT_PLATFORM = "linux/amd64"


@dataclass
class Layer:
    """A rung of the ladder: what it is made of and whether it must be built."""

    name: str
    repository: str
    tag: str
    #: Digest of each input; a change names the input that changed.
    inputs: dict[str, str]
    labels: dict[str, str]
    buildargs: dict[str, str]
    #: Builds the context for a wheelhouse URL, with a final LABEL instruction for the given labels.
    make_context: Callable[[str, dict[str, str]], bytes]
    status: str = "build"
    reason: str = ""
    remote: str | None = None

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs, sort_keys=True).encode()).hexdigest()

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass
class _Ladder:
    loaded: LoadedConfig
    layers: list[Layer]
    #: Every wheel the builds may install (torch's and the service's), served together.
    wheels: wheels.Wheelhouse
    tags: tuple[str, ...]
    dirty: bool


@contextmanager
def _engine(builder: ImageBuilder | None, timeout: float = 600.0) -> Iterator[ImageBuilder]:
    """The given engine, or a connection of our own that is closed afterwards."""
    if builder is not None:
        yield builder
        return
    from mlctl.adapters.docker import ImageBuilder

    own = ImageBuilder.connect(timeout=timeout)
    try:
        yield own
    finally:
        own.close()


# --- public functions ------------------------------------------------------------------------------


def build_images(
    project_dir: Path | str | None = None,
    *,
    env: str | None = None,
    root: str | None = None,
    wheelhouse: Path | None = None,
    push: bool = False,
    platform: str = DEFAULT_PLATFORM,
    no_cache: bool = False,
    rebuild: Sequence[str] = (),
    tags: Sequence[str] = (),
    allow_dirty: bool = False,
    allow_secrets: bool = False,
    labels: Mapping[str, str] | None = None,
    reporter: Reporter | None = None,
    builder: ImageBuilder | None = None,
) -> BuildResult:
    """Build (and with ``push``, push) the service's image and the base layers under it.

    Args:
        project_dir: A directory inside the service (default: the current directory).
        env: An environment of mlctl.yaml whose overrides apply (and ``dev`` allows dirty pushes).
        root: The root image to start from instead of the matrix's (air-gapped teams, tests).
        wheelhouse: A directory of wheels to install from instead of resolving on the host (offline).
        push: Push the base layers and the service image to ``image.registry``.
        platform: The platform to build for.
        no_cache: Rebuild every layer, without the builder's cache.
        rebuild: Layers to rebuild even if present ("python", "torch", "service").
        tags: Extra tags for the service image.
        allow_dirty: Push even with uncommitted changes.
        allow_secrets: Let files that look like secrets into the image.
        labels: Extra labels for the service image (a CI pipeline's id, an owner); see ``check_labels``.

    Raises:
        ConfigError/InputError: bad config, matrix combination or flags. ConflictError: a dirty push.
        EnvironmentProblem: no Docker engine. BuildError: a build failed. ClusterError: a registry failed.
    """
    reporter = reporter or NullReporter()
    labels = check_labels(labels or {})
    if platform not in wheels.PLATFORMS:
        raise InputError(f"--platform {platform}: mlctl builds for {', '.join(wheels.PLATFORMS)}")
    unknown = sorted(set(rebuild) - set(LAYERS))
    if unknown:
        raise InputError(f"--rebuild {', '.join(unknown)}: layers are {', '.join(LAYERS)}")
    loaded = load_service_config(project_dir, env=env)
    if push and not loaded.config.image.registry:
        raise InputError(
            "--push needs image.registry in mlctl.yaml (e.g. ghcr.io/acme)",
            hint="or set MLCTL_CONFIG__IMAGE__REGISTRY for this run",
        )
    _check_engine_host()
    with _engine(builder) as builder:
        _check_engine(builder)
        ladder = _plan(
            loaded,
            builder,
            root=root,
            wheelhouse=wheelhouse,
            platform=platform,
            tags=tags,
            labels=labels,
            allow_secrets=allow_secrets,
            pull_root=True,
            reporter=reporter,
        )
        if push and ladder.dirty and not allow_dirty and env != "dev":
            raise ConflictError(
                f"refusing to push {loaded.config.name}: the service has uncommitted changes (tag {ladder.tags[0]})",
                hint="commit them, or pass --allow-dirty (or --env dev)",
            )
        forced = set(LAYERS) if no_cache else set(rebuild)
        if push:
            _look_in_registry(ladder, builder, forced, reporter)
        results = _build(ladder, builder, forced=forced, platform=platform, reporter=reporter)
        pushes = _push(ladder, builder, reporter) if push else []
        service = ladder.layers[-1]
        digest = next((p.digest for p in pushes if p.image == service.image), None)
        found = builder.inspect(service.image)
        return BuildResult(
            service=loaded.config.name,
            image=ImageRef(service.repository, service.tag, digest),
            tags=ladder.tags,
            dirty=ladder.dirty,
            layers=tuple(results),
            pushes=tuple(pushes),
            labels=dict(found.labels) if found else {},
        )


def plan_images(
    project_dir: Path | str | None = None,
    *,
    env: str | None = None,
    root: str | None = None,
    wheelhouse: Path | None = None,
    platform: str = DEFAULT_PLATFORM,
    registry: bool = False,
    labels: Mapping[str, str] | None = None,
    reporter: Reporter | None = None,
    builder: ImageBuilder | None = None,
) -> list[PlanEntry]:
    """What ``mlctl build`` would do, layer by layer, and which input changed for each rebuild."""
    reporter = reporter or NullReporter()
    labels = check_labels(labels or {})
    loaded = load_service_config(project_dir, env=env)
    with _engine(builder) as builder:
        ladder = _plan(
            loaded,
            builder,
            root=root,
            wheelhouse=wheelhouse,
            platform=platform,
            tags=(),
            labels=labels,
            allow_secrets=True,
            pull_root=False,
            reporter=reporter,
        )
        if registry and loaded.config.image.registry:
            _look_in_registry(ladder, builder, set(), reporter, pull=False)
        return [PlanEntry(layer.name, layer.image, _plan_status(layer.status), layer.reason) for layer in ladder.layers]


def list_ladder_images(label: str | None = None, builder: ImageBuilder | None = None) -> list[LadderImage]:
    """The base layer images on this machine, and which service images stand on them.

    Args:
        label: Only images carrying this label (``KEY`` or ``KEY=VALUE``).
    """
    with _engine(builder, timeout=30) as engine:
        return _ladder_images(engine, label)


def prune_ladder_images(
    *, dry_run: bool = False, label: str | None = None, builder: ImageBuilder | None = None
) -> list[LadderImage]:
    """Remove the base layer images no local service image uses; returns them.

    Args:
        dry_run: Remove nothing; return what would be removed.
        label: Only consider images carrying this label (``KEY`` or ``KEY=VALUE``), e.g. the ones a
            CI job or a test run made; whether an image is in use is judged over every image.
    """
    with _engine(builder, timeout=120) as builder:
        unused = [image for image in _ladder_images(builder, label) if not image.used_by]
        # A torch layer stands on a python layer: remove children first.
        unused.sort(key=lambda image: LAYERS.index(image.layer), reverse=True)
        if not dry_run:
            for image in unused:
                builder.remove(image.image)
        return unused


def base_layers(resolved: Resolved, root_ref: str, root_identity: str, wheels_digest: str) -> tuple[Layer, Layer]:
    """The python and torch layers of one matrix row, with their inputs, build arguments and labels."""
    base = data_dir("base_images")
    labels = base_labels(resolved)
    python_files = {name: (base / "python" / name).read_bytes() for name in ("Dockerfile", "install-python.sh")}
    python = _base_layer(
        "python",
        inputs={
            "dockerfile": _digest(python_files["Dockerfile"], python_files["install-python.sh"]),
            "args": _digest(resolved.python),
            "parent": root_identity,
        },
        labels={"mlctl.python": resolved.python, LABEL_LAYER: "python", "mlctl.parent": root_ref},
        buildargs={"BASE": root_ref, "PYTHON_VERSION": resolved.python},
        files=lambda url: dict(python_files),
    )
    torch_template = (base / "torch" / "Dockerfile").read_text()
    torch = _base_layer(
        "torch",
        inputs={
            "dockerfile": _digest(torch_template),
            "args": _digest(resolved.torch_requirement, resolved.flavor),
            "parent": python.digest,
            "wheels": wheels_digest,
        },
        labels={**labels, LABEL_LAYER: "torch", "mlctl.parent": python.image},
        buildargs={
            "BASE": python.image,
            "TORCH_REQUIREMENT": resolved.torch_requirement,
            "WHEELHOUSE_DIGEST": wheels_digest[:16],
        },
        files=lambda url: {"Dockerfile": _render(torch_template, wheelhouse_url=url).encode()},
    )
    return python, torch


def render_row(resolved: Resolved) -> dict[str, dict[str, Any]]:
    """What the base layers of one matrix row would be built from (no engine needed): each layer's
    Dockerfile as sent to the builder, its build arguments and its labels."""
    import io
    import tarfile

    url = f"http://127.0.0.1:{wheels.PREFERRED_PORT}/"
    rendered: dict[str, dict[str, Any]] = {}
    for layer in base_layers(resolved, resolved.root, _digest("unbuilt", resolved.root), _digest("wheels")):
        with tarfile.open(fileobj=io.BytesIO(layer.make_context(url, layer.labels))) as context:
            member = context.extractfile("Dockerfile")
            assert member is not None
            dockerfile = member.read().decode()
        rendered[layer.name] = {
            "dockerfile": dockerfile,
            "buildargs": dict(layer.buildargs),
            "labels": dict(layer.labels),
        }
    return rendered


def base_labels(resolved: Resolved) -> dict[str, str]:
    labels = {
        "mlctl.python": resolved.python,
        "mlctl.torch": resolved.torch,
        "mlctl.flavor": resolved.flavor,
        "mlctl.wheel-index": resolved.index_url,
    }
    if resolved.cuda:
        labels["mlctl.cuda"] = resolved.cuda
        labels["mlctl.min-driver"] = resolved.min_driver or ""
    return labels


#: Label keys mlctl sets itself (or Docker reserves), which ``--label`` may not replace.
_RESERVED_LABELS = re.compile(
    r"^(mlctl\.|org\.mlctl\.|com\.docker\.|io\.docker\.|org\.dockerproject\.|"
    r"org\.opencontainers\.image\.(title|version|source|revision|created)$)"
)
#: Docker's guideline for label keys: lower-case letters and digits, separated by single '.' or '-'.
_LABEL_KEY = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")


def parse_labels(values: Iterable[str], flag: str = "--label") -> dict[str, str]:
    """``KEY=VALUE`` arguments as a mapping; a value may be empty, a key may not be missing.

    Raises:
        InputError: an argument without ``=``.
    """
    labels: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep:
            raise InputError(f"{flag} {value}: expected KEY=VALUE (e.g. {flag} ci.pipeline=1234)")
        labels[key] = text
    return labels


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Extra labels for a service image, checked: keys in Docker's recommended form and none that
    mlctl sets itself (the ladder, the inputs, the revision) or Docker reserves.

    Raises:
        InputError: naming the first bad key.
    """
    for key in labels:
        if not _LABEL_KEY.fullmatch(key):
            raise InputError(
                f"--label {key}: a label key is lower-case letters and digits separated by '.' or '-' "
                "(e.g. com.example.team)"
            )
        if _RESERVED_LABELS.match(key):
            raise InputError(f"--label {key}: mlctl or Docker sets this label itself; pick a key of your own")
    return dict(labels)


# --- planning --------------------------------------------------------------------------------------


def _check_engine_host() -> None:
    """The build reaches the wheelhouse on this machine's 127.0.0.1: the engine must run on this host."""
    host = os.environ.get("DOCKER_HOST", "")
    remote = re.match(r"^(?:tcp|ssh|https?)://(?:[^@/]*@)?(\[[^\]]*\]|[^:/]+)", host)
    if remote and remote.group(1) not in ("127.0.0.1", "localhost", "[::1]"):
        raise BuildError(
            f"mlctl build serves the wheelhouse to the build over 127.0.0.1, which the engine at {host} "
            "(another host, or docker-in-docker) cannot reach",
            hint="run mlctl build on the Docker host itself (a machine or VM with Docker, a shell-executor CI runner)",
        )


def _check_engine(builder: ImageBuilder) -> None:
    if "Docker Desktop" in builder.operating_system():
        raise BuildError(
            "mlctl build serves the wheelhouse to the build over 127.0.0.1, which Docker Desktop's VM cannot reach",
            hint="build on a Linux host's own Docker engine (a Linux machine or VM, a CI runner on a Docker host)",
        )


def _plan(
    loaded: LoadedConfig,
    builder: ImageBuilder,
    *,
    root: str | None,
    wheelhouse: Path | None,
    platform: str,
    tags: Sequence[str],
    labels: Mapping[str, str],
    allow_secrets: bool,
    pull_root: bool,
    reporter: Reporter,
) -> _Ladder:
    from mlctl.adapters.git import source_state

    config = loaded.config
    runtime = config.runtime
    resolved = resolve(runtime.python, runtime.torch, runtime.accelerator, runtime.cuda)
    root_ref = root or resolved.root
    root_identity = _root_identity(builder, root_ref, pull=pull_root, reporter=reporter)

    cache = cache_dir()
    given = wheels.given_wheelhouse(wheelhouse) if wheelhouse else None
    runtime_dir = cache / "runtime"
    memo = cache / "wheel-digests.json"
    wheels.runtime_wheel(runtime_dir)
    if given is not None:
        torch_house = wheels.wheelhouse(given, memo=memo)
        service_house = wheels.wheelhouse(given, runtime_dir, memo=memo)
    else:
        torch_dir = wheels.download(
            [resolved.torch_requirement],
            python=resolved.python,
            platform=platform,
            cache=cache / "wheels",
            index_url=resolved.index_url,
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

    python, torch = base_layers(resolved, root_ref, root_identity, torch_house.digest)

    state = source_state(loaded.directory)
    tag = source_tag(state)
    files = collect(
        loaded.directory, config.model.path if config.model.source == "baked" else None, allow_secrets=allow_secrets
    )
    service = _service_layer(loaded, resolved, files, service_house, torch, state, tag, labels)
    for layer in (python, torch, service):
        _mark(layer, builder, state.commit if layer is service else None)
    all_tags = (tag, *(t for t in tags if t != tag))
    for extra in all_tags[1:]:
        _check_tag(extra)
    return _Ladder(loaded, [python, torch, service], _merge(torch_house, service_house), all_tags, state.dirty)


def _download_requirements(service_dir: Path) -> list[str]:
    """The service's requirements as pip on the host can resolve them: mlctl-serve is not on an index
    mlctl relies on, so its own dependencies stand in for it (its wheel is built from mlctl's copy)."""
    requirements = wheels.service_requirements(service_dir)
    runtime = wheels._read_toml(data_dir("runtime") / "pyproject.toml")["project"]["dependencies"]
    kept = [r for r in requirements if not r.lower().startswith(("mlctl-serve", "mlctl_serve"))]
    if len(kept) != len(requirements):
        kept += [r for r in runtime if not r.lower().startswith("torch")]
    return sorted(set(kept))


def _root_identity(builder: ImageBuilder, ref: str, *, pull: bool, reporter: Reporter) -> str:
    found = builder.inspect(ref)
    if found is None and pull:
        reporter.step(f"pulling the root image {ref}")
        try:
            builder.pull(ref)
        except Exception as exc:
            message = getattr(exc, "message", str(exc))
            raise BuildError(
                f"the root image {ref} is not on this machine and cannot be pulled: {message}",
                hint="pass --root IMAGE with an image made or loaded locally (air-gapped machines)",
            ) from None
        found = builder.inspect(ref)
    if found is None:
        return _digest("missing", ref)
    return _digest(json.dumps({"layers": found.diff_ids, "config": found.config}, sort_keys=True))


def _base_layer(
    name: str,
    *,
    inputs: dict[str, str],
    labels: dict[str, str],
    buildargs: dict[str, str],
    files: Callable[[str], dict[str, bytes]],
) -> Layer:
    from mlctl.adapters.docker import build_context

    def context(url: str, extra: dict[str, str]) -> bytes:
        entries = files(url)
        entries["Dockerfile"] = _with_labels(entries["Dockerfile"].decode(), extra).encode()
        return build_context((path, data, 0o644) for path, data in entries.items())

    layer = Layer(name, BASE_REPOSITORY.format(layer=name), "", inputs, labels, buildargs, context)
    layer.tag = layer.digest[:16]
    return layer


def _service_layer(
    loaded: LoadedConfig,
    resolved: Resolved,
    files: ServiceFiles,
    house: wheels.Wheelhouse,
    parent: Layer,
    state: Any,
    tag: str,
    extra_labels: Mapping[str, str],
) -> Layer:
    from mlctl.adapters.docker import build_context

    config = loaded.config
    requirements = "\n".join(wheels.service_requirements(loaded.directory)) + "\n"
    env = {k: v for k, v in serving_environment(config).items() if k != "SERVING_MODEL_PATH"}
    env["SERVING_HOST"] = "0.0.0.0"
    if config.model.source == "baked":
        env["SERVING_MODEL_PATH"] = "/srv/" + config.model.path
    template = (data_dir("base_images") / "service" / "Dockerfile.j2").read_text()
    stable = {
        "uid": SERVICE_UID,
        "port": config.serving.port,
        "start_period": config.probes.startup_budget_s,
        "app": config.serving.app,
        "env": env,
        "weights": bool(files.weights),
        "weights_dir": files.weights_dir,
    }
    template_labels = {
        **extra_labels,
        "org.opencontainers.image.title": config.name,
        "org.opencontainers.image.version": _service_version(loaded.directory),
        "org.opencontainers.image.source": state.remote or "",
        "mlctl.service": config.name,
        "mlctl.python": resolved.python,
        "mlctl.torch": resolved.torch,
        "mlctl.flavor": resolved.flavor,
        "mlctl.template": config.template.name if config.template else "",
        "mlctl.template-version": config.template.version if config.template else "",
        "mlctl.ladder": f"python={parent.labels['mlctl.parent']},torch={parent.image}",
        "mlctl.parent": parent.image,
    }
    if resolved.cuda:
        template_labels["mlctl.cuda"] = resolved.cuda
        template_labels["mlctl.min-driver"] = resolved.min_driver or ""
    inputs = {
        "dockerfile": _digest(
            template, json.dumps(stable, sort_keys=True), json.dumps(template_labels, sort_keys=True)
        ),
        "requirements": _digest(requirements, house.digest),
        "weights": files.digest(files.weights),
        "code": files.digest(files.code),
        "parent": parent.digest,
    }
    if extra_labels:  # only then: an unlabelled build keeps the digest it always had
        inputs["labels"] = _digest(json.dumps(dict(extra_labels), sort_keys=True))

    def context(url: str, extra: dict[str, str]) -> bytes:
        labels = {
            **template_labels,
            **extra,
            "org.opencontainers.image.revision": state.commit or "",
            "org.opencontainers.image.created": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }
        dockerfile = _with_labels(_render(template, wheelhouse_url=url, **stable), labels)
        entries = [("Dockerfile", dockerfile.encode(), 0o644), ("requirements.txt", requirements.encode(), 0o644)]
        entries += [(f"weights/{f.path}", f.content, f.mode) for f in files.weights]
        entries += [(f"app/{f.path}", f.content, f.mode) for f in files.code]
        return build_context(entries)

    layer = Layer(
        "service",
        config.image_repository,
        tag,
        inputs,
        {LABEL_LAYER: "service", "mlctl.service": config.name},
        {"BASE": parent.image, "DEPS_DIGEST": house.digest[:16]},
        context,
    )
    return layer


def _service_version(service_dir: Path) -> str:
    pyproject = service_dir / "pyproject.toml"
    if pyproject.is_file():
        return str(wheels._read_toml(pyproject).get("project", {}).get("version", ""))
    return ""


def service_image(loaded: LoadedConfig) -> str:
    """``repository:tag`` of the service image ``mlctl build`` makes from the service's current source."""
    from mlctl.adapters.git import source_state

    return f"{loaded.config.image_repository}:{source_tag(source_state(loaded.directory))}"


def source_tag(state: Any) -> str:
    """The service image's tag for a source state: ``<tree>-g<commit>`` (``-dirty-<hash>`` with
    uncommitted changes; ``untracked-<hash>`` outside git). Deploys find the built image by it."""
    if state.tree is None or state.commit is None:
        return f"untracked-{state.content_hash[:12]}"
    tag = f"{state.tree[:12]}-g{state.commit[:7]}"
    if state.dirty:
        tag += f"-dirty-{state.content_hash[:12]}"
    return tag


def _check_tag(tag: str) -> None:
    import re

    from mlctl.adapters.docker import split_ref

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag) or split_ref(f"x:{tag}")[1] != tag:
        raise InputError(
            f"--tag {tag}: a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        )


def _mark(layer: Layer, builder: ImageBuilder, revision: str | None = None) -> None:
    """Set the layer's status: present (with these very inputs) or build, with the reason."""
    found = builder.inspect(layer.image)
    if found is not None and found.labels.get("mlctl.digest") == layer.digest:
        layer.status, layer.reason = "present", "found on this machine"
        return
    layer.status = "build"
    previous = found if found is not None else _latest(builder, layer)
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
    changed = [name for name, digest in layer.inputs.items() if before.get(name) != digest]
    layer.reason = "changed: " + ", ".join(changed) if changed else "inputs changed"


def _latest(builder: ImageBuilder, layer: Layer) -> LocalImage | None:
    label = f"{LABEL_LAYER}={layer.name}"
    candidates = [image for image in builder.list_images(label)]
    if layer.name == "service":
        candidates = [i for i in candidates if i.labels.get("mlctl.service") == layer.labels.get("mlctl.service")]
    return max(candidates, key=lambda image: image.created, default=None)


def _look_in_registry(
    ladder: _Ladder, builder: ImageBuilder, forced: set[str], reporter: Reporter, *, pull: bool = True
) -> None:
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


def _plan_status(status: str) -> str:
    return {"present": "present", "in registry": "in registry", "pulled": "in registry"}.get(status, "build")


# --- building and pushing --------------------------------------------------------------------------


def _build(
    ladder: _Ladder, builder: ImageBuilder, *, forced: set[str], platform: str, reporter: Reporter
) -> list[LayerResult]:
    needs = [layer for layer in ladder.layers if layer.status == "build" or layer.name in forced]
    if not needs:
        return _build_held(ladder, builder, forced=forced, platform=platform, reporter=reporter)
    # One build at a time per engine (mlctl.images.locks says why); what another build made while
    # this one waited is then found, not built again.
    waiting = "waiting for another mlctl build on this Docker engine to finish"
    with locks.held(locks.engine_lock_path(), on_wait=lambda: reporter.step(waiting)):
        for layer in needs:
            if layer.name not in forced:
                found = builder.inspect(layer.image)
                if found is not None and found.labels.get("mlctl.digest") == layer.digest:
                    layer.status, layer.reason = "present", "built meanwhile by another mlctl build"
        return _build_held(ladder, builder, forced=forced, platform=platform, reporter=reporter)


def _build_held(
    ladder: _Ladder, builder: ImageBuilder, *, forced: set[str], platform: str, reporter: Reporter
) -> list[LayerResult]:
    results = []
    needs = [layer for layer in ladder.layers if layer.status == "build" or layer.name in forced]
    serving = wheels.serve(ladder.wheels) if needs else None
    url = serving.__enter__() if serving else ""
    try:
        for layer in ladder.layers:
            started = time.monotonic()
            if layer.status in ("present", "pulled") and layer.name not in forced:
                found = builder.inspect(layer.image)
                reporter.step(f"{layer.name} layer: reusing {layer.image}")
                results.append(
                    LayerResult(
                        layer.name,
                        layer.image,
                        "reused" if layer.status == "present" else "pulled",
                        layer.reason,
                        0.0,
                        found.size if found else 0,
                    )
                )
                continue
            reason = "asked to rebuild" if layer.name in forced and layer.status != "build" else layer.reason
            reporter.step(f"{layer.name} layer: building {layer.image} ({reason})")
            labels = {
                **layer.labels,
                "mlctl.digest": layer.digest,
                "mlctl.inputs": json.dumps(layer.inputs, sort_keys=True),
            }
            context = layer.make_context(url, labels)

            def on_line(line: str, log: Any, name: str = layer.name) -> None:
                reporter.log(f"[{name}] {line}")

            image_id, log = builder.build(
                context,
                tag=layer.image,
                buildargs=layer.buildargs,
                nocache=layer.name in forced,
                platform=platform,
                on_line=on_line,
            )
            found = builder.inspect(image_id)
            results.append(
                LayerResult(
                    layer.name,
                    layer.image,
                    "built",
                    reason,
                    round(time.monotonic() - started, 2),
                    found.size if found else 0,
                    log.step_count,
                    log.cached_steps,
                )
            )
            if layer.name == "service":
                for extra in ladder.tags[1:]:
                    builder.tag(image_id, layer.repository, extra)
    finally:
        if serving:
            serving.__exit__(None, None, None)
    return results


def _push(ladder: _Ladder, builder: ImageBuilder, reporter: Reporter) -> list[PushResult]:
    results = []
    targets: list[tuple[str, str]] = []
    for layer in ladder.layers[:-1]:
        assert layer.remote is not None
        targets.append((layer.image, layer.remote))
    service = ladder.layers[-1]
    for tag in ladder.tags:
        targets.append((service.image, f"{service.repository}:{tag}"))
    for local, remote in targets:
        repository, tag = remote.rsplit(":", 1)
        builder.tag(local, repository, tag)
        reporter.step(f"pushing {remote}")
        report = builder.push(remote, on_status=lambda line: reporter.log(f"[push] {line}"))
        counts = {"pushed": 0, "exists": 0, "mounted": 0}
        for status in report.layers.values():
            key = "pushed" if status == "Pushed" else "exists" if status == "Layer already exists" else "mounted"
            counts[key] += 1
        results.append(
            PushResult(local if local == service.image else remote, report.digest, counts, report.bytes_pushed)
        )
    return results


def _merge(a: wheels.Wheelhouse, b: wheels.Wheelhouse) -> wheels.Wheelhouse:
    directories = tuple(dict.fromkeys((*a.directories, *b.directories)))
    return wheels.Wheelhouse(directories, _digest(a.digest, b.digest))


# --- listing ----------------------------------------------------------------------------------------


def _ladder_images(builder: ImageBuilder, label: str | None = None) -> list[LadderImage]:
    services = builder.list_images(f"{LABEL_LAYER}=service")
    torch_layers = builder.list_images(f"{LABEL_LAYER}=torch")
    key, has_value, value = (label or "").partition("=")
    found = []
    for layer in ("python", "torch"):
        for image in builder.list_images(f"{LABEL_LAYER}={layer}"):
            if label and (key not in image.labels or (has_value and image.labels[key] != value)):
                continue
            names = [t for t in image.tags if t.startswith(BASE_REPOSITORY.format(layer=layer) + ":")] or list(
                image.tags
            )
            if not names:
                continue
            ref = names[0]
            if layer == "torch":
                users = [s for s in services if f"torch={ref}" in s.labels.get("mlctl.ladder", "")]
            else:
                users = [s for s in services if f"python={ref}" in s.labels.get("mlctl.ladder", "")]
                users += [t for t in torch_layers if t.labels.get("mlctl.parent") == ref and t not in users]
            used_by = sorted({u.labels.get("mlctl.service") or _base_name(u) for u in users})
            found.append(LadderImage(layer, ref, image.size, image.created, tuple(used_by)))
    return found


# --- helpers ----------------------------------------------------------------------------------------


def _base_name(image: LocalImage) -> str:
    layer = image.labels.get(LABEL_LAYER, "")
    mine = [t for t in image.tags if t.startswith(BASE_REPOSITORY.format(layer=layer) + ":")]
    return (mine or list(image.tags) or [image.id[:19]])[0]


def _with_labels(dockerfile: str, labels: dict[str, str]) -> str:
    """The Dockerfile with one final LABEL instruction (one builder step, whatever the count)."""
    if not labels:
        return dockerfile
    pairs = " \\\n    ".join(f"{key}={json.dumps(value)}" for key, value in sorted(labels.items()))
    return dockerfile.rstrip("\n") + f"\nLABEL {pairs}\n"


def _digest(*parts: str | bytes) -> str:
    total = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else part.encode()
        total.update(hashlib.sha256(data).digest())
    return total.hexdigest()


def _render(template: str, **values: Any) -> str:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(template).render(**values)
