"""The runtime on a GPU: batched vs unbatched throughput and the first request after warm-up.

    .venv/bin/python benchmarks/serving/gpu_check.py [--device cuda] [--duration 15]   (under 8 minutes)
    .venv/bin/python benchmarks/serving/gpu_check.py --quick --device cpu              (CI: it cannot rot)

Services (scaffolded with `mlctl new`, served by mlctl-serve exactly as in their images):
  predict   the pytorch-predict template with the benchmark's wide MLP (1024 -> 4096 -> 4096 -> 1024,
            ~100 MB fp32; --quick: the tiny one)
  generate  the pytorch-generate template (its character model, 64 tokens per request)
each with torch.compile off and on (SERVING_COMPILE; a compile that fails falls back to eager, and the
table says so).

Per service and compile setting:
  first ms      the first request after the server reports ready (warm-up included batch sizes 1 and 16)
  unbatched     requests/s with one client: every request runs alone
  batched       requests/s with 32 clients (predict: batches of up to 16; generate: 4 streams at once)
  speed-up      batched / unbatched
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serving import SIZES, free_port, stop  # noqa: E402

from mlctl.bench.loadgen import Target, run, run_load  # noqa: E402

MLCTL = Path(sys.executable).parent / "mlctl"
GENERATE_TOKENS = 64


@dataclass
class Service:
    kind: str  # predict or generate
    directory: Path
    app: str
    weights: Path
    path: str
    body: bytes


@dataclass
class Row:
    service: str
    compile: str
    startup_s: float
    first_ms: float
    unbatched: float
    batched: float


def scaffold(work: Path, kind: str, size: str) -> Service:
    name = f"check-{kind}"
    directory = work / name
    template = "pytorch-predict" if kind == "predict" else "pytorch-generate"
    answers = ["--set", "accelerator=cpu", "--yes", "--no-git", "--ci", "none"]
    subprocess.run(
        [str(MLCTL), "new", name, "--template", template, "--dir", str(directory), *answers],
        check=True,
        capture_output=True,
    )
    package = name.replace("-", "_")
    if kind == "predict":
        features, hidden, classes = SIZES[size]
        model = directory / package / "model.py"
        text = model.read_text()
        for key, value in (("FEATURES", features), ("HIDDEN", hidden), ("CLASSES", classes)):
            text = re.sub(rf"^{key} = \d+$", f"{key} = {value}", text, flags=re.M)
        model.write_text(text)
        row = [round(((i * 37) % 101) / 101 - 0.5, 4) for i in range(features)]
        body = {"inputs": [{"name": "features", "shape": [1, features], "datatype": "FP32", "data": [row]}]}
        path = f"/v2/models/{name}/infer"
    else:
        body = {"text_input": "The model ", "parameters": {"max_tokens": GENERATE_TOKENS, "seed": 1}}
        path = f"/v2/models/{name}/generate"
    weights = directory / "weights" / "model.pt"
    subprocess.run(
        [sys.executable, "-m", f"{package}.weights", str(weights)], cwd=directory, check=True, capture_output=True
    )
    return Service(kind, directory, f"{package}.server:app", weights, path, json.dumps(body).encode())


def serve(service: Service, device: str, compile_: bool, port: int, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    env = {
        **os.environ,
        "SERVING_PORT": str(port),
        "SERVING_DEVICE": device,
        "SERVING_MODEL_PATH": str(service.weights),
        "SERVING_COMPILE": "true" if compile_ else "false",
        "SERVING_WARMUP_BATCH_SIZES": "1,16",
        "SERVING_MAX_BATCH_SIZE": "16",
        "SERVING_LOG_LEVEL": "info",
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlctl_serve", service.app],
        cwd=service.directory,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = started + 600
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{service.kind} exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as reply:
                if reply.status == 200:
                    return process, time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    stop(process)
    raise SystemExit(f"{service.kind} was not ready within 600 s; see {log}")


def one_request(port: int, service: Service) -> float:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{service.path}", data=service.body, headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as reply:
        reply.read()
        if reply.status != 200:
            raise SystemExit(f"{service.kind}: the first request got {reply.status}")
    return (time.perf_counter() - started) * 1000


def throughput(port: int, service: Service, clients: int, duration: float) -> float:
    target = Target("127.0.0.1", port, False, service.path, service.body)
    samples = run(run_load(target, concurrency=clients, duration_s=duration, max_requests=10**9, timeout_s=120))
    bad = [s for s in samples.statuses if s != 200]
    if bad:
        raise SystemExit(f"{service.kind}: {len(bad)} of {len(samples.statuses)} requests failed ({set(bad)})")
    return len(samples.statuses) / (samples.finished - samples.started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a rehearsal)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per measurement")
    parser.add_argument("--quick", action="store_true", help="tiny MLP, 2 s per measurement: for CI")
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here: run with --device cpu for a rehearsal", file=sys.stderr)
            return 2
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    size, duration = ("tiny", 2.0) if args.quick else ("wide", args.duration)
    work = Path(tempfile.mkdtemp(prefix="mlctl-gpu-check-"))
    rows: list[Row] = []
    began = time.perf_counter()
    try:
        for kind in ("predict", "generate"):
            service = scaffold(work, kind, size)
            for compile_ in (False, True):
                port = free_port()
                log = work / f"{kind}-{compile_}.log"
                print(f"{kind}, compile {'on' if compile_ else 'off'}: starting", flush=True)
                process, startup = serve(service, args.device, compile_, port, log)
                try:
                    first = one_request(port, service)
                    unbatched = throughput(port, service, 1, duration)
                    batched = throughput(port, service, 32, duration)
                finally:
                    stop(process)
                mode = "off"
                if compile_:
                    mode = "fell back" if "torch.compile failed" in log.read_text() else "on"
                rows.append(Row(kind, mode, startup, first, unbatched, batched))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model = "wide MLP" if size == "wide" else "tiny MLP"
    print(f"\n{args.device}: predict = {model}, generate = {GENERATE_TOKENS} tokens per request\n")
    columns = f"{'ready s':>9}{'first ms':>10}{'unbatched/s':>13}{'batched/s':>11}{'speed-up':>10}"
    print(f"{'service':<10}{'compile':<11}{columns}")
    for r in rows:
        print(
            f"{r.service:<10}{r.compile:<11}{r.startup_s:>9.1f}{r.first_ms:>10.1f}{r.unbatched:>13.1f}"
            f"{r.batched:>11.1f}{r.batched / r.unbatched:>9.2f}x"
        )
    print(f"\ntook {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
