"""`mlctl --help` start-up time, side by side with the floor of any typer CLI and with a peer.

    .venv/bin/python benchmarks/cli_startup.py [--runs 15] [--no-peer]

Contenders, timed interleaved in one run:
  floor    python -c 'import typer'   (what every typer CLI pays before doing anything)
  mlctl    mlctl --help
  bentoml  bentoml --help             (a peer; installed into a throwaway venv under .cache/bench/)

Goals (issue 2): mlctl <= 1.3x the floor and <= 0.2x bentoml.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import Contender, report, time_interleaved

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".cache" / "bench" / "bentoml-venv"


def peer_python() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not (PEER_VENV / "bin" / "bentoml").exists():
        print(f"installing bentoml into {PEER_VENV.relative_to(ROOT)} (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "bentoml"], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-peer", action="store_true", help="skip bentoml")
    args = parser.parse_args()

    # Measure mlctl as installed from a wheel, where its bytecode is compiled at install time:
    # without this, PYTHONDONTWRITEBYTECODE in the environment makes every run recompile mlctl.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mlctl")], check=True)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    contenders = [
        Contender("floor: python -c 'import typer'", [sys.executable, "-c", "import typer"]),
        Contender("mlctl --help", [str(Path(sys.executable).parent / "mlctl"), "--help"]),
    ]
    if not args.no_peer:
        bentoml = peer_python().parent / "bentoml"
        contenders.append(Contender("peer: bentoml --help", [str(bentoml), "--help"]))
    medians = report(time_interleaved(contenders, args.runs))
    names = [c.name for c in contenders]
    mlctl = medians[names[1]]
    print()
    print(f"mlctl / floor  = {mlctl / medians[names[0]]:.2f}x   (goal <= 1.30x)")
    if not args.no_peer:
        print(f"mlctl / peer   = {mlctl / medians[names[2]]:.2f}x   (goal <= 0.20x)")


if __name__ == "__main__":
    main()
