"""Real wheel files and real wheel indexes on 127.0.0.1, for the tests of torch resolution.

No PyTorch index is reachable from CI machines, and no CUDA wheel lies on their disks. What a CUDA
resolution must find is made here: a wheel whose file name and metadata say ``torch 2.13.0+cu130``
(PyTorch's local version label for its CUDA 13.0 build), with a ``torch`` package that reports a
version and ``torch.version.cuda`` of the test's choosing, so a test can also make a wheel whose
name says one build and whose content is another. The wheels are valid (PEP 427: METADATA, WHEEL,
RECORD with hashes); pip installs them.

``serve_index`` serves a directory of wheels as a PEP 503 "simple" index (HTML; PEP 691 JSON when
asked), optionally behind Basic auth; ``silent_server`` accepts connections and never answers.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import socket
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LINUX_311 = "cp311-cp311-manylinux_2_28_x86_64"


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    files: dict[str, str],
    tag: str = LINUX_311,
    requires: tuple[str, ...] = (),
) -> Path:
    """A wheel of ``name`` ``version`` for ``tag`` holding ``files`` (path -> text), needing ``requires``."""
    dist_info = f"{name}-{version}.dist-info"
    purelib = "true" if tag.endswith("-none-any") else "false"
    entries = [(path, text.encode()) for path, text in files.items()]
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    entries.append((f"{dist_info}/METADATA", metadata.encode()))
    entries.append(
        (
            f"{dist_info}/WHEEL",
            f"Wheel-Version: 1.0\nGenerator: mlctl-tests\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n".encode(),
        )
    )
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([path, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    entries.append((f"{dist_info}/RECORD", record.getvalue().encode()))
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(target, "w") as wheel:
        for path, data in entries:
            wheel.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return target


def fake_torch(
    directory: Path,
    version: str,
    *,
    reports: str | None = None,
    cuda: str | None = None,
    mark: str = "",
    tag: str = LINUX_311,
    requires: tuple[str, ...] = (),
) -> Path:
    """A torch wheel named ``version`` whose ``torch`` says ``reports`` (default: the same) and ``cuda``.

    ``mark`` goes into the package as a comment: a test's own mark makes its wheel (and the torch
    layer built from it) its own.
    """
    files = {
        "torch/__init__.py": f"# {mark}\n__version__ = {reports or version!r}\nfrom torch import version\n",
        "torch/version.py": f"__version__ = {reports or version!r}\ncuda = {cuda!r}\n",
    }
    return make_wheel(directory, "torch", version, files, tag, requires)


@contextlib.contextmanager
def serve_index(directory: Path, *, credentials: tuple[str, str] | None = None) -> Iterator[str]:
    """A PEP 503 index of the wheels in ``directory`` on a free loopback port; yields ``http://.../simple``.

    Project pages list each wheel with its ``#sha256=`` (as PyPI and PyTorch's indexes do); files are
    served from ``/files/``. With ``credentials``, every request needs them (HTTP Basic), else 401.
    """

    def projects() -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {}
        for wheel in sorted(directory.glob("*.whl")):
            found.setdefault(wheel.name.split("-", 1)[0].lower().replace("_", "-"), []).append(wheel)
        return found

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if credentials is not None:
                wanted = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
                if self.headers.get("Authorization") != wanted:
                    self._send(401, b"login needed", "text/plain")
                    return
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            parts = [p for p in path.split("/") if p]
            if parts[:1] == ["files"] and len(parts) == 2 and (directory / parts[1]).is_file():
                self._send(200, (directory / parts[1]).read_bytes(), "application/octet-stream")
            elif parts[:1] == ["simple"] and len(parts) == 2 and parts[1] in projects():
                wheels = projects()[parts[1]]
                if "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
                    files = [
                        {
                            "filename": w.name,
                            "url": f"/files/{urllib.parse.quote(w.name)}",
                            "hashes": {"sha256": _sha256(w)},
                        }
                        for w in wheels
                    ]
                    page = {"meta": {"api-version": "1.0"}, "name": parts[1], "files": files}
                    self._send(200, json.dumps(page).encode(), "application/vnd.pypi.simple.v1+json")
                    return
                links = "".join(
                    f'<a href="../../files/{urllib.parse.quote(w.name)}#sha256={_sha256(w)}">{w.name}</a><br>\n'
                    for w in wheels
                )
                self._send(200, f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode(), "text/html")
            else:
                self._send(404, b"not found", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A server that takes connections (the kernel's backlog) and never answers; yields its index URL."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/simple"
