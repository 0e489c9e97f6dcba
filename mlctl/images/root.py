"""Root images: what the ladder stands on, and how to get one where the matrix's cannot be pulled.

The matrix names a root per flavour (``nvidia/cuda:*-runtime-*``, ``python:X.Y-slim-bookworm``),
pulled from its registry on the first build. A machine that cannot reach that registry makes one
(``mlctl images root``): a minimal Debian made with mmdebstrap from a Debian mirror and imported
into the engine, or an image already on the machine (``docker load``) checked and tagged as one.
PyTorch wheels bundle their CUDA libraries and the NVIDIA container runtime brings the driver, so a
plain Debian root serves CUDA services too. ``mlctl build --root IMAGE`` (or ``MLCTL_ROOT``) starts
from it.

A root must have ``/bin/sh`` and the service's Python, or ``apt-get`` to install it: the python
layer (``base_images/python/install-python.sh``) needs both, and a root without them is refused
before the build, with the reason.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlctl.errors import BuildError, ClusterError, ConflictError, EnvironmentProblem, InputError, MlctlError
from mlctl.images import locks
from mlctl.images.ladder import LABEL_LAYER
from mlctl.images.tags import check_labels, check_tag
from mlctl.models import ImageRef, RootResult
from mlctl.ports import ImageBuilder
from mlctl.reporting import NullReporter, Reporter
from mlctl.resources import cache_dir
from mlctl.weights import file_digest

REPOSITORY = "mlctl/root"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: File times in the tarball: the same packages give the same bytes (and the same layer digest).
SOURCE_DATE_EPOCH = "1767225600"
#: Where mmdebstrap keeps the hooks it ships (merged /usr as Debian's own images; eatmydata).
HOOKS = Path("/usr/share/mmdebstrap/hooks")
#: The Pythons a probe looks for (those of the matrix and a few around them).
PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15")
MAKE_ROOT_HINT = (
    "make a root on this machine: `mlctl images root` (Debian, with mmdebstrap), or `docker load` one and "
    "`mlctl images root --from IMAGE`; then build with --root (or MLCTL_ROOT)"
)

_PROBE = (
    '. /etc/os-release 2>/dev/null; echo "os=${PRETTY_NAME:-unknown}"; '
    f"for v in {' '.join(PYTHONS)}; do command -v python$v >/dev/null 2>&1 && echo python=$v; done; "
    "command -v apt-get >/dev/null 2>&1 && echo apt=yes; echo done=yes"
)


@dataclass(frozen=True)
class RootProbe:
    """What a root image offers the python layer."""

    shell: bool
    os: str
    pythons: tuple[str, ...]
    apt: bool


def probe_root(builder: ImageBuilder, ref: str) -> RootProbe:
    """Run a shell in ``ref``: its OS, its Pythons, whether it has apt-get. No shell: ``shell`` False."""
    code, output = builder.probe(ref, ["/bin/sh", "-c", _PROBE], timeout=60)
    values = [line.partition("=") for line in output.splitlines()]
    if code != 0 or ("done", "=", "yes") not in values:
        return RootProbe(False, "", (), False)
    return RootProbe(
        shell=True,
        os=next((v for k, _, v in values if k == "os"), "unknown"),
        pythons=tuple(v for k, _, v in values if k == "python"),
        apt=("apt", "=", "yes") in values,
    )


def check_root(builder: ImageBuilder, ref: str, python: str) -> RootProbe:
    """A root the python layer can build on: a shell, and Python ``python`` or apt-get to install it.

    Raises:
        InputError: naming the root and what it lacks.
    """
    probe = probe_root(builder, ref)
    hint = f"start from an image with Python {python} (python:{python}-slim-bookworm), or {MAKE_ROOT_HINT}"
    if not probe.shell:
        raise InputError(
            f"the root image {ref} has no /bin/sh: the python layer installs Python {python} with it", hint=hint
        )
    if python not in probe.pythons and not probe.apt:
        has = f"it has Python {', '.join(probe.pythons)}" if probe.pythons else "it has no Python"
        raise InputError(f"the root image {ref} has no Python {python} and no apt-get to install it ({has})", hint=hint)
    return probe


def python_unavailable(ref: str, python: str, os_name: str) -> InputError:
    """The error for a root whose package sources have no Python ``python`` (install-python.sh said so)."""
    return InputError(
        f"the root image {ref} has no Python {python}, and its package sources ({os_name or 'unknown OS'}) offer none",
        hint=f"use a root that has Python {python} (python:{python}-slim-bookworm; `mlctl images root --suite "
        "trixie` makes a Debian 13 root, whose Python is 3.13), or a runtime.python its packages offer",
    )


def pull_failure(builder: ImageBuilder, ref: str, exc: MlctlError) -> MlctlError:
    """What a root that is not here and cannot be pulled means for the user.

    A registry that answers "no such image" makes a wrong name (exit 4, with the local images of a
    similar name); one that cannot be reached is a registry problem (exit 9), with how to make a root here.
    """
    host = registry_host(ref)
    reason = exc.message.split(": ", 1)[-1]
    if isinstance(exc, InputError):
        near = similar_images(builder, ref)
        return InputError(
            f"the root image {ref} does not exist: not on this machine, and {host} has no such image ({reason})",
            hint=(f"did you mean {' or '.join(near)}? " if near else "") + MAKE_ROOT_HINT,
        )
    # Where the registry cannot be reached, a root that is not here is most often a local one mistyped.
    near = similar_images(builder, ref)
    return ClusterError(
        f"the root image {ref} is not on this machine and its registry {host} cannot be reached: {reason}",
        hint=(f"did you mean {' or '.join(near)}? " if near else "") + MAKE_ROOT_HINT,
    )


def registry_host(ref: str) -> str:
    """The registry an image reference pulls from (Docker Hub for a name without a host)."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return first
    return "registry-1.docker.io"


def similar_images(builder: ImageBuilder, ref: str) -> list[str]:
    """The tags of mlctl's images on this machine (roots, layers) that look like ``ref``: a typo's meaning."""
    tags = sorted({tag for image in builder.list_images(LABEL_LAYER) for tag in image.tags})
    return difflib.get_close_matches(ref, tags, n=2, cutoff=0.75)


# --- making one ------------------------------------------------------------------------------------------


def make_root(
    *,
    tag: str | None = None,
    suite: str = SUITE,
    mirror: str = MIRROR,
    source: str | None = None,
    labels: Mapping[str, str] | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
    builder: ImageBuilder | None = None,
) -> RootResult:
    """Make a root image on this machine (``mlctl images root``).

    From Debian (``suite`` from ``mirror``) with mmdebstrap: minbase, merged /usr, no docs or
    locales, apt's caches emptied, fixed file times; streamed into a tarball, then imported with
    ``LANG=C.UTF-8``. Or, with ``source``, from an image already on this machine: checked to have
    a shell and a Python (or apt-get), then tagged. An image already at ``tag`` that mlctl made is
    kept (``present``); ``force`` makes it again.

    Args:
        tag: The image to make (default ``mlctl/root:<suite>``, or ``mlctl/root:local`` from ``source``).
        suite: The Debian release (bookworm, trixie...).
        mirror: The Debian mirror (http or https).
        source: Make it from this local image instead of Debian.
        labels: Extra labels (``--label``; keys checked as for ``mlctl build``).
        force: Make it again even when it is there.
        reporter: Progress.
        builder: The engine (default: the local Docker engine).

    Raises:
        InputError: a bad tag, suite, mirror or label; a ``source`` that is not here or has no shell
            or Python. ConflictError: ``tag`` is an image mlctl did not make. EnvironmentProblem: no
            mmdebstrap, or no engine. BuildError: mmdebstrap or the import failed.
    """
    from mlctl.images.plan import engine

    reporter = reporter or NullReporter()
    labels = check_labels(labels or {})
    if not re.fullmatch(r"[a-z][a-z0-9-]{1,30}", suite):
        raise InputError(f"--suite {suite}: a Debian release name, e.g. bookworm or trixie")
    parts = urllib.parse.urlsplit(mirror)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--mirror {mirror}: expected an http(s) URL of a Debian mirror (e.g. {MIRROR})")
    tag = tag or f"{REPOSITORY}:{'local' if source else suite}"
    ref = ImageRef.parse(tag, source="--tag")
    if ref.digest or not ref.tag:
        raise InputError(f"--tag {tag}: expected REPOSITORY:TAG (e.g. {REPOSITORY}:{suite})")
    check_tag(ref.tag)
    started = time.monotonic()
    with engine(builder) as builder:
        lock = cache_dir() / "locks" / f"root-{hashlib.sha256(tag.encode()).hexdigest()[:16]}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with locks.held(lock, on_wait=lambda: reporter.step(f"waiting for another mlctl making {tag}")):
            existing = builder.inspect(tag)
            if existing is not None and not force:
                if existing.labels.get(LABEL_LAYER) != "root":
                    raise ConflictError(
                        f"{tag} is an image mlctl did not make",
                        hint="pick another --tag, or pass --force to replace that tag",
                    )
                probe = probe_root(builder, tag)
                return RootResult(
                    tag, existing.id, "present", existing.labels.get("mlctl.root", ""), probe.os, probe.pythons,
                    existing.size, 0.0,
                )  # fmt: skip
            if source is not None:
                image_id, made_from = _from_image(builder, source, ref, labels, reporter)
            else:
                image_id, made_from = _from_debian(builder, suite, mirror, ref, labels, reporter)
            probe = probe_root(builder, tag)
            if not probe.shell:
                raise BuildError(f"the root made as {tag} does not run a shell: {probe.os or 'unknown OS'}")
            found = builder.inspect(image_id)
    return RootResult(
        tag, image_id, "made", made_from, probe.os, probe.pythons, found.size if found else 0,
        round(time.monotonic() - started, 1),
    )  # fmt: skip


def _from_image(
    builder: ImageBuilder, source: str, ref: ImageRef, labels: Mapping[str, str], reporter: Reporter
) -> tuple[str, str]:
    from mlctl.adapters.docker import build_context
    from mlctl.images.ladder import with_labels

    if builder.inspect(source) is None:
        near = similar_images(builder, source)
        raise InputError(
            f"--from {source}: no such image on this machine",
            hint=(f"did you mean {' or '.join(near)}? " if near else "") + "`docker load` it first",
        )
    reporter.step(f"checking {source}: a shell, and Python or apt-get")
    probe = probe_root(builder, source)
    if not probe.shell:
        raise InputError(f"--from {source}: the image has no /bin/sh; the python layer needs one to install Python")
    if not probe.pythons and not probe.apt:
        raise InputError(f"--from {source}: the image has no Python and no apt-get to install one")
    made_from = f"from {source}"
    dockerfile = with_labels(f"FROM {source}\n", {**labels, LABEL_LAYER: "root", "mlctl.root": made_from})
    image_id, _ = builder.build(
        build_context([("Dockerfile", dockerfile.encode(), 0o644)]), tag=f"{ref.repository}:{ref.tag}", buildargs={}
    )
    return image_id, made_from


def _from_debian(
    builder: ImageBuilder, suite: str, mirror: str, ref: ImageRef, labels: Mapping[str, str], reporter: Reporter
) -> tuple[str, str]:
    binary = shutil.which("mmdebstrap")
    if binary is None:
        raise EnvironmentProblem(
            "mmdebstrap is not installed: `mlctl images root` makes the Debian root with it",
            hint="sudo apt-get install mmdebstrap eatmydata (Debian, Ubuntu); "
            "or `docker load` a root made elsewhere and use `mlctl images root --from IMAGE`",
        )
    made_from = f"debian {suite} from {mirror}"
    argv = [binary, "--variant=minbase", "--format=tar"]
    if (HOOKS / "merged-usr").is_dir():
        argv.append(f"--hook-dir={HOOKS / 'merged-usr'}")
    if (HOOKS / "eatmydata").is_dir() and shutil.which("eatmydata"):
        argv.append(f"--hook-dir={HOOKS / 'eatmydata'}")  # no fsync: about 2.5x faster
    for option in (
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/locale/*",
        "path-include=/usr/share/locale/locale.alias",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/info/*",
    ):
        argv.append(f"--dpkgopt={option}")
    # mmdebstrap's final clean-up leaves apt's binary caches (2 x 37 MB) behind.
    argv.append('--customize-hook=rm -f "$1"/var/cache/apt/*.bin')
    with tempfile.TemporaryDirectory(prefix="mlctl-root-") as work:
        tarball = Path(work) / "root.tar"
        reporter.step(f"making a Debian {suite} root with mmdebstrap from {mirror} (about a minute)")
        code, tail = _run_mmdebstrap([*argv, suite, str(tarball), mirror], reporter)
        if code != 0 or not tarball.is_file():
            shown = " | ".join(line for line in tail[-3:] if line.strip()) or f"exit status {code}"
            raise BuildError(
                f"mmdebstrap could not make the Debian {suite} root: {shown}",
                hint=f"it needs root (or unprivileged user namespaces) and the mirror {mirror} (--mirror URL)",
            )
        digest = file_digest(tarball).removeprefix("sha256:")
        reporter.step(f"importing it as {ref.repository}:{ref.tag} ({tarball.stat().st_size / 1e6:.1f} MB)")
        all_labels = {**labels, LABEL_LAYER: "root", "mlctl.root": made_from, "mlctl.root-tar": f"sha256:{digest}"}
        changes = ["ENV LANG=C.UTF-8", 'CMD ["bash"]', *(f"LABEL {k}={_quoted(v)}" for k, v in all_labels.items())]
        image_id = builder.import_image(str(tarball), ref.repository, ref.tag, changes)
    return image_id, made_from


def _run_mmdebstrap(argv: list[str], reporter: Reporter) -> tuple[int, list[str]]:
    """Run mmdebstrap, relaying its stages ("I: ..." lines) as progress."""
    started = time.monotonic()
    tail: list[str] = []
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
    )
    assert process.stdout is not None
    try:
        for raw in process.stdout:
            line = raw.rstrip()
            tail = [*tail[-39:], line]
            reporter.log(line)
            if line.startswith("I: ") and not any(w in line for w in ("hook", "tempdir", "signed-by", "mode:")):
                reporter.status(f"mmdebstrap: {line[3:]}", f"{time.monotonic() - started:.0f} s")
        return process.wait(), tail
    except BaseException:
        process.kill()
        process.wait()
        raise


def _quoted(value: str) -> str:
    import json

    return json.dumps(value)
