"""The build's secret check of the code layer, cold and remembered, beside detect-secrets' own CLI.

    .venv/bin/python benchmarks/secret_scan.py [--runs 3] [--kib 256]

The code: a scaffolded pytorch-predict service plus a text data file of --kib KiB (a tokenizer's
vocabulary, say), which is what makes a scan slow. Three commands, interleaved:

- cold: ``check_secrets`` with an empty memory (every file scanned), as on a first build;
- warm: the same with the memory a build leaves (nothing changed: nothing scanned);
- detect-secrets: ``detect-secrets scan --all-files`` over the same files (the detector alone).

Goals: cold <= 1.3x detect-secrets (the path rules and the collection add little to the scan);
warm <= 0.3x cold (what is left is Python's start-up and mlctl's imports). The scan rate printed is
the data scanned over the time cold takes beyond warm.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import Contender, report, time_interleaved

CHECK = """
import sys
from pathlib import Path
from mlctl.images.context import check_secrets, collect
service = Path(sys.argv[1])
check_secrets(service, collect(service, None), memo=Path(sys.argv[2]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kib", type=int, default=256, help="size of the text data file")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlctl-bench-secrets-"))
    try:
        bin_dir = Path(sys.executable).parent
        subprocess.run(
            [str(bin_dir / "mlctl"), "new", "svc", "--set", "accelerator=cpu", "--yes", "--no-git"],
            cwd=work,
            check=True,
            capture_output=True,
        )
        service = work / "svc"
        words = random.Random(1)
        vocab: dict[str, int] = {}
        while len(json.dumps(vocab)) < args.kib * 1024:
            word = "".join(words.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(words.randint(2, 9)))
            vocab.setdefault(word, len(vocab))
        (service / "data").mkdir()
        (service / "data" / "vocab.json").write_text(json.dumps(vocab, indent=1))
        memo_cold, memo_warm = work / "cold.json", work / "warm.json"
        check = [sys.executable, "-c", CHECK, str(service)]
        subprocess.run([*check, str(memo_warm)], check=True)  # the memory a first build leaves
        from mlctl.images.context import collect

        files = [f.path for f in collect(service, None).code]
        contenders = [
            Contender("cold", [*check, str(memo_cold)], before=lambda: memo_cold.unlink(missing_ok=True)),
            Contender("warm", [*check, str(memo_warm)]),
            Contender(
                "detect-secrets", [str(bin_dir / "detect-secrets"), "scan", "--all-files", *files], cwd=str(service)
            ),
        ]
        medians = report(time_interleaved(contenders, runs=args.runs, warmup=1))
        size = sum((service / f).stat().st_size for f in files) / 1024
        print(f"\n{len(files)} files, {size:.0f} KiB")
        print(f"cold / detect-secrets = {medians['cold'] / medians['detect-secrets']:.2f}x (goal <= 1.3x)")
        print(f"warm / cold           = {medians['warm'] / medians['cold']:.2f}x (goal <= 0.3x)")
        print(f"scan rate             = {size / max(medians['cold'] - medians['warm'], 1e-9):.0f} KiB/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
