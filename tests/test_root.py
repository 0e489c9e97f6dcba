"""Root images: ``mlctl images root`` makes one on any machine, and a build refuses a root it cannot use.

No registry is reachable here (Docker Hub included), which is the case ``mlctl images root`` is for.
Everything made here is named and labelled for this run, and removed with it (conftest).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from building import build_args, git, mlctl, scaffold
from conftest import REGISTRY_NAMESPACE, RUN, RUN_LABEL, RUN_LABEL_KEY, run_name
from wheel_index import fake_torch

from mlctl.errors import ExitCode

pytestmark = [pytest.mark.docker]
NAME = run_name("svc-root")
OURS = f"mlctl-test-{RUN}"


def docker(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=300)


def labels_of(ref: str) -> dict[str, str]:
    [image] = json.loads(docker("image", "inspect", ref).stdout)
    return dict(image["Config"]["Labels"] or {})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scaffold(tmp_path_factory.mktemp("root"), NAME)


@pytest.fixture(scope="module")
def no_shell() -> str:
    """An image with no files at all (an empty tarball imported): no /bin/sh."""
    ref = f"{OURS}/empty:1"
    assert docker("import", "--change", f"LABEL {RUN_LABEL}", "-", ref, stdin=b"\0" * 1024).returncode == 0
    return ref


@pytest.fixture(scope="module")
def no_python(root_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test root without apt-get: a shell, but no Python and nothing to install one with."""
    ref = f"{OURS}/no-apt:1"
    context = tmp_path_factory.mktemp("no-apt")
    (context / "Dockerfile").write_text(f"FROM {root_image}\nRUN rm /usr/bin/apt-get\nLABEL {RUN_LABEL}\n")
    assert docker("build", "-q", "-t", ref, str(context)).returncode == 0
    return ref


# --- mlctl images root ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.long(90)
def test_images_root_makes_a_debian_root_with_mmdebstrap(isolated: Path) -> None:
    """About a minute and a half: mmdebstrap from deb.debian.org, then `docker import`."""
    tag = f"{OURS}/root:bookworm"
    result = mlctl(isolated, "--json", "images", "root", "--tag", tag, "--label", RUN_LABEL)
    assert result.exit_code == 0, result.stdout + result.stderr
    made = json.loads(result.stdout)
    assert (made["image"], made["status"]) == (tag, "made")
    assert made["source"] == "debian bookworm from http://deb.debian.org/debian"
    assert made["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert made["pythons"] == []  # minbase: the python layer installs it with apt
    assert made["size"] < 100_000_000  # about 75 MB: no docs, no locales, no apt caches
    labels = labels_of(tag)
    assert labels["org.mlctl.layer"] == "root"
    assert labels[RUN_LABEL_KEY] == RUN
    assert labels["mlctl.root-tar"].startswith("sha256:")
    ran = docker("run", "--rm", "--label", RUN_LABEL, tag, "sh", "-c", "echo $LANG; command -v apt-get")
    assert ran.stdout.decode().split() == ["C.UTF-8", "/usr/bin/apt-get"]
    again = mlctl(isolated, "--json", "images", "root", "--tag", tag)
    assert again.exit_code == 0
    assert json.loads(again.stdout)["status"] == "present"


def test_images_root_from_a_local_image(isolated: Path, root_image: str) -> None:
    tag = f"{OURS}/root:local"
    result = mlctl(isolated, "images", "root", "--from", root_image, "--tag", tag, "--label", RUN_LABEL)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{tag}: made (from {root_image}), 74.5 MB",
        "  Debian GNU/Linux 12 (bookworm); Python: none (the python layer installs it with apt)",
        f"  next: mlctl build --root {tag}",
    ]
    labels = labels_of(tag)
    assert (labels["org.mlctl.layer"], labels["mlctl.root"], labels[RUN_LABEL_KEY]) == (
        "root",
        f"from {root_image}",
        RUN,
    )
    # The same file system as the image it came from: nothing was added.
    layers = [json.loads(docker("image", "inspect", ref).stdout)[0]["RootFS"]["Layers"] for ref in (root_image, tag)]
    assert layers[0] == layers[1]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nowhere", "error: --from {ref}: no such image on this machine"),
        ("no_shell", "error: --from {ref}: the image has no /bin/sh; the python layer needs one to install Python"),
        ("no_python", "error: --from {ref}: the image has no Python and no apt-get to install one"),
    ],
)
def test_images_root_from_an_unusable_image(
    isolated: Path, source: str, message: str, request: pytest.FixtureRequest
) -> None:
    ref = f"{OURS}/nowhere:1" if source == "nowhere" else request.getfixturevalue(source)
    result = mlctl(isolated, "images", "root", "--from", ref, "--tag", f"{OURS}/root:{source.replace('_', '-')}")
    assert result.exit_code == ExitCode.INPUT, result.stderr
    assert result.stderr.splitlines()[-2 if "hint:" in result.stderr else -1].startswith(message.format(ref=ref))
    assert docker("image", "inspect", f"{OURS}/root:{source.replace('_', '-')}").returncode != 0


def test_images_root_never_replaces_an_image_it_did_not_make(isolated: Path, no_shell: str) -> None:
    result = mlctl(isolated, "images", "root", "--tag", no_shell)
    assert result.exit_code == ExitCode.CONFLICT
    assert result.stderr.splitlines() == [
        f"error: {no_shell} is an image mlctl did not make",
        "hint: pick another --tag, or pass --force to replace that tag",
    ]


def test_images_root_without_mmdebstrap_says_what_to_install(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(isolated))  # docker-py talks to the socket: no binary is needed for it
    result = mlctl(isolated, "images", "root", "--tag", f"{OURS}/root:never")
    assert result.exit_code == ExitCode.ENVIRONMENT
    assert result.stderr.splitlines() == [
        "error: mmdebstrap is not installed: `mlctl images root` makes the Debian root with it",
        "hint: sudo apt-get install mmdebstrap eatmydata (Debian, Ubuntu); "
        "or `docker load` a root made elsewhere and use `mlctl images root --from IMAGE`",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--suite", "Bookworm!"), "error: --suite Bookworm!: a Debian release name, e.g. bookworm or trixie"),
        (
            ("--mirror", "deb.debian.org"),
            "error: --mirror deb.debian.org: expected an http(s) URL of a Debian mirror (e.g. http://deb.debian.org/debian)",
        ),
        (("--tag", "x:"), "error: --tag x:: an empty tag"),
        (
            ("--label", "mlctl.root=x"),
            "error: --label mlctl.root: mlctl or Docker sets this label itself; pick a key of your own",
        ),
    ],
)
def test_images_root_bad_input(isolated: Path, args: tuple[str, ...], message: str) -> None:
    result = mlctl(isolated, "images", "root", *args)
    assert (result.exit_code, result.stderr.splitlines()[0]) == (ExitCode.INPUT, message)


# --- a build's root ------------------------------------------------------------------------------------------


def test_a_root_that_cannot_be_pulled_is_a_registry_problem(service: Path, wheelhouse: Path) -> None:
    """README, exit codes: 9 is a registry that cannot be reached; the error says how to make a root here."""
    ref = "127.0.0.1:9/nowhere/root:1"
    result = mlctl(service, *build_args(ref, wheelhouse))
    assert result.exit_code == ExitCode.CLUSTER == 9
    lines = result.stderr.splitlines()
    assert lines[-2].startswith(
        f"error: the root image {ref} is not on this machine and its registry 127.0.0.1:9 cannot be reached: "
    )
    assert lines[-1].startswith("hint: make a root on this machine: `mlctl images root`")


def test_a_mistyped_root_where_its_registry_cannot_be_reached_names_the_root_it_meant(
    service: Path, wheelhouse: Path, root_image: str
) -> None:
    """A root that is not here, on a machine that cannot reach its registry, is most often a local
    root mistyped: still exit 9 (the registry could not say), and the hint names the one meant."""
    made = f"127.0.0.1:9/{OURS}/root:bookworm"
    result = mlctl(service, "images", "root", "--from", root_image, "--tag", made, "--label", RUN_LABEL)
    assert result.exit_code == 0, result.stderr
    typo = f"127.0.0.1:9/{OURS}/root:bookwrm"
    result = mlctl(service, *build_args(typo, wheelhouse))
    assert result.exit_code == ExitCode.CLUSTER, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-2].startswith(f"error: the root image {typo} is not on this machine and its registry 127.0.0.1:9")
    meant, _, rest = lines[-1].removeprefix("hint: did you mean ").partition("? ")
    assert made in meant.split(" or "), lines[-1]  # another test's root of a similar name may be there too
    assert rest.startswith("make a root on this machine: `mlctl images root`")


def test_a_root_the_registry_does_not_have_is_a_wrong_name(service: Path, wheelhouse: Path, registry: str) -> None:
    ref = f"{registry}/{REGISTRY_NAMESPACE}/no-such-root:1"
    result = mlctl(service, *build_args(ref, wheelhouse))
    assert result.exit_code == ExitCode.INPUT, result.stderr
    assert f"error: the root image {ref} does not exist: not on this machine, and {registry} has no such image" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("no_shell", "error: the root image {ref} has no /bin/sh: the python layer installs Python 3.11 with it"),
        ("no_python", "error: the root image {ref} has no Python 3.11 and no apt-get to install it (it has no Python)"),
    ],
)
def test_a_root_without_a_shell_or_python_is_refused_before_building(
    service: Path, wheelhouse: Path, root: str, message: str, request: pytest.FixtureRequest
) -> None:
    ref = request.getfixturevalue(root)
    result = mlctl(service, *build_args(ref, wheelhouse))
    assert result.exit_code == ExitCode.INPUT, result.stderr
    assert message.format(ref=ref) in result.stderr.splitlines()
    assert "python layer: building" in result.stderr  # it was about to build: the root was checked first
    assert "[python] Step 1/" not in result.stderr


def test_a_root_whose_packages_lack_the_python_is_refused(
    service: Path, root_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian 12 packages Python 3.11 only: a 3.12 service on it fails in the python layer, saying so."""
    house = tmp_path / "house"
    fake_torch(house, "2.13.0+cpu", tag="cp312-cp312-manylinux_2_28_x86_64", mark=RUN)
    copy = tmp_path / NAME
    subprocess.run(["cp", "-a", str(service), str(copy)], check=True)
    config = copy / "mlctl.yaml"
    config.write_text(config.read_text().replace('python: "3.11"', 'python: "3.12"'))
    git(copy, "commit", "-q", "-am", "Python 3.12")
    result = mlctl(copy, *build_args(root_image, house))
    assert result.exit_code == ExitCode.INPUT, result.stderr
    lines = result.stderr.splitlines()
    # The error and its hint, then the line naming the build's full log.
    assert lines[-3] == (
        f"error: the root image {root_image} has no Python 3.12, and its package sources "
        "(Debian GNU/Linux 12 (bookworm)) offer none"
    )
    assert lines[-2].startswith("hint: use a root that has Python 3.12 (python:3.12-slim-bookworm")
    assert lines[-1].startswith("full output: ")


def test_a_check_that_outlasts_its_timeout_is_a_build_error(root_image: str) -> None:
    # The engine's wait ends with the client's read timeout; the check fails as a build error naming the
    # command and the time, and its container is gone (before, the timeout reached the CLI as a bug).
    from mlctl.adapters.docker import DockerImageBuilder
    from mlctl.errors import BuildError

    builder = DockerImageBuilder.connect(timeout=60)
    try:
        with pytest.raises(BuildError) as caught:
            builder.probe(root_image, ["sleep", "37"], timeout=1)
    finally:
        builder.close()
    commands = subprocess.run(
        ["docker", "ps", "-a", "--no-trunc", "--format", "{{.Command}}"], capture_output=True, text=True, check=True
    ).stdout
    assert "sleep 37" not in commands  # its container was removed
    assert caught.value.message == f"sleep 37 in {root_image} did not finish within 1 s; the container was removed"
