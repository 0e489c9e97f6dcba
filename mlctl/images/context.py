"""What goes into the service image from the service directory.

What goes into the service image from the service directory: the code (minus .dockerignore), the
weights (a layer of their own), and nothing that looks like a secret unless the user says so.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mlctl.contract import APP_DIR
from mlctl.errors import InputError

#: Files that look like credentials. A build refuses them unless --allow-secrets.
SECRET_PATTERNS = (
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".netrc",
    ".pypirc",
    ".npmrc",
    ".dockercfg",
    "credentials",
    "credentials.json",
    "application_default_credentials.json",
    "*service-account*.json",
    "kubeconfig",
)
#: Never part of an image, whatever .dockerignore says.
ALWAYS_LEFT_OUT = (".git", ".mlctl", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")


@dataclass(frozen=True)
class ContextFile:
    """A file of the build context: its path in the context, content and mode."""

    path: str
    content: bytes
    mode: int


@dataclass(frozen=True)
class ServiceFiles:
    """The service's files for its image: the code and the weights apart."""

    code: tuple[ContextFile, ...]
    weights: tuple[ContextFile, ...]
    #: Where the weights go in the image (the directory of model.path, under contract.APP_DIR).
    weights_dir: str

    def digest(self, files: tuple[ContextFile, ...]) -> str:
        total = hashlib.sha256()
        for f in files:
            total.update(f"{f.path}\0{f.mode:o}\0".encode() + hashlib.sha256(f.content).digest())
        return total.hexdigest()


def collect(service_dir: Path, weights_path: str | None, *, allow_secrets: bool) -> ServiceFiles:
    """Read the files the service image is made of.

    Raises:
        InputError: files that look like secrets would enter the image; or the weights are missing.
    """
    from mlctl.adapters.docker import dockerignore_filter

    ignore_file = service_dir / ".dockerignore"
    patterns = ignore_file.read_text().splitlines() if ignore_file.is_file() else []
    patterns = [p.strip() for p in patterns if p.strip() and not p.strip().startswith("#")]
    ignored = dockerignore_filter(str(service_dir), patterns)
    weights_root = (service_dir / weights_path).resolve() if weights_path else None

    code: list[ContextFile] = []
    for root, dirs, names in os.walk(service_dir):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if d not in ALWAYS_LEFT_OUT)
        for name in sorted(names):
            path = here / name
            relative = path.relative_to(service_dir).as_posix()
            if ignored(relative) or path.is_symlink() or not path.is_file():
                continue
            if weights_root is not None and (path.resolve() == weights_root or weights_root in path.resolve().parents):
                continue  # the weights travel in their own layer
            code.append(ContextFile(relative, path.read_bytes(), _mode(path)))

    weights: list[ContextFile] = []
    weights_dir = f"{APP_DIR}/weights"
    if weights_root is not None:
        if not weights_root.exists():
            raise InputError(
                f"the weights {weights_path} do not exist",
                hint="make them first (mlctl.yaml model.prepare; `mlctl run` does it too) or fix model.path",
            )
        base = weights_root if weights_root.is_dir() else weights_root.parent
        weights_dir = f"{APP_DIR}/" + base.relative_to(service_dir.resolve()).as_posix()
        members = sorted(p for p in weights_root.rglob("*") if p.is_file()) if weights_root.is_dir() else [weights_root]
        weights = [ContextFile(p.relative_to(base).as_posix(), p.read_bytes(), 0o644) for p in members]

    if not allow_secrets:
        suspicious = [f.path for f in code if looks_secret(f.path)]
        if suspicious:
            shown = ", ".join(suspicious[:5]) + (f" and {len(suspicious) - 5} more" if len(suspicious) > 5 else "")
            raise InputError(
                f"refusing to put files that look like secrets into the image: {shown}",
                hint="add them to .dockerignore, or pass --allow-secrets if they are really meant to ship",
            )
    return ServiceFiles(tuple(code), tuple(weights), weights_dir)


def looks_secret(relative: str) -> bool:
    """Whether a file's name looks like a credential (``SECRET_PATTERNS``)."""
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, pattern) for pattern in SECRET_PATTERNS)


def _mode(path: Path) -> int:
    return 0o755 if os.access(path, os.X_OK) else 0o644
