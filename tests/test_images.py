"""The image machinery without an engine: the matrix, every row's rendered layers, wheels, contexts, tags."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mlctl.adapters.git import source_state
from mlctl.errors import ExitCode, InputError
from mlctl.images import wheels
from mlctl.images.context import collect
from mlctl.images.ladder import render_row
from mlctl.images.matrix import load_matrix, resolve, rows
from mlctl.images.tags import source_tag
from mlctl.resources import cache_dir

GIT_ENV = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@e"}


# --- the matrix -----------------------------------------------------------------------------------------


def test_the_matrix_covers_what_the_issue_asks() -> None:
    matrix = load_matrix()
    assert {"12.4", "12.6", "12.8", "13.0", "13.2"} <= set(matrix.cuda)
    assert {"3.10", "3.11", "3.12", "3.13", "3.14"} <= set(matrix.python)
    assert min(matrix.releases(), key=lambda v: tuple(map(int, v.split(".")))).startswith("2.5")
    assert matrix.releases()[-1] == "2.15.0"
    assert matrix.torch["2.15"].cuda == ["13.0", "13.2"]  # 2.15 dropped CUDA 12.6 (pytorch/pytorch#190385)
    # Driver floors: CUDA 12.x needs >= 525, 13.x >= 580.
    for version, entry in matrix.cuda.items():
        floor = int(entry.min_driver.split(".")[0])
        assert floor >= (580 if version.startswith("13.") else 525), version


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (
            ("3.9", "2.13.0", "cuda", None),
            "runtime.python 3.9 is not supported; choose one of 3.10, 3.11, 3.12, 3.13, 3.14",
            "nearest: 3.10",
        ),
        (("3.11", "2.4.1", "cuda", None), "runtime.torch 2.4.1 is not in the compatibility matrix", "nearest: 2.5.0"),
        (("3.11", "2.13.5", "cpu", None), "runtime.torch 2.13.5 is not in the compatibility matrix", "nearest: 2.13.0"),
        (
            ("3.11", "2.13.0", "cuda", "12.8"),
            "torch 2.13.0 has no CUDA 12.8 build; it ships CUDA 12.6, 13.0",
            "use runtime.cuda 12.6, or torch 2.11.0 (the newest with CUDA 12.8)",
        ),
        (
            ("3.11", "2.13.0", "cuda", "11.8"),
            "runtime.cuda 11.8 is not supported; choose one of 12.4, 12.6, 12.8, 13.0, 13.2",
            "nearest: 12.4",
        ),
    ],
)
def test_unsupported_combinations_name_the_nearest_choices(args: tuple, message: str, hint: str) -> None:
    with pytest.raises(InputError) as caught:
        resolve(*args)
    assert caught.value.message == message
    assert caught.value.hint is not None
    assert caught.value.hint.startswith(hint), caught.value.hint


def test_cuda_defaults_to_the_newest_build_of_the_torch_release() -> None:
    assert resolve("3.11", "2.13.0", "cuda", None).flavor == "13.0"
    assert resolve("3.11", "2.14.1", "cuda", None).flavor == "13.2"
    cpu = resolve("3.12", "2.13.0", "cpu", None)
    assert (cpu.flavor, cpu.root, cpu.min_driver) == ("cpu", "python:3.12-slim-bookworm", None)


@pytest.mark.parametrize("row", rows(), ids=lambda r: f"torch{r.torch}-py{r.python}-{r.flavor}")
def test_every_matrix_row_renders_its_ladder(row) -> None:  # type: ignore[no-untyped-def]
    """The CUDA roots cannot be pulled here: render each row and check FROM, index and labels."""
    rendered = render_row(row)
    python, torch = rendered["python"], rendered["torch"]
    assert python["dockerfile"].splitlines()[2:4] == ["ARG BASE", "FROM ${BASE}"]
    assert python["buildargs"] == {"BASE": row.root, "PYTHON_VERSION": row.python}
    assert torch["buildargs"]["BASE"].startswith("mlctl/python:")
    # The exact local version of the flavour: torch==2.13.0 alone would match every flavour (PEP 440).
    local = "cpu" if row.flavor == "cpu" else "cu" + row.flavor.replace(".", "")
    assert torch["buildargs"]["TORCH_REQUIREMENT"] == f"torch=={row.torch}+{local}"
    labels = torch["labels"]
    assert labels["mlctl.torch"] == row.torch
    assert labels["mlctl.torch-version"] == f"{row.torch}+{local}"
    assert labels["mlctl.python"] == row.python
    if row.flavor == "cpu":
        assert row.root == f"python:{row.python}-slim-bookworm"
        assert labels["mlctl.wheel-index"] == "https://download.pytorch.org/whl/cpu"
        assert "mlctl.cuda" not in labels
    else:
        assert row.root.startswith(f"nvidia/cuda:{row.flavor}.")
        assert "-runtime-ubuntu" in row.root
        assert labels["mlctl.wheel-index"] == f"https://download.pytorch.org/whl/cu{row.flavor.replace('.', '')}"
        assert labels["mlctl.cuda"] == row.flavor
        assert labels["mlctl.min-driver"] == load_matrix().cuda[row.flavor].min_driver
    assert f'mlctl.torch="{row.torch}"' in torch["dockerfile"]
    assert '--find-links "http://127.0.0.1:47981/"' in torch["dockerfile"]


def test_images_matrix_command(cli) -> None:
    result = cli("images", "matrix")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].split() == ["TORCH", "RELEASES", "BUILDS", "PYTHON"]
    assert "2.13   2.13.0          cpu, 12.6, 13.0        3.10, 3.11, 3.12, 3.13, 3.14" in result.stdout
    assert "2.15   2.15.0          cpu, 13.0, 13.2        3.11, 3.12, 3.13, 3.14" in result.stdout
    assert "13.0  nvidia/cuda:13.0.2-runtime-ubuntu22.04  >= 580.65.06" in result.stdout
    data = json.loads(cli("images", "matrix", "--json").stdout)
    assert data["torch"]["2.13"]["cuda"] == ["12.6", "13.0"]


def _recorded() -> dict:
    """What scripts/torch-wheels-on-pypi recorded from PyPI's JSON API (see base_images/matrix.yaml)."""
    return json.loads((Path(__file__).parent / "data" / "torch-wheels-pypi.json").read_text())


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def test_the_matrix_lists_every_torch_release_pypi_has() -> None:
    """Matrix current: each release since the matrix's oldest that PyPI lists is in the matrix."""
    listed = set(load_matrix().releases())
    missing = [v for v in _recorded()["releases"] if v not in listed]
    assert not missing, f"torch releases on PyPI missing from base_images/matrix.yaml: {missing}"


def test_each_release_lists_exactly_the_pythons_with_linux_wheels() -> None:
    """A Python is listed for a release when every patch of it has CPython wheels for both Linux
    platforms mlctl builds for (of the Pythons the matrix knows): no more (a build that cannot
    resolve), no fewer (a combination refused for nothing)."""
    matrix = load_matrix()
    releases = _recorded()["releases"]
    for minor, release in matrix.torch.items():
        with_wheels = set(matrix.python)
        for patch in release.patches:
            platforms = releases[patch]
            with_wheels &= set(platforms["linux/amd64"]) & set(platforms["linux/arm64"])
        assert sorted(release.python, key=_key) == sorted(with_wheels, key=_key), minor


def test_the_newest_release_lists_the_cuda_of_its_pypi_build() -> None:
    recorded = _recorded()["pypi_build"]
    minor = ".".join(recorded["version"].split(".")[:2])
    assert recorded["cuda"] in load_matrix().torch[minor].cuda


def test_every_flavour_has_an_index_named_for_its_local_label() -> None:
    """PyTorch names each flavour's index for the local label of its wheels (cpu, cu130...)."""
    from mlctl.images.matrix import flavor_of, local_label

    matrix = load_matrix()
    for flavor, url in matrix.indexes.items():
        assert url.rstrip("/").rsplit("/", 1)[-1] == local_label(flavor)
        assert flavor_of(local_label(flavor)) == flavor


# --- wheels ---------------------------------------------------------------------------------------------


def test_the_runtime_wheel_is_reproducible_and_installable(tmp_path: Path) -> None:
    first = wheels.runtime_wheel(tmp_path / "a")
    second = wheels.runtime_wheel(tmp_path / "b")
    assert first.name == second.name == "mlctl_serve-0.1.0-py3-none-any.whl"
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    assert "mlctl_serve/predict.py" in names
    assert "mlctl_serve-0.1.0.dist-info/RECORD" in names
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"), str(first)],
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [sys.executable, "-c", "import mlctl_serve; print(mlctl_serve.__file__)"],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
    )
    assert done.stdout.startswith(str(tmp_path / "site"))


def test_mlctl_runtime_wheel_writes_it_for_pip(cli, isolated: Path) -> None:
    # What a service's README and CI jobs run: `pip install "$(mlctl runtime wheel)"`, so stdout is the path alone.
    result = cli("runtime", "wheel")
    assert result.exit_code == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == cache_dir() / "runtime" / "mlctl_serve-0.1.0-py3-none-any.whl"
    data = json.loads(cli("runtime", "wheel", "--json", "--dir", str(isolated / "links")).stdout)
    assert data["path"] == str(isolated / "links" / path.name)  # where pip --find-links finds it
    assert (data["name"], data["version"]) == ("mlctl-serve", "0.1.0")
    assert Path(data["path"]).read_bytes() == path.read_bytes()
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    (isolated / "a-file").write_text("")
    refused = cli("runtime", "wheel", "--dir", str(isolated / "a-file"))
    assert refused.exit_code == ExitCode.INPUT
    assert refused.stderr.splitlines()[0] == f"error: --dir {isolated / 'a-file'}: not a directory"


def test_service_requirements_leave_torch_to_its_layer(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "1"\ndependencies = ["torch>=2.5", "mlctl-serve>=0.1,<0.2", "numpy"]\n'
    )
    assert wheels.service_requirements(tmp_path) == ["mlctl-serve>=0.1,<0.2", "numpy"]


def test_a_wheelhouse_must_hold_wheels(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"holds no \.whl files"):
        wheels.given_wheelhouse(tmp_path)
    with pytest.raises(InputError, match="no such directory"):
        wheels.given_wheelhouse(tmp_path / "nope")


# --- what goes into the image ----------------------------------------------------------------------------


def test_collect_honours_dockerignore_and_keeps_weights_apart(tmp_path: Path) -> None:
    tmp_path = tmp_path / "svc"
    tmp_path.mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "server.py").write_text("app = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.pt").write_bytes(b"\x00" * 10)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("")
    (tmp_path / ".dockerignore").write_text("tests/\n*.log\n")
    (tmp_path / "run.log").write_text("")
    files = collect(tmp_path, "weights/model.pt")
    assert [f.path for f in files.code] == ["pkg/server.py"]  # .dockerignore is metadata: never in the image
    assert [(f.path, len(f.content)) for f in files.weights] == [("model.pt", 10)]
    assert files.weights_dir == "/srv/weights"


def test_missing_weights_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"the weights weights/model\.pt do not exist"):
        collect(tmp_path, "weights/model.pt")


# --- tags from git ---------------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_tags_come_from_the_tree_and_the_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    service = repo / "services" / "svc"
    service.mkdir(parents=True)
    (service / "a.py").write_text("a = 1\n")
    (repo / "other.txt").write_text("elsewhere\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "https://user:token@example.com/acme/repo.git")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    state = source_state(service)
    assert state.commit == git(repo, "rev-parse", "HEAD")
    assert state.tree == git(repo, "rev-parse", "HEAD:services/svc")
    assert state.remote == "https://example.com/acme/repo.git"  # no credentials in labels
    assert source_tag(state) == f"{state.tree[:12]}-g{state.commit[:7]}"
    assert state.dirty is False

    (repo / "other.txt").write_text("changed elsewhere\n")
    assert source_state(service).dirty is False  # only the service's own files count

    (service / "a.py").write_text("a = 2\n")
    first = source_tag(source_state(service))
    (service / "a.py").write_text("a = 3\n")
    second = source_tag(source_state(service))
    assert first.startswith(f"{state.tree[:12]}-g{state.commit[:7]}-dirty-")
    assert first != second

    (service / "new.py").write_text("")
    assert source_state(service).dirty is True


def test_outside_git_the_tag_is_a_content_hash(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x")
    state = source_state(tmp_path)
    assert (state.commit, state.dirty) == (None, True)
    assert source_tag(state) == f"untracked-{state.content_hash[:12]}"


def test_build_flags_are_checked_before_any_work(cli, service: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(service)
    result = cli("build", "--rebuild", "everything")
    assert (result.exit_code, result.stderr.splitlines()[0]) == (
        4,
        "error: --rebuild everything: layers are python, torch, service",
    )
    result = cli("build", "--push")
    assert result.exit_code == 4
    assert result.stderr.splitlines()[0] == "error: --push needs image.registry in mlctl.yaml (e.g. ghcr.io/acme)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--label", "team"), "error: --label team: expected KEY=VALUE (e.g. --label ci.pipeline=1234)"),
        (
            ("--label", "Team=ml"),
            "error: --label Team: a label key is lower-case letters and digits separated by '.' or '-' "
            "(e.g. com.example.team)",
        ),
        (
            ("--label", "ok.key=1", "--label", "mlctl.digest=0"),
            "error: --label mlctl.digest: mlctl or Docker sets this label itself; pick a key of your own",
        ),
        (
            ("--label", "org.opencontainers.image.revision=abc"),
            "error: --label org.opencontainers.image.revision: mlctl or Docker sets this label itself; "
            "pick a key of your own",
        ),
    ],
)
def test_bad_labels_are_refused_before_any_work(
    cli, service: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str
) -> None:
    monkeypatch.chdir(service)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")  # no engine is asked: the flags fail first
    result = cli("build", *args)
    assert (result.exit_code, result.stderr.splitlines()[0]) == (4, message)


def test_labels_of_ones_own_are_kept_as_given() -> None:
    from mlctl.images.tags import check_labels, parse_labels

    labels = parse_labels(["ci.pipeline=1234", "org.opencontainers.image.url=https://x.example/a=b", "empty="])
    assert check_labels(labels) == {
        "ci.pipeline": "1234",
        "org.opencontainers.image.url": "https://x.example/a=b",  # only the first '=' splits
        "empty": "",
    }


def test_the_build_lock_is_exclusive_between_processes_and_reentrant_within_one(tmp_path: Path) -> None:
    """Two mlctl processes building on one engine take turns (mlctl.images.locks); one process may
    hold the lock around several builds."""
    from mlctl.images import locks

    lock = tmp_path / "engine.lock"
    holder = (
        "import sys, time; from pathlib import Path; from mlctl.images import locks\n"
        "with locks.held(Path(sys.argv[1])):\n"
        "    print('held', flush=True); time.sleep(1.0); Path(sys.argv[2]).write_text('done')\n"
    )
    done = tmp_path / "done"
    other = subprocess.Popen([sys.executable, "-c", holder, str(lock), str(done)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "held"
        waited: list[str] = []
        with locks.held(lock, on_wait=lambda: waited.append("waiting")):
            assert done.exists()  # we got it only once the other process was done with it
            with locks.held(lock, on_wait=lambda: waited.append("again")):  # re-entrant: no self-deadlock
                pass
        assert waited == ["waiting"]
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("host", ["tcp://docker:2375", "ssh://builder@10.0.0.5", "tcp://192.168.1.20:2376"])
def test_a_remote_engine_is_refused_before_any_work(
    cli, service: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.chdir(service)
    monkeypatch.setenv("DOCKER_HOST", host)
    result = cli("build")
    assert result.exit_code == 7
    assert f"which the engine at {host} (another host, or docker-in-docker) cannot reach" in result.stderr
    assert "run mlctl build on the Docker host itself" in result.stderr
