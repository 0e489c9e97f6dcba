"""`mlctl config validate` on hostile files, side by side with a normal mlctl.yaml.

    .venv/bin/python benchmarks/hostile_config.py [--runs 5]

Each hostile file is refused with a config error (exit 3), except a long comment under the size limit
(the slowest file that is still accepted); the ratio to the normal file's time says
what the refusal costs beyond start-up. Before the bounded reader, the alias bomb ran for a minute
and grew past 2.4 GB, and the 200k-key file took a minute.

Goal (issue 13): every refusal well under a second.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import Contender, report, time_interleaved

NORMAL = "name: fraud-scorer\nserving:\n  app: fraud_scorer.server:app\n"
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlctl-bench-hostile-"))
    files: dict[str, bytes] = {
        "normal": NORMAL.encode(),
        "alias bomb (600 bytes)": (NORMAL + BOMB).encode(),
        "nesting 30k deep (60 KB)": (NORMAL + "x: " + "[" * 30_000 + "]" * 30_000 + "\n").encode(),
        "200k keys": (NORMAL + "".join(f"k{i}: {i}\n" for i in range(200_000))).encode(),
        "4k keys (under the size limit)": (NORMAL + "".join(f"k{i}: {i}\n" for i in range(4_000))).encode(),
        "60 KiB comment": (NORMAL + "# " + "x" * 60_000 + "\n").encode(),
        "invalid UTF-8": NORMAL.encode() + b"x: \xff\n",
        "!!python tag": (NORMAL + "x: !!python/object/apply:os.system [id]\n").encode(),
    }
    mlctl = str(Path(sys.executable).parent / "mlctl")
    contenders = []
    for name, data in files.items():
        directory = work / str(len(contenders))
        directory.mkdir()
        (directory / "mlctl.yaml").write_bytes(data)
        expect = 0 if name in ("normal", "60 KiB comment") else 3  # a long comment is fine, just slow to read
        script = f'"{mlctl}" config validate >/dev/null 2>&1; [ $? -eq {expect} ]'
        contenders.append(Contender(name, ["sh", "-c", script], cwd=str(directory)))
    big = work / "50 MB"
    big.mkdir()
    with (big / "mlctl.yaml").open("wb") as handle:
        handle.write(NORMAL.encode())
        handle.truncate(50 * 1024 * 1024)
    script = f'"{mlctl}" config validate >/dev/null 2>&1; [ $? -eq 3 ]'
    contenders.append(Contender("50 MB file", ["sh", "-c", script], cwd=str(big)))
    try:
        medians = report(time_interleaved(contenders, args.runs, warmup=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    normal = medians["normal"]
    print()
    for name, median in medians.items():
        if name != "normal":
            print(f"{name}: {median / normal:.2f}x the normal file ({median - normal:+.3f} s)")


if __name__ == "__main__":
    main()
