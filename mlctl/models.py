"""Typed results handed from step to step and printed as they are by ``--json``.

``ServiceConfig (mlctl.yaml) -> ScaffoldResult -> BuildResult -> RenderedRelease -> DeployResult``.
Results are frozen dataclasses of plain values so that ``to_data`` turns any of them into JSON.
"""

from __future__ import annotations

import dataclasses
import enum
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


@dataclass(frozen=True)
class ImageRef:
    """An image in a repository, by tag and, once pushed or pulled, by digest."""

    repository: str
    tag: str
    digest: str | None = None

    @property
    def reference(self) -> str:
        """``repository:tag@digest`` when the digest is known, else ``repository:tag``."""
        return f"{self.repository}:{self.tag}" + (f"@{self.digest}" if self.digest else "")


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
    image: str
    digest: str | None
    #: Layers by final status: "pushed", "exists" (already in the registry), "mounted" (from another repository).
    layers: Mapping[str, int]
    bytes_pushed: int


@dataclass(frozen=True)
class BuildResult:
    """What ``mlctl build`` made: the service image, with the layers under it and what was pushed."""

    json_properties: ClassVar[tuple[str, ...]] = ("reference",)

    service: str
    image: ImageRef
    tags: tuple[str, ...]
    dirty: bool
    layers: tuple[LayerResult, ...]
    pushes: tuple[PushResult, ...]
    labels: Mapping[str, str]

    @property
    def reference(self) -> str:
        return self.image.reference


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
class RenderedRelease:
    """The chart rendered for a service: values and manifests (template file -> YAML)."""

    release: str
    namespace: str
    chart_version: str
    values: Mapping[str, Any]
    manifests: Mapping[str, str]


@dataclass(frozen=True)
class PodState:
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
class ReleaseRevision:
    revision: int
    status: str
    updated: str
    chart: str
    description: str


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
