"""``mlctl build``: the planned ladder built (and pushed) with the Docker engine, and the result recorded.

Layers found with their very inputs are reused; the others are built, bottom up, from a wheelhouse
served on loopback for the build (``mlctl.images.wheels``), one build at a time per engine
(``mlctl.images.locks``). The ``BuildResult`` is recorded in the service (``mlctl.images.record``)
for ``mlctl deploy`` to take.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlctl.config import LoadedConfig
from mlctl.errors import BuildError, ConflictError, InputError
from mlctl.images import locks, wheels
from mlctl.images.ladder import DEFAULT_PLATFORM, LAYERS
from mlctl.images.plan import (
    Ladder,
    check_engine,
    check_engine_host,
    check_index_url,
    engine,
    look_in_registry,
    plan_ladder,
)
from mlctl.images.record import record_build
from mlctl.images.root import check_root, python_unavailable
from mlctl.images.tags import check_labels
from mlctl.images.verify import verify_torch
from mlctl.images.weights import prepare_in_image
from mlctl.models import BuildResult, ImageRef, LayerResult, PushResult
from mlctl.ports import BuildLog, ImageBuilder
from mlctl.reporting import NullReporter, Reporter


def build_images(
    loaded: LoadedConfig,
    *,
    root: str | None = None,
    wheelhouse: Path | None = None,
    push: bool = False,
    platform: str = DEFAULT_PLATFORM,
    no_cache: bool = False,
    rebuild: Sequence[str] = (),
    tags: Sequence[str] = (),
    allow_dirty: bool = False,
    allow_secrets: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    record: bool = True,
    torch_index: str | None = None,
    reporter: Reporter | None = None,
    builder: ImageBuilder | None = None,
) -> BuildResult:
    """Build (and with ``push``, push) the service's image and the base layers under it.

    The weights come as ``model.source`` says (``mlctl.images.weights``): missing ones of source
    ``prepare`` are made with ``model.prepare`` in the service's image environment first.

    Args:
        loaded: The service's config (``load_service_config``), with its environment applied; the
            ``dev`` environment allows dirty pushes.
        root: The root image to start from instead of the matrix's (air-gapped teams, tests).
        wheelhouse: A directory of wheels to install from instead of resolving on the host (offline).
        push: Push the base layers and the service image to ``image.registry``.
        platform: The platform to build for.
        no_cache: Rebuild every layer, without the builder's cache.
        rebuild: Layers to rebuild even if present ("python", "torch", "service").
        tags: Extra tags for the service image.
        allow_dirty: Push even with uncommitted changes.
        allow_secrets: Files let into the image although they look like secrets: paths relative to
            the service directory (a directory lets the files under it in). Nothing else is let in.
        labels: Extra labels for the service image (a CI pipeline's id, an owner); see ``check_labels``.
        record: Record the result in the service for ``mlctl deploy`` (``mlctl.images.record``).
        torch_index: The wheel index to take torch from instead of the matrix's for the flavour (a
            mirror); torch is taken of the service's flavour only, from there and nowhere else.
        reporter: Progress.
        builder: The engine (default: the local Docker engine).

    Raises:
        InputError: bad matrix combination or flags; a root that does not exist or has no Python.
            SecretsFound (an InputError): files look like secrets, one line each; nothing was built.
        ConflictError: a dirty push. EnvironmentProblem: no Docker engine.
        BuildError: a build failed; no torch wheel of the service's flavour; a torch layer that is
            not what resolution found; model.prepare failed, or the weights are not what model.sha256
            pins. ConfigError: model.prepare cannot start or writes nothing at model.path.
        ClusterError: a registry, the wheel index or the host of model.uri cannot be reached.
    """
    reporter = reporter or NullReporter()
    labels = check_labels(labels or {})
    if platform not in wheels.PLATFORMS:
        raise InputError(f"--platform {platform}: mlctl builds for {', '.join(wheels.PLATFORMS)}")
    unknown = sorted(set(rebuild) - set(LAYERS))
    if unknown:
        raise InputError(f"--rebuild {', '.join(unknown)}: layers are {', '.join(LAYERS)}")
    if torch_index is not None:
        check_index_url(torch_index)
    if push and not loaded.config.image.registry:
        raise InputError(
            "--push needs image.registry in mlctl.yaml (e.g. ghcr.io/acme)",
            hint="or set MLCTL_CONFIG__IMAGE__REGISTRY for this run",
        )
    check_engine_host()
    with engine(builder) as builder:
        check_engine(builder)

        def plan() -> Ladder:
            return plan_ladder(
                loaded,
                builder,
                root=root,
                wheelhouse=wheelhouse,
                platform=platform,
                tags=tags,
                labels=labels,
                allow_secrets=allow_secrets,
                pull_root=True,
                torch_index=torch_index,
                reporter=reporter,
            )

        def check_dirty(ladder: Ladder) -> None:
            if push and ladder.dirty and not allow_dirty and loaded.environment != "dev":
                raise ConflictError(
                    f"refusing to push {loaded.config.name}: the service has uncommitted changes "
                    f"(tag {ladder.tags[0]})",
                    hint="commit them, or pass --allow-dirty (or --env dev)",
                )

        ladder = plan()
        check_dirty(ladder)
        forced = set(LAYERS) if no_cache else set(rebuild)
        if push:
            look_in_registry(ladder, builder, forced, reporter)
        early: list[LayerResult] = []
        if ladder.weights_pending:
            # model.prepare runs in the service's own environment: the base layers first, then the
            # weights, then the plan again (the weights name the image).
            base = dataclasses.replace(ladder, layers=ladder.layers[:-1])
            early = _build(base, builder, forced=forced, platform=platform, reporter=reporter)
            prepare_in_image(ladder, builder, platform=platform, reporter=reporter)
            forced -= {"python", "torch"}  # rebuilt just now
            ladder = plan()
            check_dirty(ladder)
            if push:
                look_in_registry(ladder, builder, forced, reporter)
        results = _build(ladder, builder, forced=forced, platform=platform, reporter=reporter)
        made = {result.layer: result for result in early if result.status != "reused"}
        results = [made.get(result.layer, result) for result in results]
        pushes = _push(ladder, builder, reporter) if push else []
        service = ladder.service
        digest = next((p.digest for p in pushes if p.image == service.image), None)
        found = builder.inspect(service.image)
        result = BuildResult(
            service=loaded.config.name,
            image=ImageRef(service.repository, service.tag, digest),
            tags=ladder.tags,
            dirty=ladder.dirty,
            layers=tuple(results),
            pushes=tuple(pushes),
            labels=dict(found.labels) if found else {},
            built_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            weights=ladder.weights,
        )
    if record:
        try:
            record_build(loaded.directory, result)
        except OSError as exc:  # a read-only checkout: the image is built all the same
            reporter.warn(f"the build could not be recorded in the service ({exc.strerror}): deploys need --image")
    return result


def _build(
    ladder: Ladder, builder: ImageBuilder, *, forced: set[str], platform: str, reporter: Reporter
) -> list[LayerResult]:
    needs = [layer for layer in ladder.layers if layer.status == "build" or layer.name in forced]
    if not needs:
        return _build_held(ladder, builder, forced=forced, platform=platform, reporter=reporter)
    # One build at a time per engine (mlctl.images.locks says why); what another build made while
    # this one waited is then found, not built again.
    waiting = "waiting for another mlctl build on this Docker engine to finish"
    with locks.held(locks.engine_lock_path(), on_wait=lambda: reporter.step(waiting)):
        for layer in needs:
            if layer.name not in forced:
                found = builder.inspect(layer.image)
                if found is not None and found.labels.get("mlctl.digest") == layer.digest:
                    layer.status, layer.reason = "present", "built meanwhile by another mlctl build"
        return _build_held(ladder, builder, forced=forced, platform=platform, reporter=reporter)


def _build_held(
    ladder: Ladder, builder: ImageBuilder, *, forced: set[str], platform: str, reporter: Reporter
) -> list[LayerResult]:
    results = []
    needs = [layer for layer in ladder.layers if layer.status == "build" or layer.name in forced]
    serving = wheels.serve(ladder.wheels) if needs else None
    url = serving.__enter__() if serving else ""
    try:
        for layer in ladder.layers:
            started = time.monotonic()
            if layer.status in ("present", "pulled") and layer.name not in forced:
                found = builder.inspect(layer.image)
                reporter.step(f"{layer.name} layer: reusing {layer.image}")
                status = "reused" if layer.status == "present" else "pulled"
                results.append(
                    LayerResult(layer.name, layer.image, status, layer.reason, 0.0, found.size if found else 0)
                )
                continue
            reason = "asked to rebuild" if layer.name in forced and layer.status != "build" else layer.reason
            reporter.step(f"{layer.name} layer: building {layer.image} ({reason})")
            labels = {
                **layer.labels,
                "mlctl.digest": layer.digest,
                "mlctl.inputs": json.dumps(layer.inputs, sort_keys=True),
            }
            context = layer.make_context(url, labels)
            root_os = ""
            if layer.name == "python":  # a root without a shell or a Python fails here, saying so
                root_os = check_root(builder, ladder.root, ladder.loaded.config.runtime.python).os

            def on_line(line: str, log: BuildLog, name: str = layer.name) -> None:
                reporter.log(f"[{name}] {line}")

            try:
                image_id, log = builder.build(
                    context,
                    tag=layer.image,
                    buildargs=layer.buildargs,
                    nocache=layer.name in forced,
                    platform=platform,
                    on_line=on_line,
                )
            except BuildError as exc:
                python = ladder.loaded.config.runtime.python
                if layer.name == "python" and f"mlctl: Python {python} is not available" in (exc.hint or ""):
                    raise python_unavailable(ladder.root, python, root_os) from None
                raise
            if layer.name == "torch":
                torch = verify_torch(builder, layer.image, ladder.torch)
                reporter.info(f"torch layer: {torch.describe()}, as resolved from {ladder.torch.filename}")
            found = builder.inspect(image_id)
            seconds = round(time.monotonic() - started, 2)
            size = found.size if found else 0
            results.append(
                LayerResult(layer.name, layer.image, "built", reason, seconds, size, log.step_count, log.cached_steps)
            )
            if layer.name == "service":
                for extra in ladder.tags[1:]:
                    builder.tag(image_id, layer.repository, extra)
    finally:
        if serving:
            serving.__exit__(None, None, None)
    return results


def _push(ladder: Ladder, builder: ImageBuilder, reporter: Reporter) -> list[PushResult]:
    results = []
    targets: list[tuple[str, str]] = []
    for layer in ladder.layers[:-1]:
        assert layer.remote is not None
        targets.append((layer.image, layer.remote))
    service = ladder.service
    for tag in ladder.tags:
        targets.append((service.image, f"{service.repository}:{tag}"))
    for local, remote in targets:
        target = ImageRef.parse(remote, source="push")
        builder.tag(local, target.repository, target.tag)
        reporter.step(f"pushing {remote}")
        report = builder.push(remote, on_status=lambda line: reporter.log(f"[push] {line}"))
        counts = dict.fromkeys(("pushed", "exists", "mounted"), 0)
        for status in report.layers.values():
            key = "pushed" if status == "Pushed" else "exists" if status == "Layer already exists" else "mounted"
            counts[key] += 1
        image = local if local == service.image else remote
        results.append(PushResult(image, report.digest, counts, report.bytes_pushed))
    return results
