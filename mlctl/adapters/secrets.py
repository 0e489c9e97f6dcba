"""The only module that imports detect-secrets, the maintained secret detector the build scans code with.

detect-secrets is used as a library, the way its README shows: ``SecretsCollection.scan_file`` under
``default_settings()`` (every detector it has, with its default filters: a line marked
``pragma: allowlist secret`` passes, so do binary files and lock files). One detector is left out:
``IPPublicDetector`` reports public IPv4 addresses, which are no credential and which code
legitimately holds (``0.0.0.0``, a version written ``1.2.3.4``).

A caller may name values known to be public (``NotASecret``): one detector's finding of exactly that
value in exactly that file is not reported (mlctl.yaml's ``model.sha256``, the digest of public
weights, which the hex-entropy detector would otherwise flag). Nothing else about the scan changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlctl.errors import EnvironmentProblem

#: Detectors of detect-secrets that the build does not use (the module docstring says why).
LEFT_OUT = ("IPPublicDetector",)


@dataclass(frozen=True)
class Detection:
    """Something that looks like a secret, where detect-secrets found it (never the secret itself)."""

    #: The file, relative to the scanned root, with '/' between directories.
    path: str
    #: The line, counted from 1.
    line: int
    #: The detector's name for what it found, e.g. "AWS Access Key" or "Secret Keyword".
    kind: str


@dataclass(frozen=True)
class NotASecret:
    """A value known to be public: ``kind``'s finding of exactly ``value`` in ``path`` is not reported."""

    #: The file, relative to the scanned root, with '/' between directories.
    path: str
    #: The detector's name, e.g. "Hex High Entropy String".
    kind: str
    #: The value itself, compared without regard to case.
    value: str


def detector_version() -> str:
    """detect-secrets' version and the detectors left out: what a scan's result depends on."""
    return f"detect-secrets {_module().__version__.VERSION} without {', '.join(LEFT_OUT)}"


def scan(root: Path, paths: Sequence[str], public: Sequence[NotASecret] = ()) -> list[Detection]:
    """Scan the files ``paths`` (relative to ``root``) with detect-secrets.

    Args:
        root: The directory the paths are relative to.
        paths: The files to scan.
        public: Findings that are not reported (one detector, one file, one exact value each).

    Returns:
        Every detection, by path, line and kind.
    """
    if not paths:
        return []
    _module()
    from detect_secrets.core.secrets_collection import SecretsCollection
    from detect_secrets.settings import default_settings, get_settings

    found = SecretsCollection(root=str(root))
    with default_settings(), _quiet():
        get_settings().disable_plugins(*LEFT_OUT)
        for path in paths:
            if not (root / path).is_file():
                # detect-secrets would only log this; a file that went away while the build
                # collected it is not a file it may skip silently.
                raise EnvironmentProblem(f"{path} could not be read for the secret scan (it went away)")
            found.scan_file(path)
    known = {(p.path, p.kind, p.value.lower()) for p in public}
    detections = [
        Detection(Path(name).as_posix(), secret.line_number, secret.type)
        for name, secrets in found.data.items()
        for secret in secrets
        if (Path(name).as_posix(), secret.type, (secret.secret_value or "").lower()) not in known
    ]
    return sorted(set(detections), key=lambda d: (d.path, d.line, d.kind))


def _module() -> Any:
    try:
        import detect_secrets
        import detect_secrets.__version__
    except ImportError:
        raise EnvironmentProblem(
            "detect-secrets is not installed: mlctl build scans the code layer for secrets with it",
            hint="reinstall mlctl (pip install --force-reinstall mlctl), which depends on it",
        ) from None
    return detect_secrets


@contextmanager
def _quiet() -> Iterator[None]:
    """detect-secrets logs to stderr itself; mlctl's core reports only through its reporter."""
    logger = logging.getLogger("detect-secrets")
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before
