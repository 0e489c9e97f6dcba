"""`mlctl new` wall time with the pytorch-predict template and git, side by side with its floors.

    .venv/bin/python benchmarks/new_service.py [--runs 10]

Contenders, timed interleaved in one run:
  floor    python -c 'import typer'            (start-up every typer CLI pays)
  git      git init + add + commit of the same files (the git work itself, without Python)
  mlctl    mlctl new svc --yes                 (render, write, git init and first commit)

Goal (issue 2): mlctl new under 1 s.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import Contender, report, time_interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlctl-bench-new-"))
    mlctl = str(Path(sys.executable).parent / "mlctl")
    sample = work / "sample"
    import subprocess

    subprocess.run([mlctl, "new", "sample", "--dir", str(sample), "--yes", "--no-git"], check=True, capture_output=True)
    git_env = {
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }
    git_script = (
        f"rm -rf {work}/g && cp -r {sample} {work}/g && cd {work}/g && git init -q -b main && git add -A "
        "&& git commit -q -m x"
    )

    def clean() -> None:
        shutil.rmtree(work / "svc", ignore_errors=True)

    contenders = [
        Contender("floor: python -c 'import typer'", [sys.executable, "-c", "import typer"]),
        Contender("git: init + add + commit", ["sh", "-c", git_script], env=git_env),
        Contender(
            "mlctl new (template + git)", [mlctl, "new", "svc", "--yes"], env=git_env, before=clean, cwd=str(work)
        ),
    ]
    try:
        medians = report(time_interleaved(contenders, args.runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    new = medians[contenders[2].name]
    print()
    print(f"mlctl new / 1 s goal = {new:.2f}x   (goal < 1.00x)")
    print(f"mlctl new / (floor + git) = {new / (medians[contenders[0].name] + medians[contenders[1].name]):.2f}x")


if __name__ == "__main__":
    main()
