"""Goodput under overload: 200s per second at 16, 64 and 256 concurrent clients, side by side.

    .venv/bin/python benchmarks/serving/overload.py [--duration 10] [--rounds 3] [--quick]

Servers (the same tiny MLP, the same weights file, the same request body, one server at a time):
  mlctl          a service scaffolded with `mlctl new`, served by mlctl-serve (default max_queue 256)
  mlctl-q32      the same with SERVING_MAX_QUEUE=32: 256 clients are 8x its queue, a storm of 503s
  fastapi-async  a plain FastAPI app, async handler, model called inline (no queue, no shedding)
  litserve       LitServe with batching (max_batch_size 16, batch_timeout 5 ms)

Each server is pinned to one core (taskset), the load generator to the others, as issue 12 measured.
Clients are closed-loop: each sends its next request as soon as it has an answer (a 503 included;
they ignore Retry-After, the worst case). Rounds are interleaved (every server, then again) and the
medians reported, so machine noise hits every server alike; compare ratios, not absolute figures.

Goals (issue 12), with the default max_queue:
  goodput at 256 clients >= 0.8x goodput at 16
  p99 of the 200s at 256 clients <= max_queue x batch time (bounded by the queue, not the clients)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import urllib.request
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serving import SIZES, Server, ensure_peers, free_port, make_weights, servers, start, stop  # noqa: E402

from mlctl.bench.loadgen import Target, run, run_load  # noqa: E402

DEFAULT_QUEUE = 256


@dataclass
class Run:
    goodput: float  # 200s per second
    p99_ok_ms: float  # p99 latency of the 200s
    statuses: dict[int, int]
    batch_ms: float | None  # mean model time per batch (mlctl only, from its metrics)
    cycle_ms: float | None  # one batch every this many ms: the model plus reading and answering its requests


def inference_totals(port: int) -> tuple[float, float] | None:
    """The server's model seconds and batches so far (mlctl-serve's metrics), or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    found = dict(re.findall(r"^mlserve_inference_duration_seconds_(sum|count) (\S+)$", text, re.M))
    if "sum" not in found:
        return None
    return float(found["sum"]), float(found["count"])


def measure(port: int, server: Server, body: bytes, clients: int, duration: float) -> Run:
    target = Target("127.0.0.1", port, False, server.infer_path, body)
    before = inference_totals(port)
    samples = run(run_load(target, concurrency=clients, duration_s=duration, max_requests=10**9, timeout_s=60))
    after = inference_totals(port)
    elapsed = samples.finished - samples.started
    ok = sorted(t for t, s in zip(samples.latencies, samples.statuses, strict=True) if s == 200)
    p99 = ok[max(0, int(len(ok) * 0.99) - 1)] * 1000 if ok else float("nan")
    batch_ms = cycle_ms = None
    if before and after and after[1] > before[1]:
        batches = after[1] - before[1]
        batch_ms = (after[0] - before[0]) / batches * 1000
        cycle_ms = elapsed / batches * 1000
    return Run(len(ok) / elapsed, p99, dict(Counter(samples.statuses)), batch_ms, cycle_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per server and client count")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--clients", default="16,64,256")
    parser.add_argument("--servers", default="mlctl,mlctl-q32,fastapi-async,litserve")
    parser.add_argument("--core", type=int, default=0, help="the core every server is pinned to")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 3.0, 1
    clients = [int(c) for c in args.clients.split(",")]
    wanted = args.servers.split(",")
    cores = os.sched_getaffinity(0)
    pin: list[str] = []
    if len(cores) > 1 and args.core in cores and shutil.which("taskset"):
        pin = ["taskset", "-c", str(args.core)]
        os.sched_setaffinity(0, cores - {args.core})  # the load generator keeps off the servers' core
    else:
        print("warning: not pinning (one core, or no taskset): servers and load share the CPUs", flush=True)

    peers = ensure_peers()
    work = Path(tempfile.mkdtemp(prefix="mlctl-bench-overload-"))
    log = work / "servers.log"
    results: dict[tuple[str, int], list[Run]] = {}
    try:
        weights = make_weights("tiny", work / "tiny.pt")
        features = SIZES["tiny"][0]
        row = [round(((i * 37) % 101) / 101 - 0.5, 4) for i in range(features)]
        body = json.dumps(
            {"inputs": [{"name": "features", "shape": [1, features], "datatype": "FP32", "data": [row]}]}
        ).encode()
        port = free_port()
        known = {s.name: s for s in servers(work, "tiny", weights, peers, port)}
        known["mlctl-q32"] = replace(
            known["mlctl"], name="mlctl-q32", env={**known["mlctl"].env, "SERVING_MAX_QUEUE": "32"}
        )
        lineup = [replace(known[name], argv=[*pin, *known[name].argv]) for name in wanted]
        for round_ in range(1, args.rounds + 1):
            for server in lineup:
                process, _ = start(server, port, log)
                try:
                    measure(port, server, body, 16, 2.0)  # warm-up
                    for count in clients:
                        result = measure(port, server, body, count, args.duration)
                        results.setdefault((server.name, count), []).append(result)
                        print(
                            f"round {round_} {server.name:<14} {count:>4} clients: {result.goodput:7.0f} 200s/s, "
                            f"p99 {result.p99_ok_ms:7.1f} ms, statuses {result.statuses}",
                            flush=True,
                        )
                finally:
                    stop(process)
        report(results, clients, wanted, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(
    results: dict[tuple[str, int], list[Run]], clients: list[int], names: list[str], args: argparse.Namespace
) -> None:
    def median(name: str, count: int, field: str) -> float | None:
        values = [getattr(r, field) for r in results.get((name, count), []) if getattr(r, field) is not None]
        return statistics.median(values) if values else None

    first, last = clients[0], clients[-1]
    print(f"\ngoodput (200s/s), tiny MLP, one core per server, {args.rounds} round(s) x {args.duration:g} s, medians\n")
    header = "".join(f"{f'{c} clients':>12}" for c in clients)
    print(f"{'server':<15}{header}{f'{last}/{first}':>10}{f'p99@{last} ms':>14}{'503s/s@' + str(last):>12}")
    for name in names:
        goodputs = [median(name, c, "goodput") for c in clients]
        if any(g is None for g in goodputs):
            continue
        refusals = [r.statuses.get(503, 0) / args.duration for r in results[(name, last)]]
        print(
            f"{name:<15}"
            + "".join(f"{g:>12.0f}" for g in goodputs)  # type: ignore[misc]
            + f"{goodputs[-1] / goodputs[0]:>9.2f}x"  # type: ignore[operator]
            + f"{median(name, last, 'p99_ok_ms'):>14.1f}"
            + f"{statistics.median(refusals):>12.0f}"
        )
    print("\nside by side at each client count (mlctl / peer goodput)")
    for peer in names:
        if peer.startswith("mlctl") or (peer, first) not in results or ("mlctl", first) not in results:
            continue
        ratios = [median("mlctl", c, "goodput") / median(peer, c, "goodput") for c in clients]  # type: ignore[operator]
        print(f"  mlctl / {peer:<14}" + "".join(f"{r:>8.2f}x" for r in ratios))

    print("\np99 of the 200s (ms): bounded by the queue, not the clients, once the clients pass it\n")
    print(f"{'server':<15}" + "".join(f"{f'{c} clients':>12}" for c in clients))
    for name in names:
        p99s = [median(name, c, "p99_ok_ms") for c in clients]
        if all(p is not None for p in p99s):
            print(f"{name:<15}" + "".join(f"{p:>12.1f}" for p in p99s))  # type: ignore[str-format]

    print("\ngoals (default max_queue)")
    if ("mlctl", first) in results and ("mlctl", last) in results:
        ratio = median("mlctl", last, "goodput") / median("mlctl", first, "goodput")  # type: ignore[operator]
        print(f"  goodput at {last} >= 0.8x goodput at {first}: {ratio:.2f}x  {'met' if ratio >= 0.8 else 'MISSED'}")
        batch, cycle = median("mlctl", last, "batch_ms"), median("mlctl", last, "cycle_ms")
        p99 = median("mlctl", last, "p99_ok_ms")
        if batch is not None and cycle is not None and p99 is not None:
            # Batch time as a client sees it: one batch every cycle_ms, of which the model takes batch_ms
            # and the rest goes to reading and answering the batch's requests on the same core.
            bound = DEFAULT_QUEUE * cycle
            verdict = "met" if p99 <= bound else "MISSED"
            print(
                f"  p99 of the 200s at {last} <= max_queue x batch time ({DEFAULT_QUEUE} x {cycle:.2f} ms, a batch "
                f"every {cycle:.2f} ms of which the model {batch:.2f} ms = {bound:.0f} ms): {p99:.1f} ms  {verdict}"
            )
            print(f"  (against the model's time alone, {DEFAULT_QUEUE} x {batch:.2f} = {DEFAULT_QUEUE * batch:.0f} ms)")


if __name__ == "__main__":
    main()
