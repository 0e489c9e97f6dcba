"""A CUDA service's image holds a CUDA torch, or the build fails saying why (real engine, real indexes).

The issue this answers: a ``cuda`` service built on a local root came out labelled ``mlctl.cuda=13.0``
while its torch was ``2.13.0+cpu``, because ``torch==2.13.0`` matches every flavour's local version
(PEP 440) and pip took the CPU wheel its find-links offered when the cu130 index was out of reach.

No PyTorch index is reachable here and no CUDA wheel lies on this disk, so the CUDA build a
resolution must find is a wheel made by the test (``wheel_index.fake_torch``): named and described as
``torch 2.13.0+cu130``, reporting ``torch.version.cuda == "13.0"``, served from a PEP 503 index on
127.0.0.1. The rules checked: resolution takes the ``+cu130`` wheel from the flavour's index only
(refusing an index or a wheelhouse with only ``+cpu``), the built torch layer is run and must say
what its labels say, and the labels come from what was found.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from building import build_args, mlctl, scaffold
from conftest import RUN, RUN_LABEL, run_name
from wheel_index import fake_torch, serve_index, silent_server

from mlctl.errors import ExitCode

pytestmark = [pytest.mark.docker, pytest.mark.slow]
NAME = run_name("svc-cuda")
WHEEL = "torch-2.13.0+cu130-cp311-cp311-manylinux_2_28_x86_64.whl"


@pytest.fixture(scope="module")
def cuda_service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cuda service (accelerator cuda, 1 GPU, torch 2.13.0: CUDA 13.0) with its weights, committed."""
    return scaffold(tmp_path_factory.mktemp("cuda"), NAME, accelerator="cuda")


@pytest.fixture
def cpu_find_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip's find-links offering torch 2.13.0+cpu, as on the machine of the issue."""
    links = tmp_path / "find-links"
    fake_torch(links, "2.13.0+cpu", mark=RUN)
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def service_images(name: str) -> set[str]:
    """The IDs of the service's images on the engine (a test in this module may have built one before)."""
    done = subprocess.run(
        ["docker", "images", "-q", "--no-trunc", "--filter", f"label=mlctl.service={name}"],
        capture_output=True,
        text=True,
    )
    return set(done.stdout.split())


def built_layer(stderr: str, layer: str) -> str:
    """The image a build said it was building for ``layer``."""
    line = next(x for x in stderr.splitlines() if x.startswith(f"• {layer} layer: building "))
    return line.split()[4]


def test_a_cuda_service_whose_index_has_only_a_cpu_wheel_is_refused(
    cuda_service: Path, root_image: str, tmp_path: Path, cpu_find_links: Path
) -> None:
    """Done means: a cuda-labelled build whose resolution can only find a cpu wheel is refused.
    The index has torch 2.13.0+cpu only; pip's find-links has it too. Nothing is built."""
    served = tmp_path / "served"
    fake_torch(served, "2.13.0+cpu", mark=RUN)
    before = service_images(NAME)
    record = cuda_service / ".mlctl" / "builds.json"
    recorded = record.read_text() if record.exists() else None  # the labelled build may have run first
    with serve_index(served) as url:
        result = mlctl(cuda_service, "build", "--root", root_image, "--torch-index", url, "--label", RUN_LABEL)
    assert result.exit_code == ExitCode.BUILD, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: the wheel index {url} has no CUDA 13.0 build of torch 2.13.0 (torch==2.13.0+cu130) for "
        "Python 3.11 on linux/amd64; it has: 2.13.0+cpu (cp311, manylinux_2_28_x86_64)"
    ]
    assert service_images(NAME) == before  # nothing was built
    assert (record.read_text() if record.exists() else None) == recorded  # nor recorded for deploy


def test_a_cuda_service_with_a_cpu_wheelhouse_is_refused(cuda_service: Path, root_image: str, wheelhouse: Path) -> None:
    before = service_images(NAME)
    result = mlctl(cuda_service, *build_args(root_image, wheelhouse))
    assert result.exit_code == ExitCode.BUILD, result.stderr
    assert (
        f"error: --wheelhouse {wheelhouse} has no CUDA 13.0 build of torch 2.13.0 (torch==2.13.0+cu130) for "
        "Python 3.11 on linux/amd64; it has: 2.13.0+cpu (cp311, manylinux_2_28_x86_64)"
    ) in result.stderr
    assert service_images(NAME) == before  # nothing was built


def test_an_index_that_does_not_answer_fails_the_build_within_seconds(cuda_service: Path, root_image: str) -> None:
    before = service_images(NAME)
    with silent_server() as url:
        started = time.monotonic()
        result = mlctl(cuda_service, "build", "--root", root_image, "--torch-index", url, "--label", RUN_LABEL)
        took = time.monotonic() - started
    host = url.split("/")[2]
    assert result.exit_code == ExitCode.CLUSTER, result.stderr
    assert f"error: the wheel index at {host} does not answer: timed out (2 tries of 5 s)" in result.stderr
    assert took < 20, took  # not pip's minute of retries
    assert service_images(NAME) == before  # nothing was built


def test_a_torch_layer_that_is_not_what_its_wheel_said_fails_and_is_not_kept(
    cuda_service: Path, root_image: str, wheelhouse: Path, tmp_path: Path
) -> None:
    """The wheel's name and metadata say 2.13.0+cu130; its torch says 2.13.0+cpu without CUDA. Running
    the built layer finds out; the build fails naming both, and the layer's tag is removed."""
    house = tmp_path / "house"
    shutil.copytree(wheelhouse, house, ignore=shutil.ignore_patterns("torch-*", ".*"))
    fake_torch(house, "2.13.0+cu130", reports="2.13.0+cpu", cuda=None, mark=f"mislabelled {RUN}")
    before = service_images(NAME)
    result = mlctl(cuda_service, *build_args(root_image, house))
    assert result.exit_code == ExitCode.BUILD, result.stderr
    torch_layer = built_layer(result.stderr, "torch")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: the torch layer {torch_layer} is not what its labels say: expected torch 2.13.0+cu130 (CUDA 13.0), "
        f"resolved from {WHEEL} (wheelhouse), but it holds torch 2.13.0+cpu (CUDA none: a CPU build)"
    ]
    assert subprocess.run(["docker", "image", "inspect", torch_layer], capture_output=True).returncode != 0
    assert service_images(NAME) == before  # nothing was built


def test_a_cuda_image_is_labelled_with_the_torch_found_in_it(
    cuda_service: Path, root_image: str, tmp_path: Path, cpu_find_links: Path
) -> None:
    """The road as a user walks it, with a mirror of the cu130 index (--torch-index): the torch layer
    and the service image carry what resolution found, and the built layer said the same when run."""
    served = tmp_path / "served"
    fake_torch(served, "2.13.0+cu130", cuda="13.0", mark=f"cu130 {RUN}")
    with serve_index(served) as url:
        result = mlctl(
            cuda_service, "build", "--root", root_image, "--torch-index", url, "--label", RUN_LABEL, "--json"
        )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    torch_layer = next(layer["image"] for layer in data["layers"] if layer["layer"] == "torch")
    try:
        assert '"torch layer: torch 2.13.0+cu130 (CUDA 13.0), as resolved from ' + WHEEL + '"' in result.stderr
        found = {
            "mlctl.torch": "2.13.0",
            "mlctl.torch-version": "2.13.0+cu130",
            "mlctl.flavor": "13.0",
            "mlctl.cuda": "13.0",
            "mlctl.min-driver": "580.65.06",
        }
        [layer] = json.loads(subprocess.run(["docker", "image", "inspect", torch_layer], capture_output=True).stdout)
        labels = layer["Config"]["Labels"]
        assert {key: labels[key] for key in found} == found
        assert (labels["mlctl.torch-wheel"], labels["mlctl.wheel-index"]) == (WHEEL, url)
        assert {key: data["labels"][key] for key in found} == found  # the service image, as recorded
        record = json.loads((cuda_service / ".mlctl" / "builds.json").read_text())
        [build] = [b for b in record["builds"] if b["image"]["repository"] == NAME]
        assert build["labels"]["mlctl.min-driver"] == "580.65.06"  # what deploy's GPU gate reads
        code = "import torch; print(torch.__version__, torch.version.cuda)"
        ran = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "--label", RUN_LABEL, torch_layer, "python", "-c", code],
            capture_output=True,
            text=True,
        )
        assert ran.stdout.split() == ["2.13.0+cu130", "13.0"]
    finally:
        # This run's own torch layer (its wheel carries the run's mark); the service image goes with the run.
        subprocess.run(["docker", "rmi", "-f", torch_layer], capture_output=True)
