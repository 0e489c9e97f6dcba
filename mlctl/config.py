"""``mlctl.yaml``: the one source of truth for a service.

The file is parsed with ruamel.yaml (which keeps line numbers) and validated with pydantic
(``extra="forbid"``, strict types). Every problem is reported at once, each naming the file, the
line and the key path::

    mlctl.yaml:14 resources.gpu.count: must be >= 0, got -1
    mlctl.yaml:9 serving.max_batch_sise: unknown key (did you mean 'max_batch_size'?)

Three layers make the effective config, later ones winning:

1. the file itself;
2. ``environments.<env>`` in the same file, when an environment is selected (``--env``);
3. ``MLCTL_CONFIG__<SECTION>__<KEY>`` environment variables, e.g.
   ``MLCTL_CONFIG__IMAGE__REGISTRY=ghcr.io/acme``. They are never silent: every one is listed in
   :attr:`LoadedConfig.overrides` and the CLI announces them.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from mlctl.errors import ConfigError, ConfigProblem, NotAServiceError, NotFoundError
from mlctl.models import ConfigOverride
from mlctl.names import dns_label_problem, service_name_problem

CONFIG_FILE = "mlctl.yaml"
ENV_PREFIX = "MLCTL_CONFIG__"
DEFAULT_ENVIRONMENTS = ("dev", "staging", "prod")

_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
# ASCII digits only ([0-9], not \d, which takes any Unicode digit, Arabic-Indic ones too); matched whole (fullmatch:
# '$' would let a trailing newline through).
_VERSION = re.compile(r"[0-9]+\.[0-9]+(\.[0-9]+)?")
_APP_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_REPOSITORY = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*")
# The registry part of an image reference, as Docker's reference grammar has it: a host name
# (components of letters, digits and '-', joined by '.') or a bracketed IPv6 address, an optional
# port, then path components of lowercase letters and digits joined by '.', '_', '__' or dashes.
_DNS_COMPONENT = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REGISTRY_HOST = re.compile(rf"({_DNS_COMPONENT}(?:\.{_DNS_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::([0-9]{{1,5}}))?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: The schemes ``model.uri`` is downloaded from (source uri).
WEIGHTS_SCHEMES = ("http", "https", "file")


def _quantity(value: Any) -> Any:
    """Kubernetes quantities may be written as numbers in YAML; the API wants strings."""
    if isinstance(value, bool):
        return value  # let the str check reject it with its own message
    if isinstance(value, int | float):
        value = str(value)
    if isinstance(value, str) and not _QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (examples: 2, 500m, 8Gi)")
    return value


Quantity = Annotated[str, BeforeValidator(_quantity)]


def _auto_or_number(what: str, low: float, high: float, kind: type) -> Any:
    """A validator for settings that take a number in [low, high] or "auto"."""

    def check(value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
            raise ValueError(f"must be {what} or 'auto', got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low:g} to {high:g}, got {value}")
        return kind(value)

    return BeforeValidator(check)


BatchDelay = Annotated[float | Literal["auto"], _auto_or_number("a number of milliseconds", 0, 10_000, float)]
Threads = Annotated[int | Literal["auto"], _auto_or_number("a number of threads", 1, 1024, int)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TemplateRef(_Section):
    """The template a service came from, for ``mlctl update``."""

    name: str
    version: str
    answers: dict[str, str | int | float | bool] = Field(default_factory=dict)


class RuntimeConfig(_Section):
    """Python, PyTorch and the accelerator the image is built for."""

    python: str = "3.11"
    torch: str = "2.13.0"
    accelerator: Literal["cuda", "cpu"] = "cuda"
    #: CUDA version of the image; None picks the newest one the torch release supports.
    cuda: str | None = None

    @field_validator("python", "torch", "cuda")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None and not _VERSION.fullmatch(value):
            raise ValueError(f"{value[:40]!r} is not a version like 3.11 or 2.13.0 (ASCII digits and dots)")
        return value


class ModelConfig(_Section):
    """Where the weights come from, and whether they are baked into the image.

    ``source`` is one of:

    * ``prepare``: ``prepare`` makes the file at ``path`` when it is missing (``mlctl build`` runs it in
      the service's own image environment, ``mlctl run`` in the service's Python);
    * ``uri``: downloaded from ``uri`` (``http(s)://`` or ``file://``) once into mlctl's content-addressed
      cache, and refused unless its digest is ``sha256``;
    * ``file``: the file or directory at ``path`` in the service (committed, or put there by other means);
    * ``external``: not in the image; the server loads ``uri`` at start (a mounted path, or a URI the
      service's loader reads);
    * ``baked`` (the default): ``prepare`` when ``prepare`` is set, else ``file``.

    Every source but ``external`` puts the weights in a layer of their own, at ``path`` under the image's
    service directory, and their digest into the image's tag and its ``mlctl.weights`` label.
    """

    source: Literal["prepare", "uri", "file", "external", "baked"] = "baked"
    #: The weights in the service (prepare, file) and, under the image's service directory, in the image.
    path: str = "weights/model.pt"
    #: A command that makes the weights at ``path`` (run from the service directory).
    prepare: str | None = None
    #: For ``uri``: where the weights are downloaded from. For ``external``: what the server loads at start.
    uri: str | None = None
    #: The weights' SHA-256 (64 hex digits): required with ``uri``, and checked for any weights in the image.
    sha256: str | None = None

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digest = value.removeprefix("sha256:").lower()
        if not _SHA256.fullmatch(digest):
            raise ValueError(f"{value!r} is not a SHA-256 digest (64 hex digits, e.g. from `sha256sum FILE`)")
        return digest

    @property
    def kind(self) -> Literal["prepare", "uri", "file", "external"]:
        """The source with ``baked`` resolved: ``prepare`` when a command is set, else ``file``."""
        if self.source == "baked":
            return "prepare" if self.prepare else "file"
        return self.source

    @property
    def baked(self) -> bool:
        """Whether the weights are in the image (every source but ``external``)."""
        return self.kind != "external"


class CompileConfig(_Section):
    """Optional ``torch.compile`` during warm-up."""

    enabled: bool = False
    mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"


class ServingConfig(_Section):
    """How the HTTP server runs the model."""

    #: The ASGI application, ``module:attribute``.
    app: str
    port: int = Field(default=8080, ge=1, le=65535)
    max_batch_size: int = Field(default=16, ge=1, le=4096)
    #: Milliseconds a batch waits to fill, or "auto": 0 on a CPU, 2 on a GPU.
    max_batch_delay_ms: BatchDelay = "auto"
    max_queue: int = Field(default=256, ge=1)
    #: Generations (generate templates) served at once.
    max_concurrency: int = Field(default=4, ge=1, le=1024)
    workers: int = Field(default=1, ge=1, le=64)
    request_timeout_s: float = Field(default=30.0, gt=0)
    #: On SIGTERM, how long in-flight requests may take to finish.
    graceful_shutdown_s: float = Field(default=30.0, ge=0, le=3600)
    max_payload_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    warmup_batch_sizes: list[int] = Field(default_factory=lambda: [1])
    #: torch's intra-op threads, or "auto": the CPUs the container may use, less one for the server.
    torch_threads: Threads = "auto"
    compile: CompileConfig = Field(default_factory=CompileConfig)
    #: /metrics on a port of its own (the chart opens it to Prometheus alone); `mlctl run` keeps it on `port`.
    metrics_port: int = Field(default=9090, ge=1, le=65535)
    # Client limits per replica (the runtime's README lists what each does).
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    body_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    #: Bytes per second a request body must keep up once body_timeout_s is spent.
    body_min_rate: int = Field(default=64 * 1024, ge=1)
    keepalive_timeout_s: float = Field(default=75.0, gt=0, le=3600)
    max_connections: int = Field(default=1024, ge=1)
    max_buffered_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=1)

    @field_validator("app")
    @classmethod
    def _app(cls, value: str) -> str:
        if not _APP_REF.match(value):
            raise ValueError(f"{value!r} is not 'module:attribute' (example: fraud_scorer.server:app)")
        return value

    @field_validator("warmup_batch_sizes")
    @classmethod
    def _warmup(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError("batch sizes must be >= 1")
        return value


class GpuConfig(_Section):
    """GPUs per replica and the GPU products allowed."""

    count: int = Field(default=0, ge=0, le=16)
    #: Allowed ``nvidia.com/gpu.product`` values; empty means any.
    products: list[str] = Field(default_factory=list)


class ResourcesConfig(_Section):
    """What one replica asks for: GPUs, CPU, memory and /dev/shm."""

    gpu: GpuConfig = Field(default_factory=GpuConfig)
    cpu: Quantity = "2"
    memory: Quantity = "4Gi"
    shm_size: Quantity = "1Gi"


class ProbesConfig(_Section):
    """The start-up budget: model load and warm-up, worst case."""

    #: Seconds a replica may take from container start to ready (model load and warm-up).
    startup_budget_s: int = Field(default=300, ge=10, le=7200)


class ImageConfig(_Section):
    """Where the service image is pushed: registry and repository."""

    #: Registry and path prefix, e.g. ``ghcr.io/acme``; empty keeps images local.
    registry: str = ""
    #: Repository under the registry; defaults to the service name.
    repository: str | None = None

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        problem = registry_problem(value)
        if problem:
            raise ValueError(problem)
        return value.rstrip("/")

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is not None and not _REPOSITORY.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid image repository (lowercase, '/', '.', '_', '-')")
        return value


def registry_problem(value: str) -> str | None:
    """What is wrong with ``image.registry`` (``host[:port][/path]``), or None.

    Whatever passes is letters, digits and ``.-_:/[]`` only, so it lands safely in image
    references, Helm values and the CI pipelines' YAML and shell.
    """
    if value == "":
        return None
    shown = repr(value[:80]) + ("..." if len(value) > 80 else "")
    if "://" in value:
        return f"{shown} holds a scheme: write the registry without it, e.g. ghcr.io/acme"
    host, _, path = value.rstrip("/").partition("/")
    found = _REGISTRY_HOST.fullmatch(host)
    if found is None:
        return f"{shown}: {host[:80]!r} is not a registry host (host[:port], e.g. ghcr.io or registry.local:5000)"
    if found.group(2) is not None and not 0 < int(found.group(2)) < 65536:
        return f"{shown}: port {found.group(2)} is not from 1 to 65535"
    # Docker's rule (distribution/reference): a first part is a registry if it holds '.' or ':', is
    # localhost, or has capitals; otherwise it is a namespace on Docker Hub.
    if not any(c in host for c in ".:") and host != "localhost" and host == host.lower():
        return (
            f"{shown}: Docker reads a first part without '.' or ':' (other than localhost) as a Docker Hub "
            f"namespace, not a registry: write docker.io/{value[:80]} for Docker Hub"
        )
    for component in path.split("/") if path else ():
        if not _PATH_COMPONENT.fullmatch(component):
            what = "is not lowercase" if _PATH_COMPONENT.fullmatch(component.lower()) else "is not a path component"
            return f"{shown}: {component[:80]!r} {what} (lowercase letters and digits, joined by '.', '_' or '-')"
    if len(value) > 200:
        return f"{shown} is longer than 200 characters (an image name may have 255, the repository included)"
    return None


class AutoscalingConfig(_Section):
    """Horizontal autoscaling on a serving signal."""

    enabled: bool = False
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=3, ge=1)
    metric: Literal["cpu", "queue_depth", "inflight"] = "queue_depth"
    target: float = Field(default=8.0, gt=0)


def _surge_or_unavailable(value: Any) -> Any:
    """A rollout's maxSurge or maxUnavailable: a count, a percentage of the replicas, or "auto"."""
    if value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 1000:
            raise ValueError(f"must be from 0 to 1000 pods, got {value}")
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{1,3}%", value) and int(value[:-1]) <= 100:
        return value
    raise ValueError(f"must be a number of pods, a percentage like '25%', or 'auto', got {_show(value)}")


SurgeOrUnavailable = Annotated[int | str, BeforeValidator(_surge_or_unavailable)]


class StrategyConfig(_Section):
    """How an update replaces the pods: how many extra may start, how many may be down (Kubernetes' terms)."""

    #: Pods started beyond the replicas while updating; auto: 1 when a node has the GPUs for it, else 0.
    max_surge: SurgeOrUnavailable = "auto"
    #: Replicas that may be down while updating; auto: 0 when a surge pod fits, else 1 (the update has downtime).
    max_unavailable: SurgeOrUnavailable = "auto"


class DeployConfig(_Section):
    """Where and how the service is deployed."""

    #: cluster: a Helm release on Kubernetes; local: a container on this machine's Docker engine.
    target: Literal["cluster", "local"] = "cluster"
    #: None: the namespace of the kube context (or of the pod, in-cluster), else "default".
    namespace: str | None = None
    #: The kube context to deploy with (e.g. one per cluster for staging and prod); None: the current one.
    context: str | None = None
    #: Only pushed (by digest), clean images: the prod rule. None: true for environments named prod or production.
    protected: bool | None = None
    replicas: int = Field(default=1, ge=0, le=1000)
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    #: Seconds a pod of a new revision may wait for a node (unschedulable) before the deploy fails and rolls back.
    unschedulable_budget_s: int = Field(default=120, ge=1, le=3600)
    #: Environments that resolve to this one's cluster, namespace and release are meant to share it (else refused).
    shared_release: bool = False

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = dns_label_problem(value)
        if problem:
            raise ValueError(f"namespace {value!r} {problem}")
        return value


class ServiceConfig(_Section):
    """The whole of ``mlctl.yaml``."""

    name: str
    template: TemplateRef | None = None
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    serving: ServingConfig
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    #: Per-environment overrides of the sections above, e.g. ``environments.prod.deploy.replicas``.
    environments: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        problem = service_name_problem(value)
        if problem:
            raise ValueError(f"service name {value!r} {problem}")
        return value

    @property
    def image_repository(self) -> str:
        """``registry/repository`` (or just the repository when no registry is set)."""
        repo = self.image.repository or self.name
        return f"{self.image.registry.rstrip('/')}/{repo}" if self.image.registry else repo


#: Keys an environment (or an MLCTL_CONFIG__ variable) may not change.
_FIXED_KEYS = ("name", "template", "environments")


def semantic_problems(config: ServiceConfig) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Checks that span several keys, as ``(key path, message)``."""
    gpus = config.resources.gpu.count
    if config.runtime.accelerator == "cpu":
        if gpus:
            yield ("resources", "gpu", "count"), f"{gpus} GPU(s) requested but runtime.accelerator is 'cpu'"
        if config.runtime.cuda is not None:
            yield ("runtime", "cuda"), "set only with runtime.accelerator 'cuda'"
    if config.resources.gpu.products and not gpus:
        yield ("resources", "gpu", "products"), "GPU products are named but resources.gpu.count is 0"
    yield from _model_problems(config.model)
    scaling = config.deploy.autoscaling
    if scaling.enabled and scaling.min_replicas > scaling.max_replicas:
        yield (
            ("deploy", "autoscaling", "min_replicas"),
            f"{scaling.min_replicas} is above max_replicas ({scaling.max_replicas})",
        )
    if config.serving.metrics_port == config.serving.port:
        yield ("serving", "metrics_port"), f"{config.serving.metrics_port} is serving.port too; pick another"
    if config.serving.max_buffered_bytes < config.serving.max_payload_bytes:
        yield (
            ("serving", "max_buffered_bytes"),
            f"{config.serving.max_buffered_bytes} is below serving.max_payload_bytes "
            f"({config.serving.max_payload_bytes}): no request of the largest size could be read",
        )
    strategy = config.deploy.strategy
    if _is_zero(strategy.max_surge) and _is_zero(strategy.max_unavailable):
        yield (
            ("deploy", "strategy"),
            "max_surge and max_unavailable are both 0: an update could neither start a new pod nor stop an old one",
        )
    too_big = [b for b in config.serving.warmup_batch_sizes if b > config.serving.max_batch_size]
    if too_big:
        yield (
            ("serving", "warmup_batch_sizes"),
            f"{too_big} exceed serving.max_batch_size ({config.serving.max_batch_size})",
        )
    for env in config.environments:
        problem = dns_label_problem(env, max_length=20)
        if problem:
            yield ("environments", env), f"environment name {env!r} {problem}"


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


def _model_problems(model: ModelConfig) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """What ``model:`` says that cannot work together: each source's required keys, and keys it would ignore."""
    kind, source = model.kind, model.source
    if kind == "prepare" and not model.prepare:
        yield ("model", "prepare"), "required when model.source is 'prepare' (the command that makes the weights)"
    if kind == "uri":
        if not model.uri:
            yield ("model", "uri"), "required when model.source is 'uri' (where the weights are downloaded from)"
        else:
            yield from _weights_uri_problems(model.uri)
        if model.sha256 is None:
            yield (
                ("model", "sha256"),
                "required when model.source is 'uri': mlctl downloads the weights when it builds and checks them "
                "(for weights the server loads at start, use source: external)",
            )
    if kind == "external":
        if not model.uri:
            yield ("model", "uri"), "required when model.source is 'external' (what the server loads at start)"
        if model.sha256 is not None:
            yield ("model", "sha256"), "only for weights in the image (source 'external' loads model.uri at start)"
    if model.prepare and kind != "prepare":
        yield ("model", "prepare"), f"only used with source 'prepare' or 'baked', not {source!r}"
    elif model.prepare is not None:
        yield from _prepare_problems(model.prepare)
    if model.uri and kind in ("prepare", "file"):
        yield ("model", "uri"), f"only used with source 'uri' or 'external', not {source!r}"
    if kind != "external":
        path = Path(model.path)
        if not model.path or path.is_absolute() or ".." in path.parts:
            yield ("model", "path"), f"{model.path!r} must be a relative path inside the service"


def _prepare_problems(command: str) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """``model.prepare`` is run without a shell, split as a POSIX shell splits words: it must split into a command."""
    import shlex

    try:
        words = shlex.split(command)
    except ValueError as exc:  # an unclosed quote, a trailing backslash
        yield ("model", "prepare"), f"{command!r} cannot be split into words ({str(exc).lower()})"
        return
    if not words:
        yield ("model", "prepare"), "holds no command (the command that makes the weights, e.g. python -m svc.train)"


def _weights_uri_problems(uri: str) -> Iterator[tuple[tuple[str | int, ...], str]]:
    import urllib.parse

    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme not in WEIGHTS_SCHEMES:
        schemes = ", ".join(f"{s}://" for s in WEIGHTS_SCHEMES)
        yield ("model", "uri"), f"{uri!r}: mlctl downloads weights from {schemes} URIs"
    elif parsed.scheme != "file" and not parsed.hostname:
        yield ("model", "uri"), f"{uri!r} names no host"
    elif parsed.username or parsed.password:
        yield (
            ("model", "uri"),
            "holds credentials, which would be committed with mlctl.yaml: put the weights where the build can "
            "read them without (or use a file:// path the CI job downloads to)",
        )


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from."""

    path: Path
    config: ServiceConfig
    environment: str | None
    overrides: tuple[ConfigOverride, ...]

    @property
    def directory(self) -> Path:
        return self.path.parent


# --- locating and loading ------------------------------------------------------------------------


def find_service_dir(start: Path) -> Path:
    """The nearest directory at or above ``start`` holding ``mlctl.yaml``."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / CONFIG_FILE).is_file():
            return directory
    raise NotAServiceError(
        f"no {CONFIG_FILE} in {start} or any parent: this is not an mlctl service",
        hint="create one with `mlctl new NAME`, or point at one with -C DIR",
    )


def load_service_config(
    project_dir: Path | str | None = None,
    *,
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Find, parse and validate ``mlctl.yaml``.

    Args:
        project_dir: A directory inside the service (default: the current directory).
        env: An environment under ``environments:`` whose overrides apply.
        environ: Environment variables to take ``MLCTL_CONFIG__*`` overrides from (default ``os.environ``).

    Raises:
        NotAServiceError: No ``mlctl.yaml`` at or above ``project_dir``.
        ConfigError: The file is malformed or invalid; ``problems`` lists every problem.
        NotFoundError: ``env`` is not one of the file's environments.
    """
    directory = find_service_dir(Path(project_dir) if project_dir else Path.cwd())
    path = directory / CONFIG_FILE
    display = _display_path(path)
    raw, index = _parse_yaml(_read_config(path, display), display)
    environ = os.environ if environ is None else environ
    layers = [_Layer(raw, {k: _Origin(display, line, "") for k, line in index.items()}, display)]
    problems = _validate(layers, reported=set())
    base_ok = not problems

    envs = raw.get("environments")
    env_layers: dict[str, _Layer] = {}
    if isinstance(envs, dict):
        for name, overrides in envs.items():
            prefix = ("environments", name)
            if not isinstance(overrides, dict):
                continue  # the base validation reports "must be a mapping"
            sub = {k[2:]: line for k, line in index.items() if k[:2] == prefix and len(k) > 2}
            layer = _Layer(
                dict(overrides),
                {k: _Origin(display, line, f"environments.{name}.") for k, line in sub.items()},
                display,
            )
            problems += _fixed_key_problems(layer)
            env_layers[str(name)] = layer
            reported = {(p.key, p.message) for p in problems}
            problems += _validate([*layers, layer], reported=reported, context=f"with environments.{name}")

    if env is not None and env not in env_layers:
        import difflib

        known = ", ".join(env_layers) or "none"
        close = difflib.get_close_matches(env, list(env_layers), n=1)
        raise NotFoundError(
            f"unknown environment {env!r}: {display} defines {known}",
            hint=f"did you mean {close[0]!r}?" if close else f"add it under environments: in {display}",
        )
    effective = [*layers, env_layers[env]] if env is not None else list(layers)

    env_layer, overrides = _environment_layer(environ, raw)
    if env_layer is not None:
        problems += _fixed_key_problems(env_layer)
        reported = {(p.key, p.message) for p in problems}
        problems += _validate([*effective, env_layer], reported=reported, only_from=env_layer)
        effective.append(env_layer)

    if problems:
        raise ConfigError(
            f"{display} is invalid ({len(problems)} problem{'s' if len(problems) > 1 else ''})",
            problems=problems,
            hint=None if base_ok else f"fix {display} and run `mlctl config validate`",
        )
    config = ServiceConfig.model_validate(_merge_layers(effective))
    final_overrides = tuple(
        ConfigOverride(o.variable, o.key, _get(config.model_dump(), o.key), o.file_value) for o in overrides
    )
    return LoadedConfig(path=path, config=config, environment=env, overrides=final_overrides)


def parse_config_text(text: str, *, filename: str = CONFIG_FILE) -> ServiceConfig:
    """Validate config text that is not (yet) a file, e.g. a template's rendered ``mlctl.yaml``."""
    raw, index = _parse_yaml(text, filename)
    problems = _validate([_Layer(raw, {k: _Origin(filename, v, "") for k, v in index.items()}, filename)], set())
    if problems:
        raise ConfigError(f"{filename} is invalid", problems=problems)
    return ServiceConfig.model_validate(raw)


# --- internals -----------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class _Origin:
    file: str
    line: int | None
    prefix: str


@dataclass
class _Layer:
    raw: dict[str, Any]
    origins: dict[Path_, _Origin]
    source: str


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _read_config(path: Path, display: str) -> bytes:
    """The file's bytes, never more than the parser accepts (a huge or endless file is not read whole)."""
    from mlctl.safe_yaml import MAX_BYTES

    try:
        with path.open("rb") as handle:
            return handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{display} cannot be read", problems=[ConfigProblem(display, None, "", f"cannot be read: {exc.strerror}")]
        ) from None


def _parse_yaml(text: str | bytes, filename: str) -> tuple[dict[str, Any], dict[Path_, int]]:
    from mlctl import safe_yaml

    doc, index = safe_yaml.load(text, filename)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{filename} must be a mapping",
            problems=[ConfigProblem(filename, 1, "", f"the top level must be a mapping of keys, got {_show(doc)}")],
        )
    return doc, index


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, mapping by mapping (a copy; neither is changed).

    ``top`` over ``base``, mapping by mapping (a copy; neither is changed): how config layers and
    chart values (mlctl.yaml, then --values files, then --set) combine.
    """
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_layers(layers: list[_Layer]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.raw)
    return merged


def _origin_of(layers: list[_Layer], loc: Path_) -> tuple[_Origin | None, _Layer | None]:
    """The layer and origin that set the longest prefix of ``loc`` (later layers win)."""
    for cut in range(len(loc), -1, -1):
        prefix = loc[:cut]
        for layer in reversed(layers):
            if prefix in layer.origins:
                return layer.origins[prefix], layer
    return None, None


def _validate(
    layers: list[_Layer],
    reported: set[tuple[str, str]],
    *,
    context: str | None = None,
    only_from: _Layer | None = None,
) -> list[ConfigProblem]:
    merged = _merge_layers(layers)
    found: list[tuple[Path_, str]] = []
    try:
        config = ServiceConfig.model_validate(merged)
    except ValidationError as exc:
        for error in exc.errors():
            found.append((tuple(error["loc"]), _message(error)))
    else:
        found.extend(semantic_problems(config))

    problems = []
    top = layers[-1]
    for loc, message in found:
        origin, layer = _origin_of(layers, loc)
        if only_from is not None and layer is not only_from:
            continue
        key = (origin.prefix if origin else "") + _dotted(loc)
        if (key, message) in reported:
            continue
        reported.add((key, message))
        if layer is not top and context:
            message = f"{message} ({context})"
        file = origin.file if origin else layers[0].source
        problems.append(ConfigProblem(file, origin.line if origin else None, key, message))
    return problems


def _fixed_key_problems(layer: _Layer) -> list[ConfigProblem]:
    problems = []
    for key in _FIXED_KEYS:
        if key in layer.raw:
            origin = layer.origins.get((key,))
            problems.append(
                ConfigProblem(
                    origin.file if origin else layer.source,
                    origin.line if origin else None,
                    (origin.prefix if origin else "") + key,
                    "cannot be overridden per environment",
                )
            )
    for key in _FIXED_KEYS:
        layer.raw.pop(key, None)
    return problems


def _environment_layer(
    environ: Mapping[str, str], file_raw: dict[str, Any]
) -> tuple[_Layer | None, list[ConfigOverride]]:
    from mlctl import safe_yaml

    raw: dict[str, Any] = {}
    origins: dict[Path_, _Origin] = {}
    overrides = []
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in variable[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ConfigError(
                f"{variable}: expected {ENV_PREFIX}SECTION__KEY, e.g. {ENV_PREFIX}IMAGE__REGISTRY",
                problems=[ConfigProblem(variable, None, "", f"expected {ENV_PREFIX}SECTION__KEY")],
            )
        text = environ[variable]
        try:
            value = safe_yaml.load(text, variable)[0] if text.strip() else ""
        except ConfigError:
            value = text  # not YAML (or too much of it): the text itself, validated as a string
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
        for i in range(1, len(parts) + 1):
            origins.setdefault(tuple(parts[:i]), _Origin(variable, None, ""))
        origins[tuple(parts)] = _Origin(variable, None, "")
        key = ".".join(parts)
        overrides.append(ConfigOverride(variable, key, value, _get(file_raw, key)))
    if not raw:
        return None, []
    return _Layer(raw, origins, "environment"), overrides


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _dotted(loc: Path_) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _show(value: Any) -> str:
    """A value the way it looks in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    loc: Path_ = tuple(error["loc"])
    if kind == "extra_forbidden":
        return "unknown key" + _did_you_mean(loc)
    if kind == "missing":
        return "required key is missing"
    simple = {
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "list_type": "must be a list",
    }
    if kind in simple:
        return f"{simple[kind]}, got {_show(got)}"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}, got {_show(got)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {_show(got)}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:]


def _did_you_mean(loc: Path_) -> str:
    model = _model_at(loc[:-1])
    if model is None or not isinstance(loc[-1], str):
        return ""
    known = list(model.model_fields)
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return " (known keys: " + ", ".join(known) + ")"


def _model_at(loc: Path_) -> type[BaseModel] | None:
    annotation: Any = ServiceConfig
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(part, str):
            field = annotation.model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
        elif typing.get_origin(annotation) in (dict, list):
            annotation = typing.get_args(annotation)[-1]
        else:
            return None
    annotation = _unwrap(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation
