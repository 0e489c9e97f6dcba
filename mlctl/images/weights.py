"""The weights layer of the service image: where ``mlctl build`` finds the weights, and how it makes them.

``model.source`` decides (``mlctl.config.ModelConfig``):

* ``file``: the file or directory at ``model.path`` in the service;
* ``prepare``: the same, made first by ``model.prepare`` when missing. ``mlctl build`` runs the command
  in the service's own image environment (the torch layer with the service's dependencies, built as
  the service image's first steps, so the builder's cache hands them on): the weights are made with
  exactly the Python, torch and packages that will load them, on any machine with the Docker engine
  (a CI job needs nothing installed but mlctl), on the CPU, as the user running mlctl, with the
  service directory mounted where the image keeps it;
* ``uri``: downloaded once into mlctl's content-addressed cache and checked (``mlctl.weights.fetch``);
* ``external``: nothing; the server loads ``model.uri`` at start.

Every baked source gives the weights' digest (``mlctl.weights``), which names the image: its tag ends
in ``-w<12 digits>`` and its ``mlctl.weights`` label holds the whole digest.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from mlctl import weights
from mlctl.config import LoadedConfig
from mlctl.contract import APP_DIR
from mlctl.errors import InputError
from mlctl.images import locks
from mlctl.images.context import ContextFile, ServiceFiles, collect
from mlctl.ports import ImageBuilder
from mlctl.reporting import Reporter

if TYPE_CHECKING:
    from mlctl.images.plan import Ladder


@dataclass(frozen=True)
class ServiceInputs:
    """The service image's files (code and weights), the weights' digest, and whether they must be made first."""

    files: ServiceFiles
    #: ``sha256:<hex>``; None when the weights are not in the image or not made yet.
    digest: str | None
    #: ``model.prepare`` has yet to make the weights (``mlctl build`` does, before the service layer).
    pending: bool = False


def service_inputs(
    loaded: LoadedConfig, *, reporter: Reporter, check: Callable[[ServiceFiles], None] | None = None
) -> ServiceInputs:
    """Read the service's code and find its weights as ``model.source`` says (downloading pinned ones).

    ``check`` sees the files before any download (``check_secrets``: nothing is fetched for a service
    whose code is refused).

    Raises:
        InputError: weights of source ``file`` are missing. BuildError: the weights are not what
        ``model.sha256`` pins. ClusterError: a download failed. What ``check`` raises.
    """
    directory, model = loaded.directory, loaded.config.model
    kind = model.kind
    path = directory / model.path
    if kind in ("external", "uri") or (kind == "prepare" and not path.exists()):
        found = collect(directory, None)
    elif not path.exists():
        raise InputError(
            f"the weights {model.path} do not exist (model.source file)",
            hint="put them there (committed, `git lfs pull`, or a CI step before the build), "
            "or let mlctl make them (source prepare) or download them (source uri)",
        )
    else:
        found = collect(directory, model.path)
    if check is not None:
        check(found)
    if kind == "external":
        return ServiceInputs(found, None)
    if kind == "uri":
        assert model.uri is not None  # the config's own checks
        assert model.sha256 is not None
        cached = weights.fetch(model.uri, model.sha256, reporter=reporter)
        # A copy at model.path (someone's download) must not ship a second time in the code layer.
        inside = PurePosixPath(model.path)
        code = tuple(
            f for f in found.code if PurePosixPath(f.path) != inside and inside not in PurePosixPath(f.path).parents
        )
        parent = inside.parent.as_posix()
        files = ServiceFiles(
            code,
            (ContextFile(inside.name, cached.read_bytes(), 0o644),),
            APP_DIR if parent == "." else f"{APP_DIR}/{parent}",
        )
        return ServiceInputs(files, f"sha256:{model.sha256}")
    if not found.weights and not path.exists():  # prepare, not made yet
        return ServiceInputs(found, None, pending=True)
    digest = weights.files_digest(((f.path, f.content) for f in found.weights), single=path.is_file())
    weights.check_pin(digest, model.sha256, model.path)
    return ServiceInputs(found, digest)


def prepare_in_image(ladder: Ladder, builder: ImageBuilder, *, platform: str, reporter: Reporter) -> None:
    """Make the missing weights with ``model.prepare`` in the service's image environment.

    The base layers must be built already. The environment is the service image's first steps (its
    dependencies over the torch layer), built untagged; the builder's cache gives the same steps to the
    service image afterwards.

    Raises:
        ConfigError: the command cannot start, or succeeds without writing ``model.path`` (exit 3).
        BuildError: the command fails (exit 7; what it left at ``model.path`` is removed).
    """
    from mlctl.images import wheels

    loaded = ladder.loaded
    model = loaded.config.model
    assert model.prepare is not None
    command = model.prepare
    service = ladder.service
    assert service.make_deps_context is not None
    # Builds on one engine take turns (mlctl.images.locks).
    with locks.held(locks.engine_lock_path()), wheels.serve(ladder.wheels) as url:
        environment, _ = builder.build(
            service.make_deps_context(url),
            tag=None,
            buildargs=service.buildargs,
            platform=platform,
            on_line=lambda line, log: reporter.log(f"[prepare] {line}"),
        )
    target = loaded.directory / model.path
    existed = target.exists()
    torch_layer = ladder.layers[-2].image
    reporter.step(
        f"making the weights {model.path} with model.prepare in the service's image environment "
        f"({torch_layer} and the service's dependencies, CPU only): {command}"
    )
    status, output = builder.run(
        environment,
        shlex.split(command),
        mounts={str(loaded.directory.resolve()): APP_DIR},
        workdir=APP_DIR,
        env={"HOME": "/tmp", "PYTHONPATH": APP_DIR, "PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": ""},
        user=f"{os.getuid()}:{os.getgid()}",
        labels={"org.mlctl.service": loaded.config.name, "org.mlctl.role": "prepare"},
        on_line=lambda line: reporter.log(f"[prepare] {line}"),
    )
    if status == 127:
        weights.undo_prepare(target, existed)
        raise weights.prepare_did_not_start(command, output.strip().splitlines()[-1] if output.strip() else "not found")
    if status != 0:
        weights.undo_prepare(target, existed)
        raise weights.prepare_failed(command, status, output)
    if not target.exists():
        raise weights.prepare_wrote_nothing(command, model.path)
    reporter.info(f"made {model.path}: {weights.file_digest(target) if target.is_file() else 'a directory'}")
