"""torch is resolved of the service's flavour only, against real wheel indexes served on 127.0.0.1.

The rule checked throughout: PEP 440 lets ``torch==2.13.0`` match every local version
(``2.13.0+cpu``, ``2.13.0+cu130``), so resolution asks for the exact local version of the flavour,
from the flavour's index alone; an index without it is an error naming the index, the requirement
and what the index has, never a quiet fallback to another index or to pip's find-links.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from wheel_index import fake_torch, make_wheel, serve_index, silent_server

from mlctl.errors import BuildError, ClusterError
from mlctl.images import index, wheels
from mlctl.images.matrix import Resolved, resolve
from mlctl.reporting import RecordingReporter

AMD64 = wheels.PLATFORMS["linux/amd64"]
CUDA = resolve("3.11", "2.13.0", "cuda", None)  # torch 2.13.0's newest CUDA build: 13.0
CPU = resolve("3.11", "2.13.0", "cpu", None)


def test_the_requirement_is_the_exact_local_version_of_the_flavour() -> None:
    assert (CUDA.flavor, CUDA.local, CUDA.torch_requirement) == ("13.0", "cu130", "torch==2.13.0+cu130")
    assert (CPU.local, CPU.torch_requirement) == ("cpu", "torch==2.13.0+cpu")
    assert resolve("3.12", "2.14.1", "cuda", "12.6").torch_requirement == "torch==2.14.1+cu126"


@pytest.mark.parametrize(
    ("filename", "parts"),
    [
        (
            "torch-2.13.0+cu130-cp311-cp311-manylinux_2_28_x86_64.whl",
            ("torch", "2.13.0+cu130", "2.13.0", "cu130", ("manylinux_2_28_x86_64",)),
        ),
        (
            "torch-2.5.1+cpu-cp311-cp311-linux_x86_64.whl",
            ("torch", "2.5.1+cpu", "2.5.1", "cpu", ("linux_x86_64",)),
        ),
        (
            "markupsafe-3.0.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
            ("markupsafe", "3.0.4", "3.0.4", "", ("manylinux2014_x86_64", "manylinux_2_17_x86_64")),
        ),
    ],
)
def test_wheel_names(filename: str, parts: tuple) -> None:
    wheel = index.parse_wheel(filename)
    assert wheel is not None
    assert (wheel.name, wheel.version, wheel.public, wheel.local, wheel.platform) == parts
    assert index.parse_wheel("torch-2.13.0.tar.gz") is None


def test_a_cuda_resolution_takes_the_cuda_wheel_and_says_what_it_found(tmp_path: Path) -> None:
    fake_torch(tmp_path, "2.13.0+cpu")
    fake_torch(tmp_path, "2.13.0+cu126", cuda="12.6")
    fake_torch(tmp_path, "2.13.0+cu130", cuda="13.0")
    fake_torch(tmp_path, "2.13.0+cu130", cuda="13.0", tag="cp312-cp312-manylinux_2_28_x86_64")
    with serve_index(tmp_path) as url:
        found = index.torch_on_index(url, CUDA, AMD64, "linux/amd64")
    assert found == index.TorchWheel(
        "torch-2.13.0+cu130-cp311-cp311-manylinux_2_28_x86_64.whl", "2.13.0+cu130", "13.0", url
    )
    assert found.cuda == "13.0"


def test_an_index_with_only_a_cpu_wheel_is_refused_for_a_cuda_service(tmp_path: Path) -> None:
    fake_torch(tmp_path, "2.13.0+cpu")
    fake_torch(tmp_path, "2.13.0+cu130", cuda="13.0", tag="cp312-cp312-manylinux_2_28_x86_64")  # another Python
    with serve_index(tmp_path) as url, pytest.raises(BuildError) as refused:
        index.torch_on_index(url, CUDA, AMD64, "linux/amd64")
    assert refused.value.message == (
        f"the wheel index {url} has no CUDA 13.0 build of torch 2.13.0 (torch==2.13.0+cu130) for Python 3.11 "
        "on linux/amd64; it has: 2.13.0+cpu (cp311, manylinux_2_28_x86_64); "
        "2.13.0+cu130 (cp312, manylinux_2_28_x86_64)"
    )
    assert refused.value.hint is not None
    assert refused.value.hint.startswith("a wheel of another flavour is never taken in its place")


def test_an_index_without_the_release_says_what_it_has(tmp_path: Path) -> None:
    fake_torch(tmp_path, "2.12.1+cu130", cuda="13.0")
    with serve_index(tmp_path) as url, pytest.raises(BuildError) as refused:
        index.torch_on_index(url, CUDA, AMD64, "linux/amd64")
    assert refused.value.message.endswith("it has: no torch 2.13.0 at all (newest: 2.12.1)")


def test_an_index_without_torch(tmp_path: Path) -> None:
    make_wheel(tmp_path, "filelock", "3.20.0", {"filelock.py": ""}, tag="py3-none-any")
    with serve_index(tmp_path) as url, pytest.raises(BuildError) as refused:
        index.torch_on_index(url, CUDA, AMD64, "linux/amd64")
    assert refused.value.message == f"the wheel index {url} has no torch (HTTP 404 for {url}/torch/)"


def test_a_json_index_pep_691(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PEP 691: an index that speaks JSON answers the JSON media type mlctl asks for first."""
    fake_torch(tmp_path, "2.13.0+cpu")
    seen: list[str] = []
    original = index.page_files

    def spy(body: bytes, content_type: str) -> list[str]:
        seen.append(content_type)
        return original(body, content_type)

    monkeypatch.setattr(index, "page_files", spy)
    with serve_index(tmp_path) as url:
        assert index.torch_on_index(url, CPU, AMD64, "linux/amd64").version == "2.13.0+cpu"
    assert seen == ["application/vnd.pypi.simple.v1+json"]


def test_an_index_that_does_not_answer_fails_within_seconds_naming_its_host() -> None:
    with silent_server() as url:
        started = time.monotonic()
        with pytest.raises(ClusterError) as failed:
            index.torch_on_index(url, CUDA, AMD64, "linux/amd64", timeout=1.0, attempts=2)
        took = time.monotonic() - started
    host = url.split("/")[2]
    assert failed.value.message == f"the wheel index at {host} does not answer: timed out (2 tries of 1 s)"
    assert 2.0 <= took < 6.0, took  # two tries of 1 s and a second between them, nothing more


def test_an_index_that_refuses_connections(tmp_path: Path) -> None:
    with silent_server() as url:
        pass  # closed: nothing listens there any more
    with pytest.raises(ClusterError) as failed:
        index.torch_on_index(url, CUDA, AMD64, "linux/amd64", timeout=1.0, attempts=1)
    assert failed.value.message.startswith(f"the wheel index at {url.split('/')[2]} does not answer: ")
    assert "refused" in failed.value.message.lower()


def test_an_index_login_travels_in_its_url_and_never_into_labels_or_errors(tmp_path: Path) -> None:
    fake_torch(tmp_path, "2.13.0+cpu")
    with serve_index(tmp_path, credentials=("ci", "s3cret")) as url:
        with_login = url.replace("http://", "http://ci:s3cret@")
        found = index.torch_on_index(with_login, CPU, AMD64, "linux/amd64")
        assert found.source == url  # what the image's mlctl.wheel-index label will say
        with pytest.raises(ClusterError) as refused:
            index.torch_on_index(url.replace("http://", "http://ci:wrong@"), CPU, AMD64, "linux/amd64")
    assert refused.value.message == f"the wheel index at {url.split('/')[2]} refuses mlctl: HTTP 401 Unauthorized"
    assert "s3cret" not in refused.value.message
    assert "wrong" not in refused.value.message


def test_a_wheelhouse_without_the_flavour_is_refused(tmp_path: Path) -> None:
    fake_torch(tmp_path, "2.13.0+cpu")
    with pytest.raises(BuildError) as refused:
        index.torch_in_wheelhouse(tmp_path, CUDA, AMD64, "linux/amd64")
    assert refused.value.message.startswith(
        f"--wheelhouse {tmp_path} has no CUDA 13.0 build of torch 2.13.0 (torch==2.13.0+cu130)"
    )
    assert refused.value.message.endswith("it has: 2.13.0+cpu (cp311, manylinux_2_28_x86_64)")
    found = index.torch_in_wheelhouse(tmp_path, CPU, AMD64, "linux/amd64")
    assert (found.version, found.flavor, found.cuda, found.source) == ("2.13.0+cpu", "cpu", None, "wheelhouse")


@pytest.mark.parametrize("resolved", [CPU, CUDA], ids=["cpu", "cuda"])
def test_a_wheelhouse_with_pypis_unlabelled_torch_is_refused_saying_what_that_wheel_is(
    tmp_path: Path, resolved: Resolved
) -> None:
    """PyPI's torch (what a plain `pip download torch==2.13.0` gets) has no local label: its name says
    no flavour (on Linux it is a CUDA build of PyPI's choosing), so it is taken for none, and the
    hint says why and how to get the flavour's wheel."""
    fake_torch(tmp_path, "2.13.0", cuda="13.0")
    with pytest.raises(BuildError) as refused:
        index.torch_in_wheelhouse(tmp_path, resolved, AMD64, "linux/amd64")
    assert refused.value.message.endswith("it has: 2.13.0 (cp311, manylinux_2_28_x86_64)")
    assert refused.value.hint == (
        "a wheel of another flavour is never taken in its place (torch 2.13.0 without a local label is PyPI's "
        "build, a CUDA one on Linux, whose flavour its name does not say): use an index or a wheelhouse with "
        f"{resolved.torch_requirement} (pip download '{resolved.torch_requirement}' --index-url "
        f"{resolved.index_url}), or change runtime.torch / runtime.accelerator / runtime.cuda"
    )


# --- the download itself: pip, told to use the flavour's index and nothing else -------------------------


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip configured as on many machines: find-links and an extra index, both offering a +cpu torch
    (and this machine's own pip configuration stays in force: only these two are replaced)."""
    links = tmp_path / "links"
    fake_torch(links, "2.13.0+cpu", mark="from find-links")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def test_the_download_takes_the_flavour_from_its_index_only(
    tmp_path: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served"
    fake_torch(served, "2.13.0+cu130", cuda="13.0")
    with serve_index(elsewhere) as other, serve_index(served) as url:
        monkeypatch.setenv("PIP_EXTRA_INDEX_URL", other)
        reporter = RecordingReporter()
        found, directory = wheels.download_torch(
            CUDA, index_url=url, platform="linux/amd64", cache=tmp_path / "cache", reporter=reporter
        )
    assert found.filename == "torch-2.13.0+cu130-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert sorted(p.name for p in directory.glob("*.whl")) == [found.filename]
    steps = [message for kind, message in reporter.events if kind == "step"]
    assert steps[0] == f"looking for torch==2.13.0+cu130 (Python 3.11, linux/amd64) on the wheel index {url}"


def test_the_download_never_falls_back_to_find_links_or_another_index(
    tmp_path: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served"
    fake_torch(served, "2.13.0+cpu")  # the flavour's index has only the CPU build
    with serve_index(elsewhere) as other, serve_index(served) as url:
        monkeypatch.setenv("PIP_EXTRA_INDEX_URL", other)
        with pytest.raises(BuildError) as refused:
            wheels.download_torch(
                CUDA, index_url=url, platform="linux/amd64", cache=tmp_path / "cache", reporter=RecordingReporter()
            )
    assert refused.value.message.startswith(f"the wheel index {url} has no CUDA 13.0 build of torch 2.13.0")
    assert not list((tmp_path / "cache").glob("*/*.whl"))  # nothing was downloaded


def test_what_torch_needs_comes_from_the_same_index_only(tmp_path: Path, elsewhere: Path) -> None:
    """torch's own requirements come from the flavour's index too (as PyTorch's install command has it):
    a newer one in pip's find-links is not taken, and one the index lacks fails the resolution."""
    served = tmp_path / "served"
    fake_torch(served, "2.13.0+cu130", cuda="13.0", requires=("helper-dep",))
    make_wheel(elsewhere, "helper_dep", "2.0", {"helper_dep.py": ""}, tag="py3-none-any")
    with serve_index(served) as url, pytest.raises(BuildError) as failed:
        wheels.download_torch(
            CUDA, index_url=url, platform="linux/amd64", cache=tmp_path / "cache", reporter=RecordingReporter()
        )
    assert failed.value.message.startswith(f"pip could not resolve torch==2.13.0+cu130 for Python 3.11 from {url}")
    assert "helper-dep" in failed.value.message
    make_wheel(served, "helper_dep", "1.0", {"helper_dep.py": ""}, tag="py3-none-any")
    with serve_index(served) as url:
        _, directory = wheels.download_torch(
            CUDA, index_url=url, platform="linux/amd64", cache=tmp_path / "cache", reporter=RecordingReporter()
        )
    assert sorted(p.name for p in directory.glob("*.whl")) == [
        "helper_dep-1.0-py3-none-any.whl",
        "torch-2.13.0+cu130-cp311-cp311-manylinux_2_28_x86_64.whl",
    ]


def test_a_long_download_shows_its_progress(tmp_path: Path) -> None:
    """pip's own progress (its "raw" bar, pip >= 24.1) is relayed in tenths: a line a CI log can take."""
    served = tmp_path / "served"
    wheel = fake_torch(served, "2.13.0+cpu", mark=os.urandom(1_500_000).hex())  # 3 MB that do not compress
    reporter = RecordingReporter()
    with serve_index(served) as url:
        wheels.download_torch(CPU, index_url=url, platform="linux/amd64", cache=tmp_path / "cache", reporter=reporter)
    statuses = [message for kind, message in reporter.events if kind == "status"]
    size = wheel.stat().st_size / 1e6
    assert statuses[-1] == f"downloading {wheel.name}: 100% of {size:.0f} MB"
    assert len(statuses) <= 11
    assert ("log", "Collecting torch==2.13.0+cpu") in reporter.events


def test_a_download_made_once_is_used_offline(tmp_path: Path) -> None:
    served = tmp_path / "served"
    fake_torch(served, "2.13.0+cpu")
    with serve_index(served) as url:
        first, directory = wheels.download_torch(
            CPU, index_url=url, platform="linux/amd64", cache=tmp_path / "cache", reporter=RecordingReporter()
        )
    # The index is gone; the cached set is complete, so it is used without asking.
    again, same = wheels.download_torch(
        CPU, index_url=url, platform="linux/amd64", cache=tmp_path / "cache", reporter=RecordingReporter()
    )
    assert (again, same) == (first, directory)


@pytest.mark.parametrize("url", ["ftp://mirror.example/whl/cu130", "download.pytorch.org/whl/cu130"])
def test_a_torch_index_that_is_not_an_http_url_is_refused_before_any_work(
    cli, service: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.chdir(service)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")  # no engine is asked: the flag fails first
    for command in (("build",), ("images", "plan")):
        result = cli(*command, "--torch-index", url)
        assert (result.exit_code, result.stderr.splitlines()[0]) == (
            4,
            f"error: --torch-index {url}: expected an http(s) URL of a wheel index "
            "(e.g. https://download.pytorch.org/whl/cu130)",
        ), command
