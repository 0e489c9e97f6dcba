"""The main job, every step of it: new -> test -> run -> predict -> build -> deploy --target local ->
predict -> down, with the mlctl in this checkout.

Run it through scripts/demo, which sets up .venv and starts the Docker engine first (installing it when
missing). Each step is checked by what it made, not by its exit code alone (the image is on the engine
with its service's label, the container answers and is gone after `mlctl down`), and the demo exits 1
unless every step happened: a step that cannot run (no Docker engine) is a failure, never a skip.
Where Docker Hub or PyTorch's wheel index cannot be reached (an offline machine), the build starts from
a Debian root made locally (scripts/make-test-root) and installs wheels resolved from PyPI; both are said.

Options (for CI and the tests): --name NAME, --work DIR (where the service is made; default .cache/demo),
--root IMAGE and --wheelhouse DIR (passed to mlctl build), --label KEY=VALUE (repeatable; labels the
service image), --report FILE (each step's outcome as JSON).
"""

from __future__ import annotations

import argparse
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
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MLCTL = [sys.executable, "-m", "mlctl"]
#: The road, in order; the demo succeeds only when every one of them happened.
STEPS = ("new", "test", "run", "build", "deploy --target local", "predict", "down")


class StepFailed(Exception):
    """A step did not happen; the message says what was seen instead."""


@dataclass
class Outcome:
    step: str
    done: bool = False
    detail: str = ""


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def run(*argv: str, cwd: Path = ROOT) -> None:
    print("$ " + " ".join(argv), flush=True)
    done = subprocess.run(argv, cwd=cwd, check=False)
    if done.returncode != 0:
        raise StepFailed(f"`{' '.join(argv[2:] if argv[:2] == tuple(MLCTL[:2]) else argv)}` exited {done.returncode}")


def show_event(line: str) -> None:
    """One progress event of ``mlctl --json`` (stderr) as the plain output shows it."""
    try:
        event = json.loads(line)
        kind, message = event["event"], event["message"]
    except (ValueError, KeyError, TypeError):
        print(line, end="", file=sys.stderr, flush=True)
        return
    if kind == "log":  # a tool's output: its steps only, as mlctl shows them in a log
        if " Step " in f" {message}" or message.startswith("[push]"):
            print(f"  {message[:200]}" + ("..." if len(message) > 200 else ""), file=sys.stderr, flush=True)
        return
    prefix = {"step": "• ", "warn": "warning: "}.get(kind, "  ")
    print(f"{prefix}{message}", file=sys.stderr, flush=True)


def run_json(*argv: str, cwd: Path) -> dict:  # type: ignore[type-arg]
    """``mlctl --json ARGV``: its progress shown as it comes, its result read."""
    print("$ mlctl " + " ".join(argv), flush=True)
    process = subprocess.Popen(
        [*MLCTL, "--json", *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    assert process.stdout is not None
    for line in process.stderr:
        show_event(line)
    output = process.stdout.read()
    code = process.wait()
    try:
        data = json.loads(output)
    except ValueError:
        raise StepFailed(f"`mlctl {' '.join(argv)}` exited {code} without a result") from None
    if code != 0:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise StepFailed(f"`mlctl {' '.join(argv)}` exited {code}: {error.get('message', '')}")
    return data  # type: ignore[no-any-return]


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise StepFailed(f"mlctl run exited with {server.returncode} before the service was ready")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise StepFailed(f"{url} was not ready within {timeout:.0f} s")


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


def predict(url: str, name: str) -> str:
    print(f"$ POST {url}/v2/models/{name}/infer\n{json.dumps(REQUEST)}", flush=True)
    post = urllib.request.Request(
        f"{url}/v2/models/{name}/infer",
        data=json.dumps(REQUEST).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(post, timeout=30) as response:
            answer = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise StepFailed(f"the prediction failed: {exc}") from None
    print(json.dumps(answer, indent=2), flush=True)
    outputs = answer.get("outputs") or [{}]
    if outputs[0].get("shape") != [2, 3]:
        raise StepFailed(f"the prediction has the wrong shape: {outputs[0].get('shape')}")
    return f"{url}: outputs of shape [2, 3]"


def docker_answers() -> bool:
    try:
        return docker("info").returncode == 0
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


def build_flags(args: argparse.Namespace, work: Path) -> list[str]:
    """--root and --wheelhouse as given; else local stand-ins, said out loud, where the internet is closed."""
    flags = [flag for label in args.label for flag in ("--label", label)]
    if args.root:
        flags += ["--root", args.root]
    elif docker("pull", "-q", "python:3.11-slim-bookworm").returncode != 0:
        print("Docker Hub cannot be reached from here: the image starts from a Debian root made locally", flush=True)
        run(str(ROOT / "scripts" / "make-test-root"), "mlctl-demo/debian:bookworm")
        flags += ["--root", "mlctl-demo/debian:bookworm"]
    if args.wheelhouse:
        flags += ["--wheelhouse", str(args.wheelhouse.resolve())]  # the build runs in the service
    elif not reachable("https://download.pytorch.org/whl/cpu/"):
        print("PyTorch's wheel index cannot be reached from here: wheels come from pip's own sources", flush=True)
        house = work / "wheels"
        # The CPU build by its local version (PyPI's plain torch for Linux is the CUDA one, which the
        # build refuses for a cpu service), for the demo service's Python rather than the host's.
        run(
            sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11",
            "--dest", str(house),
            "torch==2.13.0+cpu", "uvicorn[standard]>=0.30", "orjson>=3.10", "prometheus-client>=0.20",
        )  # fmt: skip
        flags += ["--wheelhouse", str(house)]
    return flags


class Road:
    """The steps in order; a step runs only when every one before it happened."""

    def __init__(self) -> None:
        self.outcomes = {step: Outcome(step) for step in STEPS}
        self.failed: str | None = None

    def step(self, name: str, title: str, action) -> None:  # type: ignore[no-untyped-def]
        if self.failed is not None:
            self.outcomes[name].detail = f"not reached: {self.failed} did not happen"
            return
        say(title)
        try:
            self.outcomes[name] = Outcome(name, True, action() or "")
        except StepFailed as exc:
            self.outcomes[name] = Outcome(name, False, str(exc))
            self.failed = name
            print(f"\033[1;31m{name} did not happen:\033[0m {exc}", file=sys.stderr, flush=True)

    @property
    def ok(self) -> bool:
        return all(o.done for o in self.outcomes.values())

    def summary(self) -> str:
        width = max(len(step) for step in STEPS)
        return "\n".join(
            f"  {'done    ' if o.done else 'NOT DONE'}  {o.step.ljust(width)}  {o.detail}".rstrip()
            for o in self.outcomes.values()
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", default="demo-service")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "demo")
    parser.add_argument("--root", help="root image for mlctl build (default: the matrix's, or one made here)")
    parser.add_argument("--wheelhouse", type=Path, help="wheels for mlctl build (default: the indexes)")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE label for the service image")
    parser.add_argument("--report", type=Path, help="write each step's outcome here as JSON")
    args = parser.parse_args(argv)
    name, work = args.name, args.work.resolve()
    service = work / name
    state: dict[str, str] = {}

    say("mlctl doctor (what this machine has; the demo needs Python, git and the Docker engine)")
    subprocess.run([*MLCTL, "doctor"], cwd=ROOT, check=False)
    road = Road()

    def new() -> str:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        # CPU, asked for: on a machine with a GPU the default is cuda, and a CUDA image is several GB.
        run(*MLCTL, "new", name, "--dir", str(service), "--yes", "--set", "accelerator=cpu")
        if not (service / "mlctl.yaml").is_file():
            raise StepFailed(f"no {service}/mlctl.yaml")
        return str(service)

    def test() -> str:
        print("$ python -m pytest -q", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
            cwd=service,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        print(done.stdout, end="", flush=True)
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode != 0 or " passed" not in last:
            raise StepFailed(f"the service's tests: {last or f'exit {done.returncode}'}")
        return last.strip("= ")

    def run_from_source() -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        print(f"$ mlctl run --port {port} --no-reload", flush=True)
        server = subprocess.Popen([*MLCTL, "run", "--port", str(port), "--no-reload"], cwd=service)
        try:
            wait_ready(url, server)
            answered = predict(url, name)
        finally:
            server.send_signal(signal.SIGINT)
            code = server.wait(timeout=60)
        if code != 0:
            raise StepFailed(f"mlctl run exited {code} on Ctrl-C")
        return f"served from source and stopped cleanly; {answered}"

    def build() -> str:
        if not docker_answers():
            raise StepFailed(
                "no Docker engine answers here (scripts/demo installs and starts one: run the demo through it, "
                "or scripts/start-services)"
            )
        result = run_json("build", *build_flags(args, work), cwd=service)
        image = result["image"]
        reference = f"{image['repository']}:{image['tag']}"
        labels = docker("image", "inspect", "--format", "{{json .Config.Labels}}", reference)
        if labels.returncode != 0:
            raise StepFailed(f"mlctl build said {reference}, but the engine has no such image")
        if json.loads(labels.stdout or "{}").get("mlctl.service") != name:
            raise StepFailed(f"{reference} is not labelled as {name}'s image")
        state["image"] = reference
        return reference

    def deploy() -> str:
        port = free_port()
        result = run_json("deploy", "--target", "local", "--port", str(port), cwd=service)
        state["container"] = result["container"]
        status = run_json("status", "--target", "local", cwd=service)
        if (status["state"], status["ready"], status["image"]) != ("running", True, state["image"]):
            raise StepFailed(f"mlctl status --target local says {status['state']}, ready={status['ready']}")
        state["url"] = result["url"]
        return f"{result['container']} from {status['image']} at {result['url']}, ready"

    def predict_from_container() -> str:
        return "the container at " + predict(str(state["url"]), name)

    def down() -> str:
        result = run_json("down", cwd=service)
        container = str(state.get("container", f"mlctl-{name}"))
        if docker("container", "inspect", container).returncode == 0:
            raise StepFailed(f"{container} is still there after mlctl down")
        return f"stopped {', '.join(result['stopped'])}"

    try:
        road.step("new", f"mlctl new {name}", new)
        road.step("test", "the service's own tests", test)
        road.step("run", "mlctl run: serve it from source, one prediction, Ctrl-C", run_from_source)
        road.step("build", "mlctl build: the layered image (root -> python -> torch -> service)", build)
        road.step("deploy --target local", "mlctl deploy --target local: the image as a pod runs it", deploy)
        road.step("predict", "one prediction against the container (Open Inference Protocol)", predict_from_container)
        road.step("down", "mlctl down", down)
    finally:
        if "container" in state and not road.outcomes["down"].done:  # never leave the container running
            subprocess.run([*MLCTL, "down"], cwd=service, check=False, capture_output=True)
    say("the road")
    print(road.summary(), flush=True)
    if args.report:
        args.report.write_text(json.dumps([asdict(o) for o in road.outcomes.values()], indent=2) + "\n")
    if not road.ok:
        missing = [o.step for o in road.outcomes.values() if not o.done]
        print(f"\nerror: the demo did not run the whole road: not done: {', '.join(missing)}", file=sys.stderr)
        return 1
    where = service.relative_to(ROOT) if service.is_relative_to(ROOT) else service
    say(f"done: the service is in {where}; next, `mlctl deploy --env staging` on a cluster (see README)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
