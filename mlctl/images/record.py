"""Where ``mlctl build`` leaves its result for ``mlctl deploy``: ``.mlctl/builds.json`` in the service.

The record holds the latest ``BuildResult`` per image repository (an environment with its own
registry builds into its own repository): the image by digest once pushed, whether it was built from
uncommitted changes, and its labels. A deploy without ``--image`` takes the image from here instead
of working it out again from git and the Docker engine; a GPU gate reads the driver floor from the
labels recorded here.

The folder ignores itself for git (``.mlctl/.gitignore``), so writing the record never makes the
tree dirty, and ``mlctl build`` leaves it out of images. CI jobs on other machines pass ``--image``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlctl.atomic import replace_file
from mlctl.models import BuildResult, ImageRef, to_data

#: The folder mlctl keeps its own state in, inside a service.
STATE_DIR = ".mlctl"
RECORD = "builds.json"
#: The record's format; a reader skips a record of a newer format rather than misread it.
VERSION = 1


def record_build(directory: Path, result: BuildResult) -> Path:
    """Remember ``result`` as the latest build of its repository in the service at ``directory``."""
    state = directory / STATE_DIR
    state.mkdir(exist_ok=True)
    ignore = state / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# mlctl's own state (build records); never committed\n*\n")
    builds = [b for b in _read(directory) if b.get("image", {}).get("repository") != result.image.repository]
    builds.append(to_data(result))
    path = state / RECORD
    replace_file(path, (json.dumps({"version": VERSION, "builds": builds}, indent=2) + "\n").encode())
    return path


def latest_build(directory: Path, repository: str) -> BuildResult | None:
    """The latest build recorded for ``repository`` in the service at ``directory``, if any."""
    for data in reversed(_read(directory)):
        if data.get("image", {}).get("repository") == repository:
            try:
                return BuildResult.from_data(data)
            except (KeyError, TypeError, ValueError):
                return None
    return None


def recorded_image(directory: Path, ref: ImageRef) -> BuildResult | None:
    """The recorded build of the image ``ref`` names (by digest, else by repository and tag), if any."""
    build = latest_build(directory, ref.repository)
    if build is None:
        return None
    if ref.digest:
        return build if build.image.digest == ref.digest else None
    return build if ref.tag and ref.tag in (build.image.tag, *build.tags) else None


def _read(directory: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((directory / STATE_DIR / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # none yet, or unreadable: deploys then need --image, and the next build rewrites it
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("builds"), list):
        return []
    return [b for b in data["builds"] if isinstance(b, dict)]
