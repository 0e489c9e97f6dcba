"""The GPU check script rehearsed on the CPU (--quick), so it still runs the day a GPU is lent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serving" / "gpu_check.py"


@pytest.mark.slow
@pytest.mark.long(85)
def test_the_gpu_check_runs_on_the_cpu_and_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--device", "cpu"], capture_output=True, text=True, timeout=480
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = re.findall(
        r"^(predict|generate)\s+(off|on|fell back)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x$",
        done.stdout,
        re.M,
    )
    assert [(r[0], r[1] != "off") for r in rows] == [
        ("predict", False),
        ("predict", True),
        ("generate", False),
        ("generate", True),
    ]
    for row in rows:
        assert all(float(v) > 0 for v in row[2:])


def test_without_cuda_the_check_says_how_to_rehearse() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no CUDA device here: run with --device cpu for a rehearsal" in done.stderr
