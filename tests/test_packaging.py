"""The mlctl wheel carries what a non-editable install needs: templates, charts, base images, runtime."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_the_wheel_carries_the_data_folders(tmp_path: Path) -> None:
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("mlctl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ("pytorch-predict", "pytorch-generate"):
        assert f"mlctl/_data/templates/{template}/template.yaml" in names
    assert "mlctl/_data/runtime/mlctl_serve/predict.py" in names
    assert "mlctl/_data/runtime/pyproject.toml" in names
    assert "mlctl/cli/app.py" in names
    assert not any("__pycache__" in n for n in names)
