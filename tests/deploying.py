"""What the deploy tests share: a Kubernetes emulator reached through a kubeconfig, the demo service with its
environments, images by digest, and ways to run mlctl against them (test_deploy, test_deploy_faults).

The fixtures are registered under their names (``kube``, ``svc``) wherever ``kube_fixture`` and
``svc_fixture`` are imported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Result
from kube.emulator import FakeCluster

from mlctl.images.record import record_build
from mlctl.models import BuildResult, ImageRef

NS = "ml"
DIGEST1 = "sha256:" + "1" * 64
DIGEST2 = "sha256:" + "2" * 64
REPO = "registry.example.com/acme/demo-svc"
IMAGE1 = f"{REPO}:aaaa-g1111111@{DIGEST1}"
IMAGE2 = f"{REPO}:bbbb-g2222222@{DIGEST2}"
# staging, gpu and two-gpus are variants of one release in namespace ml (shared_release says so).
ENVIRONMENTS = """
environments:
  staging:
    deploy:
      namespace: ml
      shared_release: true
  gpu:
    runtime:
      accelerator: cuda
    resources:
      gpu:
        count: 1
    deploy:
      namespace: ml
      shared_release: true
  two-gpus:
    runtime:
      accelerator: cuda
    resources:
      gpu:
        count: 2
    deploy:
      namespace: ml
      replicas: 2
      shared_release: true
  prod:
    deploy:
      namespace: ml-prod
      replicas: 2
"""


@pytest.fixture(name="kube")
def kube_fixture(isolated: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeCluster]:
    """The emulator with namespace ml and a CPU node, as the current kube context (namespace default)."""
    with FakeCluster(kube_version="1.31") as cluster:
        cluster.add_namespace(NS)
        cluster.add_node("cpu-0")
        path = cluster.kubeconfig(tmp_path / "kubeconfig", namespace="default", context="test")
        monkeypatch.setenv("KUBECONFIG", str(path))
        yield cluster


@pytest.fixture(name="svc")
def svc_fixture(service: Path) -> Path:
    """The demo service with staging (CPU) and GPU environments, all in namespace ml."""
    path = service / "mlctl.yaml"
    path.write_text(path.read_text().split("\nenvironments:", 1)[0] + "\n" + ENVIRONMENTS)
    return service


def mlctl(cli: Any, svc: Path, *args: str) -> Result:
    result: Result = cli("-C", str(svc), *args)
    return result


def deploy_json(cli: Any, svc: Path, *args: str) -> dict[str, Any]:
    result = mlctl(cli, svc, "--json", "deploy", *args)
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def deployment(kube: FakeCluster) -> dict[str, Any]:
    (found,) = [d for d in kube.objects("deployments", NS) if d["metadata"]["name"] == "demo-svc"]
    return found


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``check`` until it holds (True) or the time runs out (False)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


#: The labels `mlctl build` gives a CUDA 13.0 image (the matrix's driver floor for it).
CUDA_LABELS = {"mlctl.flavor": "13.0", "mlctl.cuda": "13.0", "mlctl.min-driver": "580.65.06"}


def record(svc: Path, image: str, *, dirty: bool = False, labels: dict[str, str] | None = None) -> None:
    """What `mlctl build` leaves in the service for deploys (mlctl.images.record), for a build of ``image``."""
    ref = ImageRef.parse(image)
    build = BuildResult("demo-svc", ref, (ref.tag,), dirty, (), (), labels or {}, "2026-01-02T03:04:05Z")
    record_build(svc, build)


def release_secrets(kube: FakeCluster) -> list[str]:
    return sorted(
        s["metadata"]["name"] for s in kube.objects("secrets", NS) if s["metadata"]["name"].startswith("sh.helm")
    )
