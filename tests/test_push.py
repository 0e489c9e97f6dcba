"""``mlctl build --push`` to a real registry (Debian's docker-registry on loopback).

A file of its own: the first push of a session uploads the torch layer (most of a minute of gzip on one
core), and here it runs beside the other image tests instead of after them. Services are named for the
run and pushed under its namespace of the registry (conftest).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from building import build, git, mlctl, scaffold, statuses
from conftest import REGISTRY_NAMESPACE, run_name

from mlctl.images import locks

pytestmark = [pytest.mark.docker, pytest.mark.slow]
A, B = run_name("svc-push-a"), run_name("svc-push-b")


def test_push_and_a_second_service_uploads_only_its_own_layers(
    tmp_path: Path, root_image: str, wheelhouse: Path, registry: str
) -> None:
    env = {"MLCTL_CONFIG__IMAGE__REGISTRY": f"{registry}/{REGISTRY_NAMESPACE}"}
    first, other = scaffold(tmp_path, A), scaffold(tmp_path, B)
    # The builder reuses the newest image made by the same step, so a --no-cache build elsewhere on the
    # engine between these two builds could give them different dependency layers: the engine's build
    # lock keeps other builds out. The pushes, which build nothing, come after it.
    with locks.held(locks.engine_lock_path()):
        built = build(first, root_image, wheelhouse, env=env)
        second = build(other, root_image, wheelhouse, env=env)
    assert statuses(second) == {"python": "reused", "torch": "reused", "service": "built"}
    pushed = build(first, root_image, wheelhouse, "--push", "--tag", "stable", env=env)
    assert statuses(pushed) == {"python": "reused", "torch": "reused", "service": "reused"}  # pushed as built
    assert pushed["image"]["tag"] == built["image"]["tag"]
    assert pushed["image"]["digest"].startswith("sha256:")
    repository = f"{registry}/{REGISTRY_NAMESPACE}/{A}"
    assert pushed["reference"] == f"{repository}:{pushed['image']['tag']}@{pushed['image']['digest']}"
    with urllib.request.urlopen(f"http://{registry}/v2/{REGISTRY_NAMESPACE}/{A}/tags/list") as reply:
        assert set(json.loads(reply.read())["tags"]) == {pushed["image"]["tag"], "stable"}

    second = build(other, root_image, wheelhouse, "--push", env=env)
    with urllib.request.urlopen(f"http://{registry}/v2/_catalog") as reply:
        catalog = set(json.loads(reply.read())["repositories"])
    assert {f"{REGISTRY_NAMESPACE}/{name}" for name in ("mlctl-python", "mlctl-torch", A, B)} <= catalog
    by_image = {p["image"]: p for p in second["pushes"]}
    for base in ("mlctl-python", "mlctl-torch"):
        [push] = [p for name, p in by_image.items() if f"/{base}:" in name]
        assert push["layers"]["pushed"] == 0, push
    [own] = [p for name, p in by_image.items() if f"/{B}:" in name]
    # The code only: the template's weights are the same bytes in both services (the same tensors), so their
    # layer is A's, mounted from A's repository; everything else was there already.
    assert own["layers"]["pushed"] == 1, own
    assert own["layers"]["exists"] + own["layers"]["mounted"] >= 5, own
    assert own["bytes_pushed"] < 1024 * 1024

    # The deploy of the pushed build takes it by digest, from the record.
    rendered = mlctl(first, "render", "--json", env=env)
    assert json.loads(rendered.stdout)["values"]["image"] == {
        "repository": repository,
        "tag": pushed["image"]["tag"],
        "digest": pushed["image"]["digest"],
    }
    assert git(first, "status", "--porcelain") == ""  # the record changed nothing git sees
