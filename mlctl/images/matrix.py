"""The compatibility matrix (``base_images/matrix.yaml``).

The compatibility matrix (``base_images/matrix.yaml``): which root image, torch build and wheel index
a service's ``runtime`` section resolves to. An unsupported combination is an error naming the
nearest valid choices, never a warning and a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlctl.errors import InputError, TemplateError
from mlctl.resources import data_dir

MATRIX_FILE = "matrix.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CudaEntry(_Strict):
    """A supported CUDA version: its root image and the driver it needs."""

    root: str
    min_driver: str


class CpuEntry(_Strict):
    """The CPU build's root image."""

    #: ``{python}`` is replaced by the Python version.
    root: str


class TorchRelease(_Strict):
    """A torch minor release: its patch releases, CUDA builds and Pythons."""

    patches: list[str] = Field(min_length=1)
    cuda: list[str]
    python: list[str]


class Matrix(_Strict):
    """The whole compatibility matrix."""

    cuda: dict[str, CudaEntry]
    cpu: CpuEntry
    indexes: dict[str, str]
    python: list[str]
    torch: dict[str, TorchRelease]

    @model_validator(mode="after")
    def _consistent(self) -> Matrix:
        missing = [flavor for flavor in ["cpu", *self.cuda] if flavor not in self.indexes]
        if missing:
            raise ValueError(f"indexes: no wheel index for {', '.join(missing)}")
        for minor, release in self.torch.items():
            unknown = sorted(set(release.cuda) - set(self.cuda)) + sorted(set(release.python) - set(self.python))
            if unknown:
                raise ValueError(f"torch {minor}: {', '.join(unknown)} not listed under cuda/python")
            if any(not p.startswith(minor + ".") for p in release.patches):
                raise ValueError(f"torch {minor}: patches must be {minor}.N")
        return self

    def releases(self) -> list[str]:
        """Every torch version, oldest first."""
        return sorted((p for r in self.torch.values() for p in r.patches), key=_version_key)


@dataclass(frozen=True)
class Resolved:
    """What a ``runtime`` section resolves to."""

    python: str
    torch: str
    #: "cpu" or a CUDA version such as "12.8".
    flavor: str
    root: str
    index_url: str
    min_driver: str | None

    @property
    def cuda(self) -> str | None:
        return None if self.flavor == "cpu" else self.flavor

    @property
    def local(self) -> str:
        """The local version label of this flavour's torch wheels: ``cpu``, ``cu130``."""
        return local_label(self.flavor)

    @property
    def torch_version(self) -> str:
        """The exact torch version of this flavour: ``2.13.0+cu130``."""
        return f"{self.torch}+{self.local}"

    @property
    def torch_requirement(self) -> str:
        """The exact requirement, ``torch==2.13.0+cu130``.

        ``torch==2.13.0`` alone matches every flavour's local version (PEP 440), so pip would take a
        ``+cpu`` wheel for a CUDA service without a word.
        """
        return f"torch=={self.torch_version}"


def local_label(flavor: str) -> str:
    """The local version label PyTorch gives a flavour's wheels: ``cpu``, or ``cu`` and the CUDA digits."""
    return "cpu" if flavor == "cpu" else "cu" + flavor.replace(".", "")


def flavor_of(local: str) -> str | None:
    """The flavour a local version label names (``cu130`` -> ``13.0``, ``cpu``), or None (``rocm6.4``)."""
    if local == "cpu":
        return "cpu"
    digits = local[2:] if local.startswith("cu") else ""
    if len(digits) < 2 or not digits.isdigit():
        return None
    return f"{digits[:-1]}.{digits[-1]}"


@cache
def load_matrix(path: Path | None = None) -> Matrix:
    """The matrix mlctl ships (or the one at ``path``), validated."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = path or data_dir("base_images") / MATRIX_FILE
    try:
        return Matrix.model_validate(YAML(typ="safe").load(path.read_text(encoding="utf-8")))
    except (OSError, YAMLError, ValidationError) as exc:
        raise TemplateError(f"the compatibility matrix {path} is broken: {exc}") from None


def resolve(python: str, torch: str, accelerator: str, cuda: str | None, matrix: Matrix | None = None) -> Resolved:
    """Resolve ``runtime`` values; raises InputError naming the nearest valid choices."""
    matrix = matrix or load_matrix()
    if python not in matrix.python:
        raise InputError(
            f"runtime.python {python} is not supported; choose one of {', '.join(matrix.python)}",
            hint=f"nearest: {_nearest(python, matrix.python)}",
        )
    release = _release(torch, matrix)
    if python not in release.python:
        raise InputError(
            f"torch {torch} has no wheels for Python {python}; it supports {', '.join(release.python)}",
            hint=f"nearest: Python {_nearest(python, release.python)}",
        )
    if accelerator == "cpu":
        return Resolved(
            python=python,
            torch=torch,
            flavor="cpu",
            root=matrix.cpu.root.format(python=python),
            index_url=matrix.indexes["cpu"],
            min_driver=None,
        )
    if not release.cuda:
        raise InputError(f"torch {torch} has no CUDA build mlctl supports", hint="use a newer torch or accelerator cpu")
    if cuda is None:
        cuda = max(release.cuda, key=_version_key)  # the newest CUDA this torch ships
    elif cuda not in matrix.cuda:
        raise InputError(
            f"runtime.cuda {cuda} is not supported; choose one of {', '.join(matrix.cuda)}",
            hint=f"nearest: {_nearest_cuda(cuda, list(matrix.cuda))}",
        )
    elif cuda not in release.cuda:
        with_cuda = [p for minor, r in matrix.torch.items() if cuda in r.cuda for p in r.patches]
        newest = max(with_cuda, key=_version_key) if with_cuda else None
        raise InputError(
            f"torch {torch} has no CUDA {cuda} build; it ships CUDA {', '.join(release.cuda)}",
            hint=f"use runtime.cuda {_nearest_cuda(cuda, release.cuda)}"
            + (f", or torch {newest} (the newest with CUDA {cuda})" if newest else ""),
        )
    entry = matrix.cuda[cuda]
    return Resolved(
        python=python,
        torch=torch,
        flavor=cuda,
        root=entry.root,
        index_url=matrix.indexes[cuda],
        min_driver=entry.min_driver,
    )


def rows(matrix: Matrix | None = None) -> list[Resolved]:
    """Every supported (python, torch, flavor) combination with the newest patch of each release."""
    matrix = matrix or load_matrix()
    found = []
    for release in matrix.torch.values():
        torch = max(release.patches, key=_version_key)
        for python in release.python:
            for flavor in ["cpu", *release.cuda]:
                accelerator = "cpu" if flavor == "cpu" else "cuda"
                found.append(resolve(python, torch, accelerator, None if flavor == "cpu" else flavor, matrix))
    return found


def _release(torch: str, matrix: Matrix) -> TorchRelease:
    minor = ".".join(torch.split(".")[:2])
    release = matrix.torch.get(minor)
    if release is None or torch not in release.patches:
        known = matrix.releases()
        raise InputError(
            f"runtime.torch {torch} is not in the compatibility matrix",
            hint=f"nearest: {_nearest(torch, known)} (supported: {known[0]} to {known[-1]}; `mlctl images matrix`)",
        )
    return release


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _nearest(version: str, choices: list[str]) -> str:
    """The choice to suggest for ``version``.

    The choice to suggest for ``version``: the closest of the same minor release, else the next newer
    one (newer releases are the compatible direction), else the newest there is.
    """
    try:
        target = _version_key(version)
    except ValueError:
        return max(choices, key=_version_key)
    same = [c for c in choices if _version_key(c)[:2] == target[:2]]
    if same:
        return min(same, key=lambda c: (abs(_version_key(c)[2:3][0] - target[2:3][0]) if len(target) > 2 else 0, c))
    newer = sorted((c for c in choices if _version_key(c) > target), key=_version_key)
    return newer[0] if newer else max(choices, key=_version_key)


def _nearest_cuda(version: str, choices: list[str]) -> str:
    """For CUDA the safe direction is down: an older CUDA runs on the driver a newer one needs."""
    try:
        target = _version_key(version)
    except ValueError:
        return max(choices, key=_version_key)
    older = [c for c in choices if _version_key(c) <= target]
    return max(older, key=_version_key) if older else min(choices, key=_version_key)
