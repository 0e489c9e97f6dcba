"""`mlctl build`: warm rebuilds, code-only rebuilds and what a code change pushes, measured in one run.

    .venv/bin/python benchmarks/build.py [--runs 3] [--cold-ladder]

Needs the Docker engine and docker-registry (scripts/start-services). Works in a temporary service
built from the test root image (scripts/make-test-root) and a host-resolved wheelhouse, pushing to a
registry started on loopback. Goals (issue 4):
  warm rebuild, nothing changed: 0 layers rebuilt, <= 2 s wall
  code-only change: rebuild <= 0.1x the cold service-image build; bytes pushed <= code layer + 1 MiB
  and it reports the service's own layers over the torch layer, in bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MLCTL = str(Path(sys.executable).parent / "mlctl")
ROOT_IMAGE = "mlctl-test/debian:bookworm"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "b@b",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "b@b",
}


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env={**os.environ, **GIT_ENV, **(env or {})}, capture_output=True, text=True, check=True
    )


def build(service: Path, house: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, dict]:
    started = time.perf_counter()
    done = run([MLCTL, "build", "--root", ROOT_IMAGE, "--wheelhouse", str(house), "--json", *args], service, env)
    return time.perf_counter() - started, json.loads(done.stdout)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def image_layers(reference: str) -> list[int]:
    """Sizes of an image's layers, top first (docker history)."""
    out = subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{json .}}", reference],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sizes = []
    for line in out.splitlines():
        entry = json.loads(line)
        size = entry["Size"]
        sizes.append(_bytes(size))
    return sizes


def _bytes(text: str) -> int:
    units = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * units[unit])
    return int(text)


def root_and_wheelhouse() -> Path:
    """The test root image (made when missing) and the wheelhouse the test suite builds from (cached)."""
    subprocess.run([str(ROOT / "scripts" / "make-test-root"), ROOT_IMAGE], check=True)
    sys.path.insert(0, str(ROOT))
    from mlctl.images import wheels
    from mlctl.reporting import NullReporter

    return wheels.download(
        ["torch==2.13.0", "uvicorn[standard]>=0.30", "orjson>=3.10", "prometheus-client>=0.20"],
        python="3.11",
        platform="linux/amd64",
        cache=ROOT / ".cache" / "test-wheels",
        index_url=None,
        reporter=NullReporter(),
    )


def start_registry(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A docker-registry of the benchmark's own, storing under ``work/registry``; the process and its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (work / "registry.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/registry\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    registry = subprocess.Popen(
        ["docker-registry", "serve", str(work / "registry.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.5)
    urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5).close()
    return registry, f"127.0.0.1:{port}"


def clean_up(registry: subprocess.Popen[bytes] | None, address: str | None, service: str, work: Path) -> None:
    """Stop the benchmark's registry and remove what it made: the images of its service (by their label),
    the local tags pointing into its registry (pushes leave them; the images stay where another tag holds
    them) and its directory."""
    if registry is not None:
        registry.terminate()
    images = subprocess.run(
        ["docker", "images", "-q", "--filter", f"label=mlctl.service={service}"], capture_output=True, text=True
    ).stdout.split()
    for image in set(images):
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
    if address is not None:
        tags = subprocess.run(
            ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
        ).stdout.split()
        for tag in tags:
            if tag.startswith(f"{address}/"):
                subprocess.run(["docker", "rmi", tag], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each timed build")
    parser.add_argument("--cold-ladder", action="store_true", help="also time the python and torch layers cold")
    args = parser.parse_args()

    house = root_and_wheelhouse()
    work = Path(tempfile.mkdtemp(prefix="mlctl-bench-build-"))
    registry, address = None, None
    try:
        run([MLCTL, "new", "bench-build", "--set", "accelerator=cpu", "--yes"], work)
        service = work / "bench-build"
        run([sys.executable, "-m", "bench_build.weights", "weights/model.pt"], service)
        registry, address = start_registry(work)
        push_env = {"MLCTL_CONFIG__IMAGE__REGISTRY": f"{address}/bench"}

        if args.cold_ladder:
            seconds, data = build(service, house, "--no-cache")
            layer_times = {layer["layer"]: layer["seconds"] for layer in data["layers"]}
            print(
                f"cold ladder (--no-cache): {seconds:.1f} s wall; "
                + ", ".join(f"{k} {v:.1f} s" for k, v in layer_times.items()),
                flush=True,
            )
        else:
            build(service, house)  # make sure the ladder exists

        def service_seconds(result: dict) -> float:
            return next(layer["seconds"] for layer in result["layers"] if layer["layer"] == "service")

        cold, cold_layer = [], []
        for _ in range(args.runs):
            seconds, data = build(service, house, "--rebuild", "service")
            cold.append(seconds)
            cold_layer.append(service_seconds(data))
        build(service, house, "--push", env=push_env)  # everything in the registry once

        warm, rebuilt = [], []
        for _ in range(args.runs):
            seconds, data = build(service, house)
            warm.append(seconds)
            rebuilt.append(sum(1 for layer in data["layers"] if layer["status"] == "built"))

        code, code_layer, pushed_bytes, landed, code_layers = [], [], [], [], []
        server = service / "bench_build" / "server.py"
        for i in range(args.runs):
            server.write_text(server.read_text() + f"\n# change {i}\n")
            run(["git", "commit", "-q", "-am", f"change {i}"], service)
            seconds, data = build(service, house)
            code.append(seconds)
            code_layer.append(service_seconds(data))
            reference = f"{data['image']['repository']}:{data['image']['tag']}"
            code_layers.append(image_layers(reference)[1])  # [0] is the final LABEL (0 B); [1] the code COPY
            before = du(work / "registry")
            _, pushed = build(service, house, "--push", env=push_env)
            landed.append(du(work / "registry") - before)
            own = [p for p in pushed["pushes"] if "/bench-build:" in p["image"]]
            pushed_bytes.append(own[0]["bytes_pushed"])

        torch_ref = next(layer["image"] for layer in data["layers"] if layer["layer"] == "torch")
        python_ref = next(layer["image"] for layer in data["layers"] if layer["layer"] == "python")
        service_ref = f"{data['image']['repository']}:{data['image']['tag']}"
        sizes = {
            ref: int(
                subprocess.run(
                    ["docker", "image", "inspect", "--format", "{{.Size}}", ref],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            for ref in (python_ref, torch_ref, service_ref)
        }
        torch_layer = sizes[torch_ref] - sizes[python_ref]
        service_own = sizes[service_ref] - sizes[torch_ref]

        cold_m, warm_m, code_m = statistics.median(cold), statistics.median(warm), statistics.median(code)
        print(f"\n{'measure':<48} {'median':>10}   runs")
        cold_l, code_l = statistics.median(cold_layer), statistics.median(code_layer)
        label = "cold service-image build (--rebuild service)"
        print(f"{label:<48} {cold_m:>8.2f} s   {len(cold)}   image build {cold_l:.2f} s")
        print(f"{'warm rebuild, nothing changed':<48} {warm_m:>8.2f} s   {len(warm)}")
        print(f"{'rebuild after a code-only change':<48} {code_m:>8.2f} s   {len(code)}   image build {code_l:.2f} s")
        print(f"{'code layer':<48} {statistics.median(code_layers):>8.0f} B")
        print(f"{'bytes pushed after a code change (engine)':<48} {statistics.median(pushed_bytes):>8.0f} B")
        print(f"{'bytes landed in the registry (blobs + manifests)':<48} {statistics.median(landed):>8.0f} B")
        print(f"{'torch layer':<48} {torch_layer / 1e6:>8.1f} MB")
        print(f"{'service layers (deps, weights, code)':<48} {service_own / 1e6:>8.1f} MB")
        print("\ngoals")
        print(
            f"  warm rebuild: {max(rebuilt)} layers rebuilt, {warm_m:.2f} s  "
            f"{'met' if max(rebuilt) == 0 and warm_m <= 2 else 'MISSED'} (0 layers, <= 2 s)"
        )
        ratio = code_l / cold_l
        print(
            f"  code-only rebuild / cold service build (image build) = {ratio:.2f}x  "
            f"{'met' if ratio <= 0.1 else 'MISSED'} (<= 0.10x)"
        )
        print(
            f"  the same, whole `mlctl build` commands = {code_m / cold_m:.2f}x (start-up and planning included: "
            f"{warm_m:.2f} s even when nothing changes)"
        )
        limit = statistics.median(code_layers) + 1024 * 1024
        worst = max(max(pushed_bytes), max(landed))
        print(
            f"  pushed after a code change: {worst} B <= code layer + 1 MiB ({limit:.0f} B)  "
            f"{'met' if worst <= limit else 'MISSED'}"
        )
        print(f"  service layers / torch layer = {service_own / torch_layer:.3f}x")
    finally:
        clean_up(registry, address, "bench-build", work)


if __name__ == "__main__":
    main()
