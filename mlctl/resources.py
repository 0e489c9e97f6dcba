"""Where mlctl's own data lives (templates, base images, charts) and where it caches things.

In a source checkout (and an editable install) the data is the top-level folders of the repository;
in a wheel it is packaged under ``mlctl/_data``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from mlctl.errors import EnvironmentProblem

DataKind = Literal["templates", "base_images", "charts", "runtime"]


def data_dir(kind: DataKind) -> Path:
    """The directory holding mlctl's built-in ``kind``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_data" / kind, here.parent / kind):
        if candidate.is_dir():
            return candidate
    raise EnvironmentProblem(
        f"mlctl's built-in {kind} are missing from this installation",
        hint="reinstall mlctl (pip install --force-reinstall mlctl)",
    )


def cache_dir() -> Path:
    """The cache of mlctl (wheels, template versions): ``MLCTL_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlctl``."""
    base = os.environ.get("MLCTL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlctl"
    )
    return Path(base)
