"""Side-by-side timing of whole commands: runs are interleaved (A B C A B C ...) so that machine
noise hits every contender alike, and medians are compared within the same run."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Contender:
    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    before: Callable[[], None] | None = None  # untimed preparation before each run
    cwd: str | None = None


def time_interleaved(contenders: list[Contender], runs: int, warmup: int = 2) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for i in range(warmup + runs):
        for c in contenders:
            if c.before:
                c.before()
            env = {**os.environ, **(c.env or {})}
            started = time.perf_counter()
            done = subprocess.run(c.argv, env=env, cwd=c.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"{c.name} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
            if i >= warmup:
                times[c.name].append(elapsed)
    return times


def report(times: dict[str, list[float]]) -> dict[str, float]:
    medians = {name: statistics.median(values) for name, values in times.items()}
    width = max(len(n) for n in times)
    print(f"{'command'.ljust(width)}  {'median':>8}  {'min':>8}  {'max':>8}  runs")
    for name, values in times.items():
        print(f"{name.ljust(width)}  {medians[name]:8.3f}  {min(values):8.3f}  {max(values):8.3f}  {len(values)}")
    return medians
