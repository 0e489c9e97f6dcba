"""Typed results handed from step to step and printed as they are by ``--json``.

``ServiceConfig (mlctl.yaml) -> ScaffoldResult -> BuildResult -> RenderedRelease -> DeployResult``.
Results are frozen dataclasses of plain values so that ``to_data`` turns any of them into JSON.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, ClassVar

AnswerValue = str | int | float | bool


@dataclass(frozen=True)
class QuestionInfo:
    """One question a template asks, as ``templates show`` reports it."""

    name: str
    type: str
    help: str
    default: AnswerValue | None
    choices: tuple[str, ...] = ()
    #: "accelerator": the default is this machine's (cuda where an NVIDIA GPU is seen, else cpu).
    machine: str | None = None


@dataclass(frozen=True)
class TemplateInfo:
    """A template found on this machine."""

    name: str
    version: str
    description: str
    source: str
    questions: tuple[QuestionInfo, ...] = ()


@dataclass(frozen=True)
class PlannedFile:
    """A file a scaffold writes (or, with ``--dry-run``, would write)."""

    path: str
    size: int
    executable: bool = False


@dataclass(frozen=True)
class ScaffoldResult:
    """What ``mlctl new`` made."""

    name: str
    path: str
    template: str
    template_version: str
    answers: Mapping[str, AnswerValue]
    files: tuple[PlannedFile, ...]
    dry_run: bool
    git_commit: str | None = None
    next_steps: tuple[str, ...] = ()
    #: The answers taken as defaults without asking (--yes, no terminal), each with why it is that value.
    defaults: tuple[DefaultAnswer, ...] = ()
    #: What the user should know about the answers (cuda asked for on a machine without a GPU).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DefaultAnswer:
    """An answer ``mlctl new`` took as its default, without asking."""

    name: str
    value: AnswerValue
    #: Where the default comes from: "the template's default", or what was seen on this machine.
    why: str


class CheckStatus(str, enum.Enum):
    """Outcome of one ``mlctl doctor`` check."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True)
class Check:
    """One line of ``mlctl doctor``."""

    name: str
    status: CheckStatus
    detail: str
    required: bool
    hint: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    """Every check ``mlctl doctor`` ran; ``ok`` is false when a required one failed."""

    #: Computed properties that ``to_data`` includes in the JSON.
    json_properties: ClassVar[tuple[str, ...]] = ("ok",)

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return not any(c.status is CheckStatus.FAIL for c in self.checks)


@dataclass(frozen=True)
class ConfigOverride:
    """A value of mlctl.yaml replaced by an ``MLCTL_CONFIG__*`` environment variable."""

    variable: str
    key: str
    value: Any
    file_value: Any


_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
# The grammar of the distribution project's reference package (what Docker and registries accept): an
# optional host[:port], then lowercase path components joined by ".", "_", "__" or dashes; tags of
# word characters, dots and dashes, at most 128.
_HOST_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = re.compile(rf"{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?")
_PATH = re.compile(rf"{_PATH_PART}(?:/{_PATH_PART})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")


@dataclass(frozen=True)
class ImageRef:
    """An image in a repository, by tag and, once pushed or pulled, by digest."""

    repository: str
    tag: str
    digest: str | None = None

    @property
    def reference(self) -> str:
        """``repository:tag@digest`` when both are known; ``repository@digest`` or ``repository:tag``."""
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def tagged(self) -> str:
        """``repository:tag`` (``latest`` when there is no tag): what the engine's pull and push take."""
        return f"{self.repository}:{self.tag or 'latest'}"

    @classmethod
    def parse(cls, reference: str, *, source: str = "--image") -> ImageRef:
        """The one parser of image references: ``[registry[:port]/]repository[:tag][@sha256:...]``.

        A colon after the last slash starts the tag (``127.0.0.1:5000/repo`` has none).

        Raises:
            InputError: no repository, a digest that is not ``sha256:<64 hex digits>``, or a name or tag
                outside the reference grammar (spaces, capitals in the path); the message starts with
                ``source`` (where the reference came from).
        """
        from mlctl.errors import InputError

        name, _, digest = reference.strip().partition("@")
        if digest and not _DIGEST.fullmatch(digest):
            raise InputError(f"{source} {reference}: the digest must be sha256:<64 hex digits>")
        repository, tag = name, ""
        if ":" in name.rsplit("/", 1)[-1]:
            repository, tag = name.rsplit(":", 1)
        if not repository or (":" in name.rsplit("/", 1)[-1] and not tag):
            raise InputError(f"{source} {reference}: " + ("no repository" if not repository else "an empty tag"))
        if not _is_repository(repository) or (tag and not _TAG.fullmatch(tag)):
            raise InputError(
                f"{source} {reference!r}: not an image reference ([registry[:port]/]repository[:tag][@sha256:...]; "
                "the repository lowercase letters, digits and . _ - separators, no spaces)"
            )
        return cls(repository, tag, digest or None)


def _is_repository(name: str) -> bool:
    """Whether ``name`` is a repository name of the reference grammar.

    Its first part is a registry host when it holds a dot or a port, or is localhost (as Docker
    decides), else a path component like the rest.
    """
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return len(name) <= 255 and bool(_HOST.fullmatch(first)) and bool(_PATH.fullmatch(rest))
    return len(name) <= 255 and bool(_PATH.fullmatch(name))


@dataclass(frozen=True)
class LayerResult:
    """What ``mlctl build`` did with one layer of the ladder."""

    layer: str
    image: str
    #: "reused" (found locally), "pulled" (found in the registry) or "built".
    status: str
    #: Why it was built (the inputs that changed), or where it was found.
    reason: str
    seconds: float
    size: int
    #: Builder steps, and how many of them came from the builder's cache (built layers only).
    steps: int = 0
    cached_steps: int = 0


@dataclass(frozen=True)
class PushResult:
    """What a push of one image uploaded."""

    image: str
    digest: str | None
    #: Layers by final status: "pushed", "exists" (already in the registry), "mounted" (from another repository).
    layers: Mapping[str, int]
    bytes_pushed: int


@dataclass(frozen=True)
class BuildResult:
    """What ``mlctl build`` made: the service image, with the layers under it and what was pushed.

    ``mlctl build`` records it in the service (``mlctl.images.record``); ``mlctl deploy`` takes the
    image from there. Fields added later must have defaults: older records are read with them.
    """

    json_properties: ClassVar[tuple[str, ...]] = ("reference",)

    service: str
    #: By digest once pushed.
    image: ImageRef
    tags: tuple[str, ...]
    #: Built from uncommitted changes (a protected environment refuses it).
    dirty: bool
    layers: tuple[LayerResult, ...]
    pushes: tuple[PushResult, ...]
    #: The image's labels as the engine recorded them (``mlctl.min-driver``, ``mlctl.cuda``, OCI labels).
    labels: Mapping[str, str]
    #: When it was built, UTC, ISO 8601.
    built_at: str = ""
    #: The digest of the weights in the image (``sha256:...``, also its ``mlctl.weights`` label); None
    #: when it holds none (``model.source: external``).
    weights: str | None = None

    @property
    def reference(self) -> str:
        return self.image.reference

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> BuildResult:
        """A result as ``to_data`` wrote it (a build record); unknown keys are ignored.

        Raises:
            KeyError, TypeError, ValueError: the data is not a build result.
        """
        image = data["image"]
        return cls(
            service=str(data["service"]),
            image=ImageRef(str(image["repository"]), str(image["tag"]), image.get("digest") or None),
            tags=tuple(str(t) for t in data.get("tags", ())),
            dirty=bool(data["dirty"]),
            layers=tuple(_known(LayerResult, layer) for layer in data.get("layers", ())),
            pushes=tuple(_known(PushResult, push) for push in data.get("pushes", ())),
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            built_at=str(data.get("built_at", "")),
            weights=str(data["weights"]) if data.get("weights") else None,
        )


@dataclass(frozen=True)
class ReleaseImage:
    """The image a deploy installs, and what is known of it beyond its reference."""

    ref: ImageRef
    #: The image's labels where known (from the build record): the GPU gate reads ``mlctl.min-driver``.
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Built from uncommitted changes; None when unknown (an image named with --image that this
    #: service's build record does not hold).
    dirty: bool | None = None
    #: Where it came from, in words: "mlctl build", "--image", "staging".
    origin: str = "--image"

    @classmethod
    def from_build(cls, build: BuildResult) -> ReleaseImage:
        return cls(build.image, dict(build.labels), build.dirty, "mlctl build")

    @property
    def min_driver(self) -> str | None:
        """The NVIDIA driver the image needs (its ``mlctl.min-driver`` label), if known."""
        return self.labels.get("mlctl.min-driver") or None

    @property
    def weights(self) -> str | None:
        """The weights the image holds: its ``mlctl.weights`` label (``sha256:...``).

        Where the labels are unknown (an image of another machine's build), the 12 digits its
        ``-w`` tag carries (``sha256:0123456789ab``); None when neither says.
        """
        label = self.labels.get("mlctl.weights")
        if label:
            return label
        found = re.search(r"-w([0-9a-f]{12})$", self.ref.tag or "")
        return f"sha256:{found.group(1)}" if found else None


@dataclass(frozen=True)
class PlanEntry:
    """A line of ``mlctl images plan``."""

    layer: str
    image: str
    #: "present", "in registry" or "build".
    status: str
    reason: str


@dataclass(frozen=True)
class LadderImage:
    """A base layer image on this machine (``mlctl images list``)."""

    layer: str
    image: str
    size: int
    created: str
    used_by: tuple[str, ...]


@dataclass(frozen=True)
class RootResult:
    """A root image ``mlctl images root`` made (or found already made)."""

    image: str
    id: str
    #: "made", or "present" (made before; kept).
    status: str
    #: What it was made from: ``debian bookworm from http://deb.debian.org/debian``, ``from IMAGE``.
    source: str
    #: Its OS (/etc/os-release) and the Pythons it has.
    os: str
    pythons: tuple[str, ...]
    size: int
    seconds: float


@dataclass(frozen=True)
class RenderedRelease:
    """The chart rendered for a service: values and manifests (template file -> YAML)."""

    release: str
    namespace: str
    chart_version: str
    values: Mapping[str, Any]
    manifests: Mapping[str, str]


@dataclass(frozen=True)
class PodState:
    """A pod in words: what it is doing, on which node, with how many GPUs."""

    name: str
    phase: str
    ready: bool
    restarts: int
    node: str | None
    gpus: int
    #: What the pod is doing in words: "ready", "waiting for a node", "pulling the image", ...
    state: str


@dataclass(frozen=True)
class DeployResult:
    """What ``mlctl deploy`` did."""

    release: str
    namespace: str
    #: "deployed", "unchanged" (nothing to change: no new revision), or with --dry-run
    #: "would-install" / "would-upgrade".
    status: str
    revision: int | None
    image: str
    ready: int
    desired: int
    seconds: float
    warnings: tuple[str, ...] = ()
    pods: tuple[PodState, ...] = ()
    #: With --dry-run: the manifests Helm would apply (rendered against the cluster).
    manifest: str | None = None
    #: ``mlctl promote``: what it changed in the environment, resource by resource (as ``mlctl diff`` shows it).
    changes: tuple[ResourceChange, ...] = ()
    #: The weights the image holds (``sha256:...``; 12 digits when known only from the image's tag).
    weights: str | None = None


@dataclass(frozen=True)
class LocalDeployResult:
    """What ``mlctl deploy --target local`` did."""

    service: str
    container: str
    image: str
    #: Where the service answers, e.g. ``http://127.0.0.1:8080``.
    url: str
    #: "ready", or "started" with --no-wait.
    status: str
    gpus: int
    seconds: float
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocalStatus:
    """``mlctl status --target local``: the service's container on this machine's Docker engine."""

    service: str
    container: str
    image: str
    #: The engine's state of the container: running, exited, restarting...
    state: str
    #: Whether ``/v2/health/ready`` answers 200 now.
    ready: bool
    #: The image's HEALTHCHECK as the engine last ran it: starting, healthy, unhealthy ("" without one).
    health: str
    #: Where the service answers, e.g. ``http://127.0.0.1:8080`` ("" when no port is published).
    url: str
    started_at: str
    #: For a container that stopped: its exit code and whether it was killed for memory.
    exit_code: int = 0
    oom_killed: bool = False


@dataclass(frozen=True)
class DeleteResult:
    """What ``mlctl delete`` removed."""

    deleted: str
    namespace: str


@dataclass(frozen=True)
class DownResult:
    """What ``mlctl down`` stopped: the service's local containers."""

    stopped: tuple[str, ...]


@dataclass(frozen=True)
class ConfigCheck:
    """``mlctl config validate``: the file is valid (an invalid one is an error, exit 3)."""

    valid: bool
    path: str
    service: str
    environments: tuple[str, ...]


@dataclass(frozen=True)
class ConfigView:
    """``mlctl config show``: the effective config, and the variables that changed it."""

    path: str
    environment: str | None
    config: Mapping[str, Any]
    overrides: tuple[ConfigOverride, ...]


@dataclass(frozen=True)
class RuntimeWheel:
    """``mlctl runtime wheel``: the serving runtime's wheel, written for pip."""

    #: The wheel file (absolute).
    path: str
    #: The distribution it installs: mlctl-serve.
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class CiResult:
    """What ``mlctl ci generate`` did."""

    provider: str
    #: The pipeline file, relative to the service.
    path: str
    #: "created", "replaced", "unchanged", or with --dry-run "would be created" / "would be replaced".
    status: str
    warnings: tuple[str, ...]
    content: str


@dataclass(frozen=True)
class FileUpdate:
    """What ``mlctl update`` does to one file."""

    path: str
    #: updated (untouched by you), merged (your changes kept), conflict (markers to resolve), added,
    #: removed, skipped (you deleted it), kept (the template dropped it; you changed it).
    action: str
    diff: str


@dataclass(frozen=True)
class UpdateResult:
    """What ``mlctl update`` did, would do (--dry-run), or found (--check)."""

    template: str
    from_version: str
    to_version: str
    #: "up to date", "update available" (--check), "would update" (--dry-run) or "updated".
    status: str
    files: tuple[FileUpdate, ...]
    conflicts: int
    dry_run: bool


@dataclass(frozen=True)
class Promotion:
    """What ``mlctl promote`` is about to do, for a person to approve: the image, from where, and the changes."""

    image: str
    source: str
    source_revision: int
    to: str
    changes: tuple[ResourceChange, ...]


@dataclass(frozen=True)
class ReleaseRevision:
    """A revision of a release, as ``mlctl history`` lists it."""

    revision: int
    #: Helm's status: deployed, superseded, failed, pending-*.
    status: str
    updated: str
    chart: str
    description: str
    #: How its rollout went: healthy, failed, "not watched" (--no-wait), or unknown (made by another tool).
    rollout: str = "unknown"


@dataclass(frozen=True)
class ReleaseStatus:
    """``mlctl status``: the release and its pods."""

    release: str
    namespace: str
    revision: int
    status: str
    updated: str
    image: str
    ready: int
    desired: int
    pods: tuple[PodState, ...]


@dataclass(frozen=True)
class ResourceChange:
    """A resource a deploy would add, remove or change, with the diff."""

    resource: str
    #: "added", "removed" or "changed".
    change: str
    diff: str


@dataclass(frozen=True)
class RunPlan:
    """How ``mlctl run`` starts a service from source."""

    service: str
    directory: str
    url: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    #: A command that makes the missing weights before the server starts (mlctl.yaml model.prepare).
    prepare: str | None = None


def _known(cls: type[Any], data: Mapping[str, Any]) -> Any:
    """``cls(**data)`` with the keys ``cls`` has (a record may come from a newer mlctl)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def to_data(obj: Any) -> Any:
    """Turn a result (dataclasses, enums, paths, mappings) into JSON-ready data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for name in getattr(obj, "json_properties", ()):
            data[name] = to_data(getattr(obj, name))
        return data
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_data(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_data(v) for v in obj]
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj
