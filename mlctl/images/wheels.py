"""Hermetic Python installs: resolved on the host, installed offline in the image.

Hermetic Python installs: wheels are resolved on the host, served to the build over loopback, and
installed offline (``pip install --no-index``) inside the image.

This is also the air-gapped path (``--wheelhouse DIR``), and on networks where pip inside a
container cannot verify TLS (a TLS-intercepting proxy whose CA the host trusts but the image does
not), the only one. No wheel file is ever copied into an image layer.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlctl.atomic import replace_file
from mlctl.errors import BuildError, InputError
from mlctl.images import index, locks
from mlctl.images.index import TorchWheel
from mlctl.images.matrix import Resolved
from mlctl.models import RuntimeWheel
from mlctl.reporting import Reporter
from mlctl.resources import data_dir

#: The port the wheelhouse is served on when it is free. It is part of the RUN lines of the
#: Dockerfiles, so a fixed port keeps the builder's cache valid from one build to the next.
PREFERRED_PORT = 47981

PLATFORMS = {
    "linux/amd64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64"],
    "linux/arm64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64", "linux_aarch64"],
}


@dataclass(frozen=True)
class Wheelhouse:
    """Directories of wheels, and a digest of their files (what the layers' tags depend on)."""

    directories: tuple[Path, ...]
    digest: str

    def files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for directory in self.directories:
            for path in sorted(directory.glob("*.whl")):
                found.setdefault(path.name, path)
        return found


def digest_files(paths: Iterable[Path], memo: Path | None = None) -> str:
    """A digest of wheel files by name and content.

    File digests are remembered by path, size and modification time in ``memo`` (a JSON file), so a
    warm rebuild does not read a 200 MB torch wheel again.
    """
    import json

    known: dict[str, str] = {}
    if memo is not None and memo.is_file():
        try:
            known = json.loads(memo.read_text())
        except ValueError:
            known = {}
    total = hashlib.sha256()
    changed = False
    for path in sorted(paths, key=lambda p: p.name):
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in known:
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            known[key] = digest.hexdigest()
            changed = True
        total.update(path.name.encode() + b"\0" + known[key].encode())
    if memo is not None and changed:
        memo.parent.mkdir(parents=True, exist_ok=True)
        replace_file(memo, json.dumps(known).encode())
    return total.hexdigest()


def wheelhouse(*directories: Path, memo: Path | None = None) -> Wheelhouse:
    """The wheels in ``directories`` (a name found twice: the first), with their digest."""
    dirs = tuple(d for d in directories if d.is_dir())
    files: dict[str, Path] = {}
    for directory in dirs:
        for path in directory.glob("*.whl"):
            files.setdefault(path.name, path)
    return Wheelhouse(dirs, digest_files(files.values(), memo))


def given_wheelhouse(path: Path) -> Path:
    """A ``--wheelhouse`` directory, checked to exist and to hold wheels."""
    if not path.is_dir():
        raise InputError(f"--wheelhouse {path}: no such directory")
    if not any(path.glob("*.whl")):
        raise InputError(f"--wheelhouse {path}: holds no .whl files")
    return path


def download(
    requirements: list[str],
    *,
    python: str,
    platform: str,
    cache: Path,
    index_url: str | None,
    reporter: Reporter,
) -> Path:
    """Resolve ``requirements`` for the image's Python and platform with the host's pip, once per set.

    With ``index_url``, from that index alone: the find-links directories and extra indexes of the
    host's pip configuration are left out, so a wheel can come from nowhere else. Without it, from
    what the host's pip is configured with. The result is cached by a hash of everything that
    decides it; a directory is only used once pip finished (``.complete``), so an interrupted
    download is redone, never half-used.
    """
    if platform not in PLATFORMS:
        raise InputError(f"--platform {platform}: mlctl builds for {', '.join(PLATFORMS)}")
    target = cache / _key(requirements, python, platform, index_url)
    if (target / ".complete").exists():
        return target
    # Another mlctl resolving the same set into the same cache: wait for it, then use its result.
    waiting = f"waiting for another mlctl to finish resolving {', '.join(requirements)}"
    with locks.held(target.with_suffix(".lock"), on_wait=lambda: reporter.step(waiting)):
        if (target / ".complete").exists():
            return target
        _download(requirements, python=python, platform=platform, target=target, index_url=index_url, reporter=reporter)
    return target


def download_torch(
    resolved: Resolved, *, index_url: str, platform: str, cache: Path, reporter: Reporter
) -> tuple[TorchWheel, Path]:
    """Download torch of the row's flavour, with what it needs, from ``index_url`` alone.

    Returns the wheel found and the directory of the downloaded wheels.

    The index's torch page is read first (``mlctl.images.index``): an index that does not answer
    fails in seconds naming its host, and one without the flavour fails naming what it has, before
    pip runs. A set already downloaded is used without asking the index again (warm and offline builds).

    Raises:
        ClusterError: the index does not answer. BuildError: it has no wheel of the flavour.
    """
    if platform not in PLATFORMS:
        raise InputError(f"--platform {platform}: mlctl builds for {', '.join(PLATFORMS)}")
    requirement = resolved.torch_requirement
    where = f"the wheel index {index.redact(index_url)}"
    target = cache / _key([requirement], resolved.python, platform, index_url)
    if not (target / ".complete").exists():
        reporter.step(f"looking for {requirement} (Python {resolved.python}, {platform}) on {where}")
        index.torch_on_index(index_url, resolved, PLATFORMS[platform], platform)
    target = download(
        [requirement], python=resolved.python, platform=platform, cache=cache, index_url=index_url, reporter=reporter
    )
    found = index.torch_in_wheelhouse(
        target,
        resolved,
        PLATFORMS[platform],
        platform,
        where=f"what pip took from {where}",
        source=index.redact(index_url),
    )
    return found, target


def _key(requirements: list[str], python: str, platform: str, index_url: str | None) -> str:
    return hashlib.sha256(repr((sorted(requirements), python, platform, index_url)).encode()).hexdigest()[:16]


#: pip's bounds for each connection: seconds per socket operation, and retries. Its defaults (15 s,
#: 5 retries with back-off) keep a build waiting over a minute for an index that does not answer.
PIP_TIMEOUT_S = 10
PIP_RETRIES = 1


def _download(
    requirements: list[str], *, python: str, platform: str, target: Path, index_url: str | None, reporter: Reporter
) -> None:
    target.mkdir(parents=True, exist_ok=True)
    source = f" from {index.redact(index_url)}" if index_url else ""
    what = ", ".join(requirements)
    reporter.step(f"resolving {what} for Python {python} ({platform}) on the host{source}")
    tag = python.replace(".", "")
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--timeout",
        str(PIP_TIMEOUT_S),
        "--retries",
        str(PIP_RETRIES),
        "--progress-bar",
        _progress_bar(),
        "--dest",
        str(target),
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        f"cp{tag}",
    ]
    for platform_tag in PLATFORMS[platform]:
        argv += ["--platform", platform_tag]
    env = dict(os.environ)
    if index_url:
        # This index and nothing else. pip has no flag to drop the find-links and extra indexes of
        # its configuration; an environment variable replaces a configuration file's value (an
        # empty one is ignored), so they are set to an empty directory and to this index itself.
        empty = target / ".no-links"
        empty.mkdir(exist_ok=True)
        env.update(PIP_FIND_LINKS=str(empty), PIP_EXTRA_INDEX_URL=index_url, PIP_NO_INDEX="false")
        argv += ["--index-url", index_url]
    code, tail = _run_pip([*argv, *requirements], env, reporter)
    if code != 0:
        hosts = sorted(set(re.findall(r"host='([^']+)'", "\n".join(tail))))
        unreachable = f" ({', '.join(hosts)} did not answer)" if hosts else ""
        shown = [line for line in tail if line.strip()][-3:]
        raise BuildError(
            f"pip could not resolve {what} for Python {python}{source}{unreachable}: " + " | ".join(shown),
            hint="check the network and the versions, or pass --wheelhouse DIR with the wheels (air-gapped)",
        )
    (target / ".complete").write_text("")


def _progress_bar() -> str:
    """The ``--progress-bar`` of pip: machine-readable ("Progress N of M" lines) from pip 24.1 on."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(p) for p in version("pip").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return "off"
    return "raw" if (major, minor) >= (24, 1) else "off"


def _run_pip(argv: list[str], env: dict[str, str], reporter: Reporter) -> tuple[int, list[str]]:
    """Run pip, relaying what it does: each file it fetches, and a download's progress in tenths."""
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=40)
    current = ""
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, errors="replace"
    )
    assert process.stdout is not None
    try:
        for raw in process.stdout:
            line = raw.rstrip()
            progress = re.fullmatch(r"Progress (\d+) of (\d+)", line.strip())
            if progress:
                done, total = int(progress[1]), int(progress[2])
                if total:
                    tenth = 10 * done // total
                    reporter.status(
                        f"downloading {current}: {tenth * 10}% of {total / 1e6:.0f} MB",
                        f"{time.monotonic() - started:.0f} s",
                    )
                continue
            tail.append(line)
            fetched = re.match(r"\s*Downloading (\S+)", line)
            if fetched:  # a URL (its "+" quoted as %2B on PyTorch's indexes) or a file name
                current = urllib.parse.unquote(fetched[1].rsplit("/", 1)[-1])
            if line.strip().startswith(("Collecting", "Downloading", "Saved", "File was already", "Successfully")):
                reporter.log(line.strip())
        code = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    return code, list(tail)


# --- the runtime wheel ---------------------------------------------------------------------------------


def runtime_wheel(cache: Path) -> Path:
    """mlctl-serve as a wheel, made from the runtime source mlctl carries (so it matches this mlctl).

    A pure-Python wheel is a zip with a few metadata files: written here directly, with fixed times,
    so the same source always gives the same bytes (and so the same wheelhouse digest).
    """
    source = data_dir("runtime")
    project = read_toml(source / "pyproject.toml")["project"]
    version = _runtime_version(source)
    name = "mlctl_serve"
    target = cache / f"{name}-{version}-py3-none-any.whl"
    files = sorted(p for p in (source / name).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    content_digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:16]
    marker = cache / f".{target.name}.{content_digest}"
    if target.exists() and marker.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {version}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '>=3.10')}",
        *(f"Requires-Dist: {r}" for r in project.get("dependencies", [])),
    ]
    entries: list[tuple[str, bytes]] = [(p.relative_to(source).as_posix(), p.read_bytes()) for p in files]
    entries.append((f"{dist_info}/METADATA", ("\n".join(metadata) + "\n").encode()))
    entries.append(
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: mlctl\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    )
    scripts = project.get("scripts", {})
    if scripts:
        lines = ["[console_scripts]", *(f"{k} = {v}" for k, v in scripts.items())]
        entries.append((f"{dist_info}/entry_points.txt", ("\n".join(lines) + "\n").encode()))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([path, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    entries.append((f"{dist_info}/RECORD", record.getvalue().encode()))
    wheel_bytes = io.BytesIO()
    with zipfile.ZipFile(wheel_bytes, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in entries:
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            wheel.writestr(info, data, zipfile.ZIP_DEFLATED)
    replace_file(target, wheel_bytes.getvalue())
    for old in cache.glob(f".{target.name}.*"):
        if old != marker:
            old.unlink(missing_ok=True)  # another mlctl may be clearing them too
    marker.write_text("")
    return target


def write_runtime_wheel(directory: Path | None = None) -> RuntimeWheel:
    """The wheel of mlctl-serve, the serving runtime this mlctl carries, for pip to install anywhere.

    Services depend on ``mlctl-serve``, which no package index needs to host: ``pip install "$(mlctl
    runtime wheel)" -e '.[test]'`` installs it with the service (the service's README, ``mlctl run``'s
    hints and the CI pipelines all do that), and ``--dir DIR`` leaves it where ``pip --find-links DIR``
    (or ``PIP_FIND_LINKS``) finds it. The same source always gives the same bytes.

    Args:
        directory: Where to write it (default: mlctl's cache, ``<cache>/runtime``).
    """
    from mlctl.resources import cache_dir

    target = directory if directory is not None else cache_dir() / "runtime"
    if target.exists() and not target.is_dir():
        raise InputError(f"--dir {target}: not a directory")
    try:
        path = runtime_wheel(target)
    except OSError as exc:
        raise InputError(f"--dir {target}: cannot write the wheel there ({exc.strerror or exc})") from None
    name, version = path.name.split("-")[:2]
    return RuntimeWheel(
        path=str(path.resolve()),
        name=name.replace("_", "-"),
        version=version,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def _runtime_version(source: Path) -> str:
    found = re.search(r'^__version__ = "([^"]+)"', (source / "mlctl_serve" / "__init__.py").read_text(), re.M)
    if not found:
        raise BuildError("the runtime source carries no __version__")
    return found.group(1)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a mapping (tomllib, or tomli on Python 3.10)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    with path.open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    return data


def service_requirements(service_dir: Path) -> list[str]:
    """What the service's code needs besides torch (which its own layer provides)."""
    pyproject = service_dir / "pyproject.toml"
    requirements: list[str]
    if pyproject.is_file():
        requirements = list(read_toml(pyproject).get("project", {}).get("dependencies", []))
    elif (service_dir / "requirements.txt").is_file():
        lines = (service_dir / "requirements.txt").read_text().splitlines()
        requirements = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    else:
        raise InputError(f"{service_dir} has neither pyproject.toml nor requirements.txt listing its dependencies")
    return [r for r in requirements if re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() != "torch"]


# --- serving the wheelhouse ------------------------------------------------------------------------


@contextmanager
def serve(house: Wheelhouse) -> Iterator[str]:
    """Serve the wheels on 127.0.0.1 as a find-links page for the duration of a build; yields the URL."""
    files = house.files()
    page = "<html><body>\n" + "".join(f'<a href="{name}">{name}</a><br>\n' for name in files) + "</body></html>\n"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = urllib.parse.unquote(self.path.lstrip("/").split("?")[0])
            if name in ("", "index.html"):
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            path = files.get(name)
            if path is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    self.wfile.write(block)

        def log_message(self, *args: object) -> None:
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", PREFERRED_PORT), Handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # busy: a cache miss, not a failure
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
