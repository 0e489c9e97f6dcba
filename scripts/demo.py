"""The main job: new -> test -> run -> one prediction, with the mlctl in this checkout.

Run it through scripts/demo (which sets up .venv first). The service is made in .cache/demo/.
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


def main() -> int:
    step("mlctl doctor (informational: the demo needs only Python and git)")
    subprocess.run([*MLCTL, "doctor"], cwd=ROOT, check=False)

    step(f"mlctl new {NAME}")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    service = WORK / NAME
    run(*MLCTL, "new", NAME, "--dir", str(service), "--yes")

    step("the service's own tests")
    run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=service)

    step("mlctl run, then one prediction over the Open Inference Protocol")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"$ mlctl run --port {port}", flush=True)
    server = subprocess.Popen([*MLCTL, "run", "--port", str(port), "--no-reload"], cwd=service)
    try:
        wait_ready(url, server)
        request = {
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
        print(f"$ POST {url}/v2/models/{NAME}/infer\n{json.dumps(request)}", flush=True)
        post = urllib.request.Request(
            f"{url}/v2/models/{NAME}/infer",
            data=json.dumps(request).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=30) as response:
            answer = json.loads(response.read())
        print(json.dumps(answer, indent=2), flush=True)
        [output] = answer["outputs"]
        assert output["shape"] == [2, 3], output
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=60)
    if code != 0:
        print(f"mlctl run exited with {code}", file=sys.stderr)
        return code
    step(f"done: the service is in {service.relative_to(ROOT)}; try `cd {service.relative_to(ROOT)} && mlctl run`")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
