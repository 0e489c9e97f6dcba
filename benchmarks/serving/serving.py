"""The pytorch-predict template against its peers, side by side on this machine, one server at a time.

    .venv/bin/python benchmarks/serving/serving.py [--duration 20] [--concurrency 16] [--quick]

Servers (the same model, the same weights file, the same request body, the same load generator):
  mlctl          a service scaffolded with `mlctl new` (pytorch-predict), served by mlctl-serve as in its image
  fastapi-async  a plain FastAPI app, async handler, model called inline
  fastapi-sync   the same with a sync handler (FastAPI's thread pool)
  litserve       LitServe with batching (max_batch_size 16, batch_timeout 5 ms)
  bentoml        BentoML with adaptive batching (max_batch_size 16)
Models: tiny (MLP 64 -> 256 -> 256 -> 10) and wide (MLP 1024 -> 4096 -> 4096 -> 1024, ~100 MB fp32).
Load: `mlctl bench` (one connection per virtual user, keep-alive), one row per request.
Cold start: process start -> readiness endpoint 200, median of several starts, tiny model.

The peers go into a throwaway virtual environment under .cache/bench/peers (made once). Goals (issue 3):
  tiny: mlctl >= 1.0x fastapi-async and >= 3x litserve and bentoml, p99 no worse than fastapi-async
  wide: mlctl >= 3x fastapi-async with a lower p99, and ahead of litserve and bentoml
  cold start: mlctl <= fastapi-async + 0.5 s
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PEERS = ROOT / ".cache" / "bench" / "peers"
PEER_PACKAGES = ["fastapi", "uvicorn[standard]", "litserve", "bentoml"]
sys.path.insert(0, str(HERE))

from bench_model import SIZES, Classifier, make_weights  # noqa: E402


@dataclass
class Server:
    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    ready_path: str
    infer_path: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_peers() -> Path:
    python = PEERS / "bin" / "python"
    if not (PEERS / ".ready").exists():
        print(f"setting up the peers in {PEERS.relative_to(ROOT)} (once; a few minutes)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)  # the same CPU build as mlctl's side
        subprocess.run([*pip, *PEER_PACKAGES], check=True)
        (PEERS / ".ready").write_text("")
    return python


def scaffold_mlctl(work: Path, size: str) -> Path:
    """A real scaffolded service, its model resized to the benchmark's (the same layers and names)."""
    service = work / f"svc-{size}"
    mlctl = Path(sys.executable).parent / "mlctl"
    subprocess.run(
        [str(mlctl), "new", "bench", "--dir", str(service), "--set", "accelerator=cpu", "--yes", "--no-git"],
        check=True,
        capture_output=True,
    )
    features, hidden, classes = SIZES[size]
    model = service / "bench" / "model.py"
    text = model.read_text()
    for name, value in (("FEATURES", features), ("HIDDEN", hidden), ("CLASSES", classes)):
        text = re.sub(rf"^{name} = \d+$", f"{name} = {value}", text, flags=re.M)
    model.write_text(text)
    return service


def servers(work: Path, size: str, weights: Path, peers: Path, port: int) -> list[Server]:
    peer_env = {"BENCH_SIZE": size, "BENCH_WEIGHTS": str(weights), "BENCH_PORT": str(port), "PYTHONPATH": str(HERE)}
    uvicorn = [str(peers), "-m", "uvicorn", "--port", str(port), "--no-access-log", "--log-level", "warning"]
    service = scaffold_mlctl(work, size)
    return [
        Server(
            "mlctl",
            [sys.executable, "-m", "mlctl_serve", "bench.server:app"],
            service,
            {"SERVING_MODEL_PATH": str(weights), "SERVING_PORT": str(port), "SERVING_LOG_LEVEL": "warning"},
            "/v2/health/ready",
            "/v2/models/bench/infer",
        ),
        Server(
            "fastapi-async",
            [*uvicorn, "fastapi_async:app"],
            HERE,
            peer_env,
            "/v2/health/ready",
            "/v2/models/bench/infer",
        ),
        Server(
            "fastapi-sync", [*uvicorn, "fastapi_sync:app"], HERE, peer_env, "/v2/health/ready", "/v2/models/bench/infer"
        ),
        Server("litserve", [str(peers), "litserve_app.py"], HERE, peer_env, "/health", "/v2/models/bench/infer"),
        Server(
            "bentoml",
            [str(peers), "-m", "bentoml", "serve", "bentoml_service:Classifier", "--port", str(port)],
            HERE,
            {**peer_env, "BENTOML_DO_NOT_TRACK": "True"},
            "/readyz",
            "/v2/models/bench/infer",
        ),
    ]


def start(server: Server, port: int, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Start a server and wait for its readiness endpoint; returns the process and the seconds it took."""
    env = {**os.environ, **server.env}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    process = subprocess.Popen(
        server.argv, cwd=server.cwd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = started + 300
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{server.name} exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{server.ready_path}", timeout=1) as reply:
                if reply.status == 200:
                    return process, time.perf_counter() - started
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.02)
    stop(process)
    raise SystemExit(f"{server.name} was not ready within 300 s; see {log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def answer(port: int, server: Server, body: bytes) -> list[float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{server.infer_path}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        data = json.loads(reply.read())
    outputs = data["outputs"] if isinstance(data, dict) else data
    return [float(v) for v in outputs[0]["data"]]


def bench(port: int, server: Server, body_file: Path, concurrency: int, duration: float) -> dict:
    mlctl = Path(sys.executable).parent / "mlctl"
    argv = [
        str(mlctl),
        "bench",
        f"http://127.0.0.1:{port}{server.infer_path}",
        "--body",
        str(body_file),
        "-c",
        str(concurrency),
        "-d",
        str(duration),
        "--json",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per server and model")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--sizes", default="tiny,wide")
    parser.add_argument("--servers", default="mlctl,fastapi-async,fastapi-sync,litserve,bentoml")
    parser.add_argument("--quick", action="store_true", help="5 s per run, 1 cold start: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.cold_runs = 5.0, 1
    wanted = args.servers.split(",")
    peers = ensure_peers()
    work = Path(tempfile.mkdtemp(prefix="mlctl-bench-serving-"))
    log = work / "servers.log"
    import torch

    results: dict[tuple[str, str], dict] = {}
    cold: dict[str, float] = {}
    try:
        for size in args.sizes.split(","):
            weights = make_weights(size, work / f"{size}.pt")
            features = SIZES[size][0]
            row = [round(((i * 37) % 101) / 101 - 0.5, 4) for i in range(features)]
            body = json.dumps(
                {"inputs": [{"name": "features", "shape": [1, features], "datatype": "FP32", "data": [row]}]}
            ).encode()
            body_file = work / f"{size}.json"
            body_file.write_bytes(body)
            model = Classifier(*SIZES[size])
            model.load_state_dict(torch.load(weights, weights_only=True))
            with torch.inference_mode():
                expected = model.eval()(torch.tensor([row])).reshape(-1).tolist()
            port = free_port()
            for server in servers(work, size, weights, peers, port):
                if server.name not in wanted:
                    continue
                print(f"[{size}] {server.name}: starting", flush=True)
                process, ready_s = start(server, port, log)
                try:
                    got = answer(port, server, body)
                    worst = max(abs(a - b) for a, b in zip(got, expected, strict=True))
                    if worst > 1e-4:
                        raise SystemExit(f"{server.name} answers differently from the model (max diff {worst})")
                    bench(port, server, body_file, args.concurrency, 2.0)  # warm the server up
                    result = bench(port, server, body_file, args.concurrency, args.duration)
                    results[(size, server.name)] = result
                    print(
                        f"[{size}] {server.name}: {result['throughput_rps']:.0f} req/s, "
                        f"p99 {result['latency']['p99_ms']:.1f} ms, statuses {result['statuses']}",
                        flush=True,
                    )
                finally:
                    stop(process)
                if size == "tiny":
                    starts = [ready_s]
                    for _ in range(args.cold_runs - 1):
                        process, seconds = start(server, port, log)
                        stop(process)
                        starts.append(seconds)
                    cold[server.name] = statistics.median(starts)
        report(results, cold, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[tuple[str, str], dict], cold: dict[str, float], args: argparse.Namespace) -> None:
    print(f"\nconcurrency {args.concurrency}, {args.duration:g} s per run, one row per request, CPU\n")
    print(f"{'model':<6} {'server':<14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}  {'vs mlctl':>8}")
    for (size, name), r in results.items():
        mlctl = results.get((size, "mlctl"))
        ratio = f"{mlctl['throughput_rps'] / r['throughput_rps']:.2f}x" if mlctl and name != "mlctl" else ""
        errors = sum(v for k, v in r["statuses"].items() if k != "200")
        print(
            f"{size:<6} {name:<14} {r['throughput_rps']:>8.0f} {r['latency']['p50_ms']:>8.2f} "
            f"{r['latency']['p99_ms']:>8.2f} {errors:>7}  {ratio:>8}"
        )
    if cold:
        print(f"\n{'cold start (process start -> ready)':<40} seconds")
        for name, seconds in cold.items():
            print(f"  {name:<38} {seconds:6.2f}")

    def ratio(size: str, peer: str) -> float | None:
        a, b = results.get((size, "mlctl")), results.get((size, peer))
        return a["throughput_rps"] / b["throughput_rps"] if a and b else None

    def p99(size: str, name: str) -> float | None:
        r = results.get((size, name))
        return r["latency"]["p99_ms"] if r else None

    print("\ngoals")
    checks = [
        ("tiny: mlctl / fastapi-async >= 1.0x", ratio("tiny", "fastapi-async"), 1.0),
        ("tiny: mlctl / litserve >= 3x", ratio("tiny", "litserve"), 3.0),
        ("tiny: mlctl / bentoml >= 3x", ratio("tiny", "bentoml"), 3.0),
        ("wide: mlctl / fastapi-async >= 3x", ratio("wide", "fastapi-async"), 3.0),
        ("wide: mlctl / litserve > 1x", ratio("wide", "litserve"), 1.0),
        ("wide: mlctl / bentoml > 1x", ratio("wide", "bentoml"), 1.0),
    ]
    for label, value, goal in checks:
        if value is not None:
            print(f"  {label:<40} {value:6.2f}x  {'met' if value >= goal else 'MISSED'}")
    for size in ("tiny", "wide"):
        mine, theirs = p99(size, "mlctl"), p99(size, "fastapi-async")
        if mine is not None and theirs is not None:
            verdict = "met" if mine <= theirs else "MISSED"
            print(f"  {size}: mlctl p99 <= fastapi-async p99{'':<11} {mine:6.2f} vs {theirs:.2f} ms  {verdict}")
    if "mlctl" in cold and "fastapi-async" in cold:
        gap = cold["mlctl"] - cold["fastapi-async"]
        print(f"  cold start: mlctl - fastapi-async <= 0.5 s{'':<4} {gap:+6.2f} s  {'met' if gap <= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
