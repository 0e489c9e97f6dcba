"""The test registries: Debian's docker-registry on loopback, one open and one with a login.

A push of the base layers to a registry that has never seen them gzips about 1.3 GB on one core
(most of a minute and a half here). The registry protocol lets a client mount a blob the registry
already holds into another repository instead of uploading it, and the Docker engine does so when it
remembers pushing that layer to the same host (with the same login). So ``scripts/start-services``
keeps two registries running between test runs, on ports that stay the same, with their storage
under ``.cache/test-registries/``: after the first run, a test's push uploads only its own layers,
as a team's registry does for a service's second build.

What the tests push there lives under their run's namespace (conftest's ``REGISTRY_NAMESPACE``), so
runs never see each other's repositories; the registry is the tests' own service, like the engine.
Storage past ``MAX_MB`` is emptied when the registry is (re)started. Without ``scripts/start-services``
(pytest run by hand), the fixtures start a registry of their own in a temporary directory, as before.

Run as a script (what ``scripts/start-services`` does), it starts whichever is not answering and
prints both addresses.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".cache" / "test-registries"
#: The login of the "login" registry (the pipeline tests' repository secrets).
USER, PASSWORD = "ci", "pipeline-s3cret"
KINDS = ("open", "login")
#: Storage beyond this (blobs of many runs' service layers) is emptied when the registry starts.
MAX_MB = 6000


def htpasswd(data: Path) -> Path:
    """An htpasswd file in ``data`` holding ``USER``'s bcrypt hash of ``PASSWORD``."""
    with warnings.catch_warnings():  # crypt (until Python 3.13): bcrypt through libxcrypt, as htpasswd wants
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    path = data / "htpasswd"
    path.write_text(f"{USER}:{crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    return path


def login_auth(data: Path) -> str:
    """The ``auth:`` section (its body, indented) of a registry in ``data`` that wants ``USER``'s login."""
    return f"  htpasswd:\n    realm: ci\n    path: {htpasswd(data)}\n"


def config(data: Path, port: int, *, auth: str = "") -> Path:
    """docker-registry's config for storage under ``data`` on 127.0.0.1:``port``; ``auth`` as ``login_auth``."""
    data.mkdir(parents=True, exist_ok=True)
    path = data / "config.yml"
    path.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}/blobs\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + (f"auth:\n{auth}" if auth else "")
    )
    return path


def answers(address: str) -> bool:
    """Whether a registry answers at ``address`` (401 counts: it wants a login)."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except (OSError, urllib.error.URLError):
        return False


def wait_for(address: str, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers(address):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {process.returncode} before answering on {address}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"docker-registry did not answer on {address} within {timeout_s:.0f} s")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def running(kind: str) -> str | None:
    """The address of the kept ``kind`` registry when it answers, else None."""
    recorded = HOME / kind / "address"
    if not recorded.is_file():
        return None
    address = recorded.read_text().strip()
    return address if answers(address) else None


def ensure(kind: str) -> str:
    """Start the kept ``kind`` registry unless it answers; its address (the same port as last time when free)."""
    address = running(kind)
    if address is not None:
        return address
    data = HOME / kind
    blobs = data / "blobs"
    if blobs.is_dir():
        size = sum(f.stat().st_size for f in blobs.rglob("*") if f.is_file()) // (1024 * 1024)
        if size > MAX_MB:
            shutil.rmtree(blobs)
    port_file = data / "port"
    port = int(port_file.read_text()) if port_file.is_file() else 0
    if not port or not port_is_free(port):
        port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    path = config(data, port, auth=login_auth(data) if kind == "login" else "")
    with (data / "log").open("ab") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # it outlives this script, as dockerd does
        )
    address = f"127.0.0.1:{port}"
    wait_for(address, process)
    port_file.write_text(f"{port}\n")
    (data / "address").write_text(address + "\n")
    (data / "pid").write_text(f"{process.pid}\n")
    return address


def main() -> int:
    if shutil.which("docker-registry") is None:
        print("docker-registry is not installed (scripts/start-services installs it)", file=sys.stderr)
        return 1
    for kind in KINDS:
        print(f"{kind} {ensure(kind)} (storage: {os.path.relpath(HOME / kind, REPO)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
