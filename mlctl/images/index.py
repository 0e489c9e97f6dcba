"""The torch wheel a build takes: of the service's flavour only, from one index or one wheelhouse.

PyTorch publishes one build of a release per flavour, told apart by the local version label:
``torch 2.13.0+cu130`` on ``download.pytorch.org/whl/cu130``, ``2.13.0+cpu`` on ``.../whl/cpu``. A
requirement ``torch==2.13.0`` matches all of them (PEP 440: a public version matches its local
versions), so pip, given an index without the flavour and a find-links directory or an extra index
with another, takes the other without a word. mlctl asks for the exact local version, from the
flavour's index alone, and first reads what the index offers (the PEP 503 / PEP 691 project page),
so that an index without the flavour is an error naming what it has, and an index that does not
answer fails within seconds, naming its host.
"""

from __future__ import annotations

import base64
import html.parser
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlctl.errors import BuildError, ClusterError
from mlctl.images.matrix import Resolved, flavor_of

#: Seconds to wait for the index to connect or send the next bytes, and how many tries it gets.
TIMEOUT_S = 5.0
ATTEMPTS = 2
#: A project page larger than this is not an index page (PyTorch's torch page is a few hundred KB).
MAX_PAGE = 64 << 20
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
_WHEEL = re.compile(
    r"(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl"
)


@dataclass(frozen=True)
class WheelName:
    """What a wheel's file name says (PEP 427): project, version, and the tags it runs on."""

    filename: str
    name: str
    version: str
    python: tuple[str, ...]
    abi: tuple[str, ...]
    platform: tuple[str, ...]

    @property
    def public(self) -> str:
        return self.version.split("+", 1)[0]

    @property
    def local(self) -> str:
        return self.version.split("+", 1)[1] if "+" in self.version else ""

    def runs_on(self, python: str, platforms: list[str]) -> bool:
        """A CPython ``python`` (``3.11``) wheel, of its regular ABI, for one of ``platforms``."""
        tag = "cp" + python.replace(".", "")
        return tag in self.python and tag in self.abi and any(p in self.platform for p in platforms)

    def describe(self) -> str:
        return f"{self.version} ({', '.join(self.abi)}, {', '.join(self.platform)})"


def parse_wheel(filename: str) -> WheelName | None:
    """A wheel file name's parts, or None for a file that is not a wheel."""
    found = _WHEEL.fullmatch(filename)
    if not found:
        return None
    version = found["version"].replace("_", "-")  # the file name escapes '-' as '_'; a local label keeps '.'
    return WheelName(
        filename=filename,
        name=found["name"].lower().replace("_", "-").replace(".", "-"),
        version=version.lower(),
        python=tuple(found["python"].split(".")),
        abi=tuple(found["abi"].split(".")),
        platform=tuple(found["platform"].split(".")),
    )


@dataclass(frozen=True)
class TorchWheel:
    """The torch wheel resolution found: what the torch layer installs, its labels, its check."""

    filename: str
    #: The exact version, local label included: ``2.13.0+cu130``.
    version: str
    #: ``cpu`` or the CUDA version the wheel was built for (``13.0``), read from its local label.
    flavor: str
    #: Where it was found: the index URL (without credentials), or ``wheelhouse``.
    source: str

    @property
    def cuda(self) -> str | None:
        """What ``torch.version.cuda`` must say in the image: None for cpu."""
        return None if self.flavor == "cpu" else self.flavor

    @property
    def public(self) -> str:
        return self.version.split("+", 1)[0]


def expected_wheel(resolved: Resolved, source: str) -> TorchWheel:
    """The wheel a matrix row asks for, as resolution would find it (for plans made without an index)."""
    return TorchWheel(f"torch-{resolved.torch_version}.whl", resolved.torch_version, resolved.flavor, source)


def choose(wheels: list[WheelName], resolved: Resolved, platforms: list[str]) -> tuple[WheelName | None, list[str]]:
    """The torch wheel of the row's flavour for its Python and one of ``platforms``, and what else there was.

    Returns the wheel (None when there is none) and, for the error, the torch builds of the same
    release that were there (``2.13.0+cpu (cp311, manylinux_2_28_x86_64)``), those for this Python first.
    """
    torch = [w for w in wheels if w.name == "torch"]
    same_release = [w for w in torch if w.public == resolved.torch]
    for wheel in same_release:
        if wheel.local == resolved.local and wheel.runs_on(resolved.python, platforms):
            return wheel, []
    fitting = [w for w in same_release if w.runs_on(resolved.python, platforms)]
    others = fitting + [w for w in same_release if w not in fitting]
    if others:
        return None, list(dict.fromkeys(w.describe() for w in others))
    versions = sorted({w.public for w in torch}, key=_version_key)
    return None, [f"no torch {resolved.torch} at all" + (f" (newest: {versions[-1]})" if versions else "")]


def no_flavour(where: str, resolved: Resolved, platform: str, found: list[str]) -> BuildError:
    """The error for a place (an index, a wheelhouse) that has no wheel of the flavour."""
    build = "CPU" if resolved.flavor == "cpu" else f"CUDA {resolved.flavor}"
    shown = "; ".join(found[:6]) + (f"; and {len(found) - 6} more" if len(found) > 6 else "")
    # PyPI's torch has no local label, and on Linux it is a CUDA build of PyPI's own choosing: a
    # wheelhouse filled with a plain `pip download torch==X` holds that one, which says no flavour.
    unlabelled = any(entry.startswith(f"{resolved.torch} (") for entry in found)
    return BuildError(
        f"{where} has no {build} build of torch {resolved.torch} ({resolved.torch_requirement}) "
        f"for Python {resolved.python} on {platform}; it has: {shown or 'no torch wheel'}",
        hint="a wheel of another flavour is never taken in its place"
        + (
            f" (torch {resolved.torch} without a local label is PyPI's build, a CUDA one on Linux, whose flavour "
            "its name does not say)"
            if unlabelled
            else ""
        )
        + f": use an index or a wheelhouse with {resolved.torch_requirement} (pip download "
        f"'{resolved.torch_requirement}' --index-url {resolved.index_url}), "
        "or change runtime.torch / runtime.accelerator / runtime.cuda",
    )


# --- a wheelhouse --------------------------------------------------------------------------------------


def torch_in_wheelhouse(
    directory: Path,
    resolved: Resolved,
    platforms: list[str],
    platform: str,
    *,
    where: str | None = None,
    source: str = "wheelhouse",
) -> TorchWheel:
    """The torch wheel of the row's flavour in a directory of wheels.

    Args:
        directory: The wheels (a ``--wheelhouse``, or what pip downloaded from an index).
        resolved: The matrix row.
        platforms: The platform tags that fit (``wheels.PLATFORMS``).
        platform: The platform, for the error.
        where: How the error names the directory (default ``--wheelhouse DIR``).
        source: What the wheel's ``source`` says (an index URL, or ``wheelhouse``).

    Raises:
        BuildError: it holds none (naming what it holds).
    """
    names = [w for w in (parse_wheel(p.name) for p in sorted(directory.glob("*.whl"))) if w is not None]
    wheel, found = choose(names, resolved, platforms)
    if wheel is None:
        raise no_flavour(where or f"--wheelhouse {directory}", resolved, platform, found)
    return found_wheel(wheel, source)


def found_wheel(wheel: WheelName, source: str) -> TorchWheel:
    """What a chosen wheel says about itself: its flavour comes from its own local label."""
    flavor = flavor_of(wheel.local)
    assert flavor is not None, wheel.filename  # choose() took it for its local label
    return TorchWheel(wheel.filename, wheel.version, flavor, source)


# --- an index --------------------------------------------------------------------------------------------


def redact(url: str) -> str:
    """The URL without the user and password it may carry (``https://user:token@host/...``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def host_of(url: str) -> str:
    """The host (and port) of a URL, as errors name it: never its credentials or path."""
    parts = urllib.parse.urlsplit(url)
    return (parts.hostname or url) + (f":{parts.port}" if parts.port else "")


def torch_on_index(
    index_url: str,
    resolved: Resolved,
    platforms: list[str],
    platform: str,
    *,
    timeout: float = TIMEOUT_S,
    attempts: int = ATTEMPTS,
) -> TorchWheel:
    """The index's torch wheel of the row's flavour, read from its project page.

    Raises:
        ClusterError: the index does not answer (after ``attempts`` tries of ``timeout`` seconds
            each), or refuses (HTTP 401/403/5xx).
        BuildError: the index has no torch, or no wheel of the flavour (naming what it has).
    """
    where = f"the wheel index {redact(index_url)}"
    page = project_url(index_url, "torch")
    found = fetch_page(page, timeout=timeout, attempts=attempts)
    if found is None:
        raise BuildError(
            f"{where} has no torch (HTTP 404 for {redact(page)})",
            hint="check the index URL: PyTorch's are https://download.pytorch.org/whl/cpu, .../whl/cu130 ...",
        )
    body, content_type = found
    names = [w for w in (parse_wheel(name) for name in page_files(body, content_type)) if w is not None]
    wheel, others = choose(names, resolved, platforms)
    if wheel is None:
        raise no_flavour(where, resolved, platform, others)
    return found_wheel(wheel, redact(index_url))


def project_url(index_url: str, project: str) -> str:
    """The PEP 503 project page of ``project`` on an index: ``<index>/<normalized name>/``."""
    return index_url.rstrip("/") + "/" + re.sub(r"[-_.]+", "-", project).lower() + "/"


def fetch_page(url: str, *, timeout: float = TIMEOUT_S, attempts: int = ATTEMPTS) -> tuple[bytes, str] | None:
    """GET an index page: its body and content type, or None for 404.

    Each try waits ``timeout`` seconds for the connection and for each read; a try that fails to
    connect, times out or gets a 5xx is repeated once a second later, up to ``attempts`` tries.

    Raises:
        ClusterError: naming the host and the last reason.
    """
    parts = urllib.parse.urlsplit(url)
    headers = {"Accept": _ACCEPT, "User-Agent": "mlctl"}
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    request = urllib.request.Request(redact(url), headers=headers)
    host = host_of(url)
    reason = ""
    for attempt in range(max(attempts, 1)):
        if attempt:
            time.sleep(1.0)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                body = reply.read(MAX_PAGE + 1)
                if len(body) > MAX_PAGE:
                    raise ClusterError(f"the wheel index at {host} sent a page over {MAX_PAGE >> 20} MB for {url}")
                return body, reply.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            reason = f"HTTP {exc.code} {exc.reason}"
            if exc.code in (401, 403):
                raise ClusterError(
                    f"the wheel index at {host} refuses mlctl: {reason}",
                    hint="an index that needs a login takes it in its URL: https://USER:TOKEN@host/...",
                ) from None
            if exc.code < 500:
                break
        except (urllib.error.URLError, OSError) as exc:
            reason = _reason(exc)
    tries = f"{attempts} tries of {timeout:g} s" if attempts > 1 else f"{timeout:g} s"
    raise ClusterError(
        f"the wheel index at {host} does not answer: {reason} ({tries})",
        hint="check the network or proxy (`mlctl doctor` asks the index), use a mirror with --torch-index URL, "
        "or build offline with --wheelhouse DIR",
    )


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "reason", exc)
    if isinstance(inner, TimeoutError) or "timed out" in str(inner).lower():
        return "timed out"
    text = getattr(inner, "strerror", None) or str(inner)
    return str(text).strip() or type(inner).__name__


def page_files(body: bytes, content_type: str) -> list[str]:
    """The file names on a PEP 691 (JSON) or PEP 503 (HTML) project page; yanked files left out."""
    if content_type.endswith("json"):
        try:
            data = json.loads(body)
        except ValueError:
            return []
        files = data.get("files", []) if isinstance(data, dict) else []
        return [str(f.get("filename", "")) for f in files if isinstance(f, dict) and not f.get("yanked")]
    parser = _Anchors()
    parser.feed(body.decode("utf-8", errors="replace"))
    return parser.files


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.files: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        found = dict(attrs)
        href = found.get("href") or ""
        if "data-yanked" in found:
            return
        path = urllib.parse.urlsplit(href).path
        self.files.append(urllib.parse.unquote(path.rsplit("/", 1)[-1]))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))
