"""The suite's own cleanup removes what a test run made on the shared Docker engine, and nothing else.

(The other half, that a whole run leaves the engine's other images and containers in place, is
checked around every run by conftest's bystanders.)
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import RUN, RUN_LABEL_KEY, remove_leftovers

pytestmark = pytest.mark.docker

EMPTY_TAR = b"\0" * 1024


def make_image(ref: str, *labels: str) -> str:
    changes = [arg for label in labels for arg in ("--change", f"LABEL {label}")]
    done = subprocess.run(["docker", "import", *changes, "-", ref], input=EMPTY_TAR, capture_output=True, check=True)
    return done.stdout.decode().strip()


def exists(kind: str, name: str) -> bool:
    return subprocess.run(["docker", kind, "inspect", name], capture_output=True).returncode == 0


def test_cleanup_takes_what_carries_the_runs_mark_and_leaves_the_rest() -> None:
    run = f"{RUN}c"  # a run of its own, so that this run's live images are not touched
    ours = {
        "labelled image": make_image(f"mlctl-test-{run}/a:1", f"{RUN_LABEL_KEY}={run}"),
        "service named for the run": make_image(
            f"svc-x-{run}:1", "org.mlctl.layer=service", f"mlctl.service=svc-x-{run}"
        ),
    }
    # A rebuild moves the tag away: the old image is untagged, but still carries its labels.
    untagged = make_image(f"svc-x-{run}:moved", "org.mlctl.layer=service", f"mlctl.service=svc-x-{run}")
    ours["rebuilt"] = make_image(f"svc-x-{run}:moved", "org.mlctl.layer=service", f"mlctl.service=svc-x-{run}")
    ours["untagged by a rebuild"] = untagged
    theirs = {
        "another run's": make_image(f"mlctl-test-{run}/b:1", f"{RUN_LABEL_KEY}={run}x"),
        "a service like ours": make_image(f"svc-x-{run}x:1", "org.mlctl.layer=service", f"mlctl.service=svc-x-{run}x"),
        "a user's service": make_image(f"mlctl-test-{run}/user:1", "org.mlctl.layer=service", "mlctl.service=svc-x"),
    }
    containers = {}
    for name, labels in (
        (f"mlctl-svc-x-{run}", ["org.mlctl.service=svc-x-" + run]),
        (f"mlctl-test-{run}-labelled", [f"{RUN_LABEL_KEY}={run}"]),
        (f"mlctl-svc-x-{run}-theirs", ["org.mlctl.service=svc-x"]),
    ):
        label_args = [arg for label in labels for arg in ("--label", label)]
        subprocess.run(
            ["docker", "create", "--name", name, *label_args, theirs["a user's service"], "x"],
            check=True,
            capture_output=True,
        )
        containers[name] = labels
    try:
        removed = remove_leftovers(run)
        assert {name: exists("image", image) for name, image in ours.items()} == dict.fromkeys(ours, False)
        assert {name: exists("image", image) for name, image in theirs.items()} == dict.fromkeys(theirs, True)
        assert {name: exists("container", name) for name in containers} == {
            f"mlctl-svc-x-{run}": False,
            f"mlctl-test-{run}-labelled": False,
            f"mlctl-svc-x-{run}-theirs": True,
        }
        assert len(removed) == len(ours) + 2  # and the two containers
    finally:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", *ours.values(), *theirs.values()], capture_output=True)


def test_an_image_removed_by_another_client_while_listed_is_left_out() -> None:
    """The engine is shared: between listing images and inspecting each, another client (a concurrent
    build's cleanup, a user's docker rmi) may remove one. The race is replayed: the engine's listing is
    taken, the image removed, then the listing handed back as it was."""
    from mlctl.adapters.docker import DockerImageBuilder

    label = f"{RUN_LABEL_KEY}={RUN}-race"
    kept = make_image(f"mlctl-test-{RUN}/kept:1", label)
    gone = make_image(f"mlctl-test-{RUN}/gone:1", label)
    builder = DockerImageBuilder.connect()
    try:
        listed = builder.client.api.images(filters={"label": label})
        assert {i["Id"] for i in listed} == {kept, gone}
        subprocess.run(["docker", "rmi", gone], check=True, capture_output=True)
        builder.client.api.images = lambda filters: listed  # the listing from before the removal
        assert [image.id for image in builder.list_images(label)] == [kept]
    finally:
        builder.close()
        subprocess.run(["docker", "rmi", "-f", kept, gone], capture_output=True)
