"""The main job: new -> test -> run -> one prediction -> build -> deploy locally -> one prediction -> down,
with the mlctl in this checkout.

Run it through scripts/demo (which sets up .venv first). The service is made in .cache/demo/. The
build and the local deploy need a Docker engine; without one the demo says so and stops after `mlctl run`.
Where Docker Hub or PyTorch's wheel index cannot be reached (an offline machine), the build starts from a
Debian root made locally (scripts/make-test-root) and installs wheels resolved from PyPI: both are said.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "demo"
NAME = "demo-service"
MLCTL = [sys.executable, "-m", "mlctl"]


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def run(*argv: str, cwd: Path = ROOT) -> None:
    print("$ " + " ".join(argv), flush=True)
    subprocess.run(argv, cwd=cwd, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"mlctl run exited with {server.returncode} before the service was ready")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise SystemExit("the service did not become ready in time")


REQUEST = {
    "id": "demo-1",
    "inputs": [
        {
            "name": "features",
            "shape": [2, 8],
            "datatype": "FP32",
            "data": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], [1, 0, 1, 0, 1, 0, 1, 0]],
        }
    ],
}


def predict(url: str) -> None:
    print(f"$ POST {url}/v2/models/{NAME}/infer\n{json.dumps(REQUEST)}", flush=True)
    post = urllib.request.Request(
        f"{url}/v2/models/{NAME}/infer",
        data=json.dumps(REQUEST).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(post, timeout=30) as response:
        answer = json.loads(response.read())
    print(json.dumps(answer, indent=2), flush=True)
    [output] = answer["outputs"]
    assert output["shape"] == [2, 3], output


def docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, urllib.error.URLError):
        return False


def build_flags() -> list[str]:
    """Nothing on a connected machine; local stand-ins, said out loud, where the internet is closed."""
    flags: list[str] = []
    pulled = subprocess.run(["docker", "pull", "-q", "python:3.11-slim-bookworm"], capture_output=True, timeout=300)
    if pulled.returncode != 0:
        print("Docker Hub cannot be reached from here: the image starts from a Debian root made locally", flush=True)
        run(str(ROOT / "scripts" / "make-test-root"), "mlctl-demo/debian:bookworm")
        flags += ["--root", "mlctl-demo/debian:bookworm"]
    if not reachable("https://download.pytorch.org/whl/cpu/"):
        print("PyTorch's wheel index cannot be reached from here: wheels are resolved from PyPI", flush=True)
        house = WORK / "wheels"
        run(
            sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--dest", str(house),
            "torch==2.13.0", "uvicorn[standard]>=0.30", "orjson>=3.10", "prometheus-client>=0.20",
        )  # fmt: skip
        flags += ["--wheelhouse", str(house)]
    return flags


def main() -> int:
    step("mlctl doctor (informational: the demo needs only Python and git)")
    subprocess.run([*MLCTL, "doctor"], cwd=ROOT, check=False)

    step(f"mlctl new {NAME}")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    service = WORK / NAME
    # CPU: the demo asks for no GPU (a cuda service runs on CPU too, but its image is CUDA's, several GB).
    run(*MLCTL, "new", NAME, "--dir", str(service), "--yes", "--set", "accelerator=cpu")

    step("the service's own tests")
    run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=service)

    step("mlctl run, then one prediction over the Open Inference Protocol")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"$ mlctl run --port {port}", flush=True)
    server = subprocess.Popen([*MLCTL, "run", "--port", str(port), "--no-reload"], cwd=service)
    try:
        wait_ready(url, server)
        predict(url)
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=60)
    if code != 0:
        print(f"mlctl run exited with {code}", file=sys.stderr)
        return code

    if not docker_answers():
        step("no Docker engine answers here: build and local deploy skipped")
        print(
            "Install and start one (Debian/Ubuntu: sudo apt-get install docker.io && sudo systemctl start docker,\n"
            "or scripts/start-services), then run scripts/demo again. `mlctl doctor` shows what is missing.",
            flush=True,
        )
        return 0

    step("mlctl build: the layered image (root -> python -> torch -> service)")
    run(*MLCTL, "build", *build_flags(), cwd=service)

    step("mlctl deploy --target local, then the same prediction against the container")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run(*MLCTL, "deploy", "--target", "local", "--port", str(port), cwd=service)
    try:
        predict(url)
    finally:
        step("mlctl down")
        run(*MLCTL, "down", cwd=service)
    where = service.relative_to(ROOT)
    step(f"done: the service is in {where}; next, `mlctl deploy --env staging` on a cluster (see README)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
