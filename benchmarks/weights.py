"""`mlctl build` with weights pinned by URI (model.source uri): what a rebuild downloads, builds and pushes.

    .venv/bin/python benchmarks/weights.py [--runs 3] [--size-mb 64]

Needs the Docker engine and docker-registry (scripts/start-services). Works in a temporary service
built from the test root image (scripts/make-test-root) and a host-resolved wheelhouse; its weights
are served over HTTP on loopback (every request counted) and pinned by sha256, and it pushes to a
registry started on loopback. The weights file is the template's weights padded to --size-mb, so what
a push would re-send is visible (the build never loads them). Goals (issue 9):
  no-change rebuild: no download, no new layer, <= 2 s wall
  code-only change: the weights layer is reused and not re-pushed
                    (bytes pushed <= code layer + 1 MiB, measured against the local registry)
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import MLCTL, build, clean_up, du, image_layers, root_and_wheelhouse, run, start_registry


class Counting(http.server.SimpleHTTPRequestHandler):
    """Serves the weights and counts the GETs (a download each)."""

    gets = 0

    def do_GET(self) -> None:
        type(self).gets += 1
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each timed build")
    parser.add_argument("--size-mb", type=int, default=64, help="size of the weights file")
    args = parser.parse_args()

    house = root_and_wheelhouse()
    work = Path(tempfile.mkdtemp(prefix="mlctl-bench-weights-"))
    # Its own cache: the first build downloads, the later ones must not.
    cache_env = {"MLCTL_CACHE_DIR": str(work / "cache")}
    registry, address = None, None
    server = None
    try:
        run([MLCTL, "new", "bench-weights", "--set", "accelerator=cpu", "--yes"], work)
        service = work / "bench-weights"
        published = work / "published"
        published.mkdir()
        run([sys.executable, "-m", "bench_weights.weights", str(published / "model.pt")], service)
        with (published / "model.pt").open("ab") as f:
            f.write(b"\0" * max(0, args.size_mb * 1024 * 1024 - (published / "model.pt").stat().st_size))
        digest = hashlib.sha256((published / "model.pt").read_bytes()).hexdigest()
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Counting, directory=str(published))
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{server.server_address[1]}/model.pt"
        config = service / "mlctl.yaml"
        text = config.read_text()
        text = "\n".join(
            "  source: uri" if line.startswith("  source:") else line
            for line in text.splitlines()
            if not line.startswith("  prepare:")
        )
        pinned = f"  uri: {uri}\n  sha256: {digest}\n  path: weights/model.pt"
        config.write_text(text.replace("  path: weights/model.pt", pinned) + "\n")
        run(["git", "commit", "-q", "-am", "weights pinned by URI"], service)

        registry, address = start_registry(work)
        push_env = {**cache_env, "MLCTL_CONFIG__IMAGE__REGISTRY": f"{address}/bench"}

        first_s, first = build(service, house, env=cache_env)
        first_gets = Counting.gets
        build(service, house, "--push", env=push_env)  # everything in the registry once

        warm, rebuilt, warm_gets = [], [], []
        for _ in range(args.runs):
            before = Counting.gets
            seconds, data = build(service, house, env=cache_env)
            warm.append(seconds)
            warm_gets.append(Counting.gets - before)
            rebuilt.append(sum(1 for layer in data["layers"] if layer["status"] == "built"))

        pushed_bytes, landed, code_layers, weights_pushed = [], [], [], []
        code = service / "bench_weights" / "server.py"
        for i in range(args.runs):
            code.write_text(code.read_text() + f"\n# change {i}\n")
            run(["git", "commit", "-q", "-am", f"change {i}"], service)
            _, data = build(service, house, env=cache_env)
            reference = f"{data['image']['repository']}:{data['image']['tag']}"
            layers = image_layers(reference)
            code_layers.append(layers[1])  # [0] is the final LABEL (0 B); [1] the code COPY
            before = du(work / "registry")
            _, pushed = build(service, house, "--push", env=push_env)
            landed.append(du(work / "registry") - before)
            own = next(p for p in pushed["pushes"] if "/bench-weights:" in p["image"])
            pushed_bytes.append(own["bytes_pushed"])
            weights_pushed.append(own["bytes_pushed"] >= args.size_mb * 1024 * 1024 // 2)

        warm_m = statistics.median(warm)
        print(f"\n{'measure':<52} {'median':>10}   runs")
        print(f"{'first build (downloads the weights)':<52} {first_s:>8.2f} s   1   {first_gets} download(s)")
        print(f"{'no-change rebuild':<52} {warm_m:>8.2f} s   {len(warm)}   {sum(warm_gets)} download(s)")
        print(f"{'weights file':<52} {args.size_mb * 1024 * 1024:>8.0f} B")
        print(f"{'code layer':<52} {statistics.median(code_layers):>8.0f} B")
        print(f"{'bytes pushed after a code change (engine)':<52} {statistics.median(pushed_bytes):>8.0f} B")
        print(f"{'bytes landed in the registry (blobs + manifests)':<52} {statistics.median(landed):>8.0f} B")
        print("\ngoals")
        met = sum(warm_gets) == 0 and max(rebuilt) == 0 and warm_m <= 2
        print(
            f"  no-change rebuild: {sum(warm_gets)} downloads, {max(rebuilt)} layers rebuilt, {warm_m:.2f} s  "
            f"{'met' if met else 'MISSED'} (0 downloads, 0 layers, <= 2 s)"
        )
        limit = statistics.median(code_layers) + 1024 * 1024
        worst = max(max(pushed_bytes), max(landed))
        print(
            f"  pushed after a code change: {worst} B <= code layer + 1 MiB ({limit:.0f} B), weights re-pushed "
            f"{any(weights_pushed)}  {'met' if worst <= limit and not any(weights_pushed) else 'MISSED'}"
        )
        print(f"  (first build for reference: {first['weights']})")
    finally:
        if server is not None:
            server.shutdown()
        clean_up(registry, address, "bench-weights", work)


if __name__ == "__main__":
    main()
