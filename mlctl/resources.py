"""Where mlctl's own data lives: templates, base images and charts.

In a source checkout (and an editable install) they are the top-level folders of the repository;
in a wheel they are packaged under ``mlctl/_data``.
"""

from __future__ import annotations

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
