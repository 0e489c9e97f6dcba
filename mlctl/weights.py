"""The model's weights: where they come from, what they are called, and the download cache.

Weights are an input of the build, like the code. ``model.source`` in ``mlctl.yaml`` says where they
come from (``mlctl.config.ModelConfig``); this module names them by digest and fetches pinned ones:

* A weights **digest** is ``sha256:<hex>``: of the file's bytes for one file (so it is the digest
  ``sha256sum`` prints and ``model.sha256`` pins), of a sorted list of ``path``, NUL, file digest, newline
  for a directory. The image carries it as its ``mlctl.weights`` label and its first 12 digits in its tag.
* Weights from a **URI** are downloaded once into a content-addressed cache
  (``<cache>/weights/sha256/<hex>``): a download goes to a temporary file, is hashed as it arrives, and
  becomes the cache entry only when its digest is the pinned one; anything else is discarded. A cached
  entry is used without asking the network again.
* ``model.prepare`` makes the weights; when it fails, whatever it left at ``model.path`` is removed
  (:func:`undo_prepare`), and the errors say which part of ``mlctl.yaml`` to look at.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from mlctl.errors import BuildError, ClusterError, ConfigError, InputError
from mlctl.reporting import Reporter

#: The image label holding the weights' digest.
LABEL = "mlctl.weights"
#: How many times a download is tried before mlctl gives up on the host.
ATTEMPTS = 3
#: Seconds before the second attempt; doubled before each further one.
BACKOFF_S = 1.0
#: Seconds a connection may stay silent.
TIMEOUT_S = 30.0
_BLOCK = 1 << 20
#: What one read of a download takes: small enough for a progress bar that moves.
_READ = 1 << 16


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of one file's bytes, read in blocks."""
    total = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            total.update(block)
    return "sha256:" + total.hexdigest()


def files_digest(files: Iterable[tuple[str, bytes]], *, single: bool) -> str:
    """The weights digest of files held in memory: ``(path relative to the weights, content)``.

    ``single``: the weights are one file (its own digest), else a directory (a digest of its listing).
    """
    items = sorted(files)
    if single:
        [(_, content)] = items
        return "sha256:" + hashlib.sha256(content).hexdigest()
    listing = "".join(f"{path}\0{hashlib.sha256(content).hexdigest()}\n" for path, content in items)
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()


def short(digest: str) -> str:
    """The first 12 hex digits of a weights digest: what the image's tag carries."""
    return digest.removeprefix("sha256:")[:12]


def check_pin(digest: str, pinned: str | None, where: str) -> None:
    """Refuse weights whose digest is not ``model.sha256`` (when one is set).

    Raises:
        BuildError: naming both digests.
    """
    if pinned is not None and digest != f"sha256:{pinned}":
        raise BuildError(
            f"the weights {where} are {digest}, but model.sha256 in mlctl.yaml pins sha256:{pinned}",
            hint="put the pinned weights there, or pin the new ones (sha256sum gives the digest)",
        )


# --- the download cache ------------------------------------------------------------------------------


def cache_root(cache: Path | None = None) -> Path:
    """The content-addressed weights cache: ``<cache>/weights/sha256`` (default: mlctl's cache)."""
    from mlctl.resources import cache_dir

    return (cache or cache_dir()) / "weights" / "sha256"


def cached(sha256: str, cache: Path | None = None) -> Path | None:
    """The cache entry of weights with this digest, when they were downloaded before."""
    path = cache_root(cache) / sha256
    return path if path.is_file() else None


def host_of(uri: str) -> str:
    """What error messages name for a URI: its host (never its path or query, which may carry tokens)."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "file" or not parsed.hostname:
        return "this machine"
    return parsed.hostname


def fetch(
    uri: str,
    sha256: str,
    *,
    reporter: Reporter,
    cache: Path | None = None,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
    timeout_s: float = TIMEOUT_S,
) -> Path:
    """The weights at ``uri`` with digest ``sha256``, from the cache or downloaded into it once.

    Returns the cache entry. Another mlctl downloading the same weights meanwhile is waited for.

    Raises:
        BuildError: what arrived is not ``sha256`` (it is discarded; nothing is cached).
        ClusterError: the host cannot be reached or refuses, after ``attempts`` tries (one line naming it).
        InputError: a ``file://`` URI naming no file.
    """
    from mlctl.images import locks

    found = cached(sha256, cache)
    if found is not None:
        reporter.step(f"weights sha256:{short(sha256)}: in the cache, not downloaded again")
        return found
    root = cache_root(cache)
    root.mkdir(parents=True, exist_ok=True)
    waiting = f"waiting for another mlctl downloading the weights sha256:{short(sha256)}"
    with locks.held(root / f"{sha256}.lock", on_wait=lambda: reporter.step(waiting)):
        found = cached(sha256, cache)
        if found is not None:
            return found
        target = root / sha256
        partial = root / f".{sha256}.{os.getpid()}.partial"
        try:
            digest = _download(uri, partial, reporter, attempts, backoff_s, timeout_s)
            if digest != f"sha256:{sha256}":
                raise BuildError(
                    f"the weights from {host_of(uri)} are {digest}, not the sha256:{sha256} model.sha256 pins: "
                    "the download was discarded",
                    hint="if the new weights are the ones you want, pin their digest in mlctl.yaml (model.sha256)",
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def _download(uri: str, partial: Path, reporter: Reporter, attempts: int, backoff_s: float, timeout: float) -> str:
    host = host_of(uri)
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "file":
        attempts = 1  # a missing file does not appear by asking again
    last = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            wait = backoff_s * 2 ** (attempt - 2)
            reporter.step(f"download of the weights from {host} failed ({last}); trying again in {wait:g} s")
            time.sleep(wait)
        try:
            return _download_once(uri, partial, reporter, host, timeout)
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            if exc.code < 500 and exc.code not in (408, 429):
                raise ClusterError(
                    f"cannot download the weights from {host}: {last}",
                    hint="check model.uri in mlctl.yaml, and that this machine may read it",
                ) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, FileNotFoundError | IsADirectoryError | PermissionError) or scheme == "file":
                raise InputError(
                    f"model.uri {uri}: {getattr(reason, 'strerror', None) or reason}",
                    hint="check model.uri in mlctl.yaml",
                ) from None
            last = str(getattr(reason, "strerror", None) or reason)
        except (ConnectionError, TimeoutError, http.client.HTTPException, _Incomplete) as exc:
            last = str(exc) or type(exc).__name__
    raise ClusterError(
        f"cannot download the weights from {host}: {last} ({attempts} attempts)",
        hint="check that this machine reaches it (proxy, VPN, DNS), then build again",
    )


class _Incomplete(Exception):
    """The connection ended before the announced length arrived."""


def _download_once(uri: str, partial: Path, reporter: Reporter, host: str, timeout: float) -> str:
    started = time.monotonic()
    total = hashlib.sha256()
    done = 0
    request = urllib.request.Request(uri, headers={"User-Agent": "mlctl"})
    with urllib.request.urlopen(request, timeout=timeout) as response, partial.open("wb") as out:
        length = int(response.headers.get("Content-Length") or 0) or None
        shown = -1
        if length:
            reporter.status(f"downloading the weights from {host}: 0 % of {_size(length)}", "0 s", [_bar(0, length)])
            shown = 0
        while block := response.read(_READ):
            out.write(block)
            total.update(block)
            done += len(block)
            tenth = done * 10 // length if length else done // (64 << 20)
            if tenth != shown:  # a log gets a line per 10 % (per 64 MB when the size is unknown)
                shown = tenth
                line = (
                    f"downloading the weights from {host}: {done * 100 // length} % of {_size(length)}"
                    if length
                    else f"downloading the weights from {host}: {_size(done)}"
                )
                reporter.status(line, f"{time.monotonic() - started:.0f} s", [_bar(done, length)])
        if length is not None and done != length:
            raise _Incomplete(f"the connection ended after {done} of {length} bytes")
    reporter.info(f"downloaded the weights from {host}: {_size(done)} in {time.monotonic() - started:.1f} s")
    return "sha256:" + total.hexdigest()


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000  # type: ignore[assignment]
    return f"{count} B"


def _bar(done: int, length: int | None, width: int = 30) -> str:
    if not length:
        return _size(done)
    filled = width * done // length
    return "[" + "#" * filled + "." * (width - filled) + f"] {_size(done)} / {_size(length)}"


# --- model.prepare -----------------------------------------------------------------------------------


def prepare_failed(command: str, status: int, output: str) -> BuildError:
    """The error for a ``model.prepare`` that exited with ``status``: exit 7, with its last lines."""
    lines = [line for line in output.strip().splitlines() if line.strip()][-10:]
    return BuildError(
        f"model.prepare `{command}` failed with status {status}",
        hint=("its last lines:\n    " + "\n    ".join(lines)) if lines else "it printed nothing",
    )


def prepare_did_not_start(command: str, reason: str) -> ConfigError:
    """The error for a ``model.prepare`` that could not start (no such program): a config problem, exit 3."""
    return ConfigError(
        f"model.prepare `{command}` could not start: {reason}",
        hint="fix model.prepare in mlctl.yaml (a command run from the service directory)",
    )


def prepare_wrote_nothing(command: str, path: str) -> ConfigError:
    """The error for a ``model.prepare`` that succeeded without making ``model.path``: exit 3."""
    return ConfigError(
        f"model.prepare `{command}` succeeded but nothing is at model.path ({path})",
        hint="make model.prepare write the weights to model.path, or point model.path at what it writes",
    )


def undo_prepare(path: Path, existed: bool) -> None:
    """Remove what a failed ``model.prepare`` left at ``path`` when nothing was there before it ran."""
    if existed:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
