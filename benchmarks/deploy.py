"""Deploy-path costs: rendering the chart, and what `mlctl deploy` adds on top of Helm's own install.

    .venv/bin/python benchmarks/deploy.py [--runs 7]

1. Chart render in-process (goal <= 0.2 s, issue 5): the first render in a fresh process (it loads the
   Helm engine's shared library) and later renders, and `mlctl render` as a whole command.
2. mlctl's overhead over Helm, against the Kubernetes API emulator of the tests (tests/kube), timed
   interleaved in one run:
     helm   helm_python install of the same chart and values with wait="watcher" (Helm's kstatus wait
            until the Deployment is ready), then uninstall (untimed)
     mlctl  deploy_service(): values from mlctl.yaml, render, cluster and namespace checks, the GPU gate,
            Helm history, install, and mlctl's own rollout watch, then uninstall (untimed)
   Both wait for the same thing (every replica ready), so the difference is mlctl's own work.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example.com/acme/bench-svc:1f2e3d-g0123456@{DIGEST}"


def render_costs(runs: int) -> float:
    code = (
        "import time, json; t = time.perf_counter();"
        "from mlctl.chart.render import render_values;"
        f"v = {{'image': {{'repository': 'r/bench', 'digest': '{DIGEST}'}}, 'model': {{'name': 'bench'}}}};"
        "render_values(v, release='bench', namespace='ml'); first = time.perf_counter() - t;"
        "ts = []\n"
        "for _ in range(20):\n"
        "    t = time.perf_counter(); render_values(v, release='bench', namespace='ml')\n"
        "    ts.append(time.perf_counter() - t)\n"
        "print(json.dumps([first, sorted(ts)[10]]))"
    )
    firsts, warms = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        first, warm = (float(x) for x in out.strip().strip("[]").split(","))
        firsts.append(first)
        warms.append(warm)
    first, warm = statistics.median(firsts), statistics.median(warms)
    print(f"render, first in a process (loads the Helm engine)  {first:.3f} s")
    print(f"render, later calls                                {warm * 1000:.1f} ms")
    return first


def whole_command(service: Path, runs: int) -> float:
    mlctl = str(Path(sys.executable).parent / "mlctl")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([mlctl, "-C", str(service), "render", "--image", IMAGE], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"`mlctl render` (whole command)                     {median:.3f} s")
    return median


def scaffold(root: Path) -> Path:
    from mlctl.cli.app import run_cli

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = run_cli(["new", "bench-svc", "--dir", str(root / "bench-svc"), "--set", "accelerator=cpu", "--no-git"])
    if code != 0:
        raise SystemExit("mlctl new failed")
    return root / "bench-svc"


def overhead(service: Path, runs: int) -> tuple[float, float]:
    import helm_python
    from kube.emulator import FakeCluster

    from mlctl.chart.render import chart_dir
    from mlctl.config import load_service_config
    from mlctl.deploy.plan import plan_values, render
    from mlctl.deploy.release import deploy_service
    from mlctl.deploy.target import resolve_target
    from mlctl.models import ImageRef, ReleaseImage

    with FakeCluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        cluster.add_namespace("ml")
        cluster.add_node("node-0")
        kubeconfig = cluster.kubeconfig(Path(tmp) / "kubeconfig", namespace="ml")
        os.environ["KUBECONFIG"] = str(kubeconfig)
        config = helm_python.Config(kubeconfig_path=str(kubeconfig), namespace="ml")
        loaded = load_service_config(service)  # also warms the imports both sides use
        image = ReleaseImage(ImageRef.parse(IMAGE))
        where = resolve_target(loaded, namespace="ml")
        values = dict(render(where, plan_values(where, image)).values)
        mlctl_release = resolve_target(loaded, namespace="ml", release="bench-mlctl")
        chart = helm_python.Chart.load(str(chart_dir()))
        times: dict[str, list[float]] = {"helm": [], "mlctl": []}
        for i in range(runs + 1):  # the first round warms both up (discovery caches, imports)
            started = time.perf_counter()
            config.install(chart, "bench-helm", values, wait="watcher", timeout=120)
            helm_s = time.perf_counter() - started
            config.uninstall("bench-helm", wait="watcher", timeout=120)

            started = time.perf_counter()
            result = deploy_service(mlctl_release, image)
            mlctl_s = time.perf_counter() - started
            if result.ready != result.desired:
                raise SystemExit(f"mlctl deploy did not finish: {result}")
            config.uninstall("bench-mlctl", wait="watcher", timeout=120)
            if i:
                times["helm"].append(helm_s)
                times["mlctl"].append(mlctl_s)
        config.close()
    helm_s, mlctl_s = statistics.median(times["helm"]), statistics.median(times["mlctl"])
    print(f"helm install --wait (watcher), Helm alone           {helm_s:.3f} s  (min {min(times['helm']):.3f})")
    print(f"mlctl deploy (render, checks, install, watch)       {mlctl_s:.3f} s  (min {min(times['mlctl']):.3f})")
    return helm_s, mlctl_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        service = scaffold(Path(tmp))
        first = render_costs(args.runs)
        whole_command(service, args.runs)
        helm_s, mlctl_s = overhead(service, args.runs)
    print()
    print(f"chart render in-process = {first:.3f} s   (goal <= 0.2 s)")
    print(f"mlctl deploy / helm install = {mlctl_s / helm_s:.2f}x, overhead {mlctl_s - helm_s:+.3f} s")


if __name__ == "__main__":
    main()
