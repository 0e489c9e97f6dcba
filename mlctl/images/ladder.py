"""The layer ladder root -> python -> torch -> service: what each rung is made of.

Each base layer's tag is a hash of its inputs: the Dockerfile, its build arguments, the files it
copies, the wheels it installs, and its parent's identity (the root's layer digests and config, or
the parent layer's own input hash; never an image ID, which changes on every re-import). The
service layer is tagged from git (``mlctl.images.tags``) and carries its input hash as a label.
A change of one input names that input as the reason to rebuild.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlctl import contract
from mlctl.config import LoadedConfig
from mlctl.images import wheels
from mlctl.images.context import ServiceFiles
from mlctl.images.index import TorchWheel, expected_wheel
from mlctl.images.matrix import Resolved
from mlctl.resources import data_dir
from mlctl.weights import LABEL as WEIGHTS_LABEL

LAYERS = ("python", "torch", "service")
BASE_REPOSITORY = "mlctl/{layer}"
#: The label naming an image's rung of the ladder.
LABEL_LAYER = "org.mlctl.layer"
#: The labels saying which torch an image holds; the service image takes them from its torch layer.
TORCH_LABELS = ("mlctl.torch", "mlctl.torch-version", "mlctl.flavor", "mlctl.cuda", "mlctl.min-driver")
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
    #: "build", "present", "in registry" or "pulled", and why.
    status: str = "build"
    reason: str = ""
    #: Where the layer lives in the registry (base layers, when pushing).
    remote: str | None = None
    #: The service layer only: the context of its first steps (its dependencies over the torch layer),
    #: for a wheelhouse URL: the environment ``model.prepare`` runs in.
    make_deps_context: Callable[[str], bytes] | None = None

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs, sort_keys=True).encode()).hexdigest()

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.tag}"


def base_layers(
    resolved: Resolved, root_ref: str, root_identity: str, wheels_digest: str, torch_wheel: TorchWheel
) -> tuple[Layer, Layer]:
    """The python and torch layers of one matrix row, with their inputs, build arguments and labels.

    The torch layer's labels say what resolution found (``torch_wheel``); its build installs exactly
    that version, and ``mlctl.images.verify`` checks the built layer says the same when run.
    """
    base = data_dir("base_images")
    labels = base_labels(resolved, torch_wheel)
    python_files = {name: (base / "python" / name).read_bytes() for name in ("Dockerfile", "install-python.sh")}
    python = _base_layer(
        "python",
        inputs={
            "dockerfile": digest(python_files["Dockerfile"], python_files["install-python.sh"]),
            "args": digest(resolved.python),
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
            "dockerfile": digest(torch_template),
            "args": digest(resolved.torch_requirement, resolved.flavor),
            "parent": python.digest,
            "wheels": wheels_digest,
        },
        labels={**labels, LABEL_LAYER: "torch", "mlctl.parent": python.image},
        buildargs={
            "BASE": python.image,
            "TORCH_REQUIREMENT": resolved.torch_requirement,
            "WHEELHOUSE_DIGEST": wheels_digest[:16],
        },
        files=lambda url: {"Dockerfile": render_template(torch_template, wheelhouse_url=url).encode()},
    )
    return python, torch


def render_row(resolved: Resolved) -> dict[str, dict[str, Any]]:
    """What the base layers of one matrix row would be built from (no engine needed).

    What the base layers of one matrix row would be built from (no engine needed): each layer's
    Dockerfile as sent to the builder, its build arguments and its labels.
    """
    import io
    import tarfile

    url = f"http://127.0.0.1:{wheels.PREFERRED_PORT}/"
    rendered: dict[str, dict[str, Any]] = {}
    layers = base_layers(
        resolved,
        resolved.root,
        digest("unbuilt", resolved.root),
        digest("wheels"),
        expected_wheel(resolved, resolved.index_url),
    )
    for layer in layers:
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


def base_labels(resolved: Resolved, torch_wheel: TorchWheel) -> dict[str, str]:
    """The labels of the torch layer: Python, and the torch wheel resolution found.

    The wheel's version, flavour, CUDA, file and where it came from, with the driver floor of its CUDA.
    """
    labels = {
        "mlctl.python": resolved.python,
        "mlctl.torch": torch_wheel.public,
        "mlctl.torch-version": torch_wheel.version,
        "mlctl.torch-wheel": torch_wheel.filename,
        "mlctl.flavor": torch_wheel.flavor,
        "mlctl.wheel-index": torch_wheel.source,
    }
    if torch_wheel.cuda:
        labels["mlctl.cuda"] = torch_wheel.cuda
        labels["mlctl.min-driver"] = resolved.min_driver or ""
    return labels


def service_layer(
    loaded: LoadedConfig,
    resolved: Resolved,
    files: ServiceFiles,
    house: wheels.Wheelhouse,
    parent: Layer,
    state: Any,
    tag: str,
    extra_labels: Mapping[str, str],
    weights_digest: str | None = None,
) -> Layer:
    """The service image over the torch layer: dependencies, weights, code; the container contract.

    ``weights_digest`` (``sha256:...``) becomes the image's ``mlctl.weights`` label.
    """
    from mlctl.adapters.docker import build_context

    config = loaded.config
    requirements = "\n".join(wheels.service_requirements(loaded.directory)) + "\n"
    template = (data_dir("base_images") / "service" / "Dockerfile.j2").read_text()
    stable = {
        "uid": contract.UID,
        "app_dir": contract.APP_DIR,
        "port": contract.port(config),
        "start_period": config.probes.startup_budget_s,
        "app": config.serving.app,
        "env": contract.image_environment(config),
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
        **{key: parent.labels[key] for key in TORCH_LABELS if key in parent.labels},
        "mlctl.template": config.template.name if config.template else "",
        "mlctl.template-version": config.template.version if config.template else "",
        "mlctl.ladder": f"python={parent.labels['mlctl.parent']},torch={parent.image}",
        "mlctl.parent": parent.image,
    }
    inputs = {
        "dockerfile": digest(template, json.dumps(stable, sort_keys=True), json.dumps(template_labels, sort_keys=True)),
        "requirements": digest(requirements, house.digest),
        "weights": files.digest(files.weights),
        "code": files.digest(files.code),
        "parent": parent.digest,
    }
    if extra_labels:  # only then: an unlabelled build keeps the digest it always had
        inputs["labels"] = digest(json.dumps(dict(extra_labels), sort_keys=True))

    def context(url: str, extra: dict[str, str]) -> bytes:
        labels = {
            **template_labels,
            **extra,
            "org.opencontainers.image.revision": state.commit or "",
            "org.opencontainers.image.created": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }
        dockerfile = with_labels(render_template(template, wheelhouse_url=url, **stable), labels)
        entries = [("Dockerfile", dockerfile.encode(), 0o644), ("requirements.txt", requirements.encode(), 0o644)]
        entries += [(f"weights/{f.path}", f.content, f.mode) for f in files.weights]
        entries += [(f"app/{f.path}", f.content, f.mode) for f in files.code]
        return build_context(entries)

    def deps_context(url: str) -> bytes:
        dockerfile = render_template(template, wheelhouse_url=url, deps_only=True, **stable)
        return build_context(
            [("Dockerfile", dockerfile.encode(), 0o644), ("requirements.txt", requirements.encode(), 0o644)]
        )

    labels = {LABEL_LAYER: "service", "mlctl.service": config.name}
    if weights_digest:
        labels[WEIGHTS_LABEL] = weights_digest
    return Layer(
        "service",
        config.image_repository,
        tag,
        inputs,
        labels,
        {"BASE": parent.image, "DEPS_DIGEST": house.digest[:16]},
        context,
        make_deps_context=deps_context,
    )


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
        entries["Dockerfile"] = with_labels(entries["Dockerfile"].decode(), extra).encode()
        return build_context((path, data, 0o644) for path, data in entries.items())

    layer = Layer(name, BASE_REPOSITORY.format(layer=name), "", inputs, labels, buildargs, context)
    layer.tag = layer.digest[:16]
    return layer


def _service_version(service_dir: Path) -> str:
    pyproject = service_dir / "pyproject.toml"
    if pyproject.is_file():
        return str(wheels.read_toml(pyproject).get("project", {}).get("version", ""))
    return ""


def with_labels(dockerfile: str, labels: Mapping[str, str]) -> str:
    """The Dockerfile with one final LABEL instruction (one builder step, whatever the count)."""
    if not labels:
        return dockerfile
    pairs = " \\\n    ".join(f"{key}={json.dumps(value)}" for key, value in sorted(labels.items()))
    return dockerfile.rstrip("\n") + f"\nLABEL {pairs}\n"


def digest(*parts: str | bytes) -> str:
    """A digest of several parts, each hashed on its own (so ``("ab", "c")`` differs from ``("a", "bc")``)."""
    total = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else part.encode()
        total.update(hashlib.sha256(data).digest())
    return total.hexdigest()


def render_template(template: str, **values: Any) -> str:
    """A Dockerfile template rendered in a sandbox, every variable required."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(template).render(**values)
