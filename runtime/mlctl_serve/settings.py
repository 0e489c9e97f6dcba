"""Server settings from ``SERVING_*`` environment variables.

mlctl sets them from ``mlctl.yaml`` (``mlctl run``, the image, the Helm chart), so the server needs
neither mlctl nor a YAML parser. Every bad value is reported with the variable's name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

AUTO = "auto"
#: Batch delay picked for ``SERVING_MAX_BATCH_DELAY_MS=auto``: on a GPU a short wait fills batches that
#: cost little more than one row; on a CPU work grows with the batch, so batches form only from requests
#: that queue while the model is busy.
AUTO_DELAY_MS = {"cpu": 0.0, "cuda": 2.0}


class SettingsError(ValueError):
    """A ``SERVING_*`` variable has a value the server cannot use."""


@dataclass(frozen=True)
class Settings:
    model_name: str = "model"
    model_version: str = "1"
    model_path: str = "weights/model.pt"
    #: auto (CUDA when present, else CPU), cpu, cuda or cuda:N
    device: str = AUTO
    max_batch_size: int = 16
    #: A number of milliseconds, or "auto" (see AUTO_DELAY_MS).
    max_batch_delay_ms: float | str = AUTO
    max_queue: int = 256
    #: Generation streams served at once (generate endpoints).
    max_concurrency: int = 4
    request_timeout_s: float = 30.0
    max_payload_bytes: int = 16 * 1024 * 1024
    warmup_batch_sizes: tuple[int, ...] = (1,)
    compile: bool = False
    compile_mode: str = "default"
    #: torch's intra-op threads: a number, or "auto" (the CPUs this process may use, less one for the
    #: event loop; a container's CPU limit counts, where torch alone would see every core of the host).
    torch_threads: int | str = AUTO
    host: str = "127.0.0.1"
    port: int = 8080
    #: A second listener serving only ``/metrics`` (0: ``/metrics`` stays on ``port``).
    metrics_port: int = 0
    workers: int = 1
    #: On SIGTERM, how long in-flight requests may take to finish; 0 answers them 503 at once.
    graceful_shutdown_s: float = 30.0
    log_level: str = "info"
    access_log: bool = False
    # --- client limits (per replica; see the README's "Limits" table) ---
    #: From a request's first byte to the end of its headers.
    header_timeout_s: float = 10.0
    #: A body may take this long, plus one second per ``body_min_rate`` bytes received.
    body_timeout_s: float = 10.0
    #: The slowest body transfer (bytes/s) a client may keep up once ``body_timeout_s`` is spent.
    body_min_rate: int = 64 * 1024
    #: An idle keep-alive connection (or a new one that sends nothing) is closed after this long.
    keepalive_timeout_s: float = 75.0
    #: Open connections; at the limit the longest-idle one is closed for a new one, else the new one gets 503.
    max_connections: int = 1024
    #: Request bodies held at once (bodies over ``SMALL_BODY_BYTES`` count); beyond it, 503.
    max_buffered_bytes: int = 128 * 1024 * 1024
    #: Request line and headers, in bytes; beyond it, 431.
    max_header_bytes: int = 16 * 1024
    #: Header fields per request; beyond it, 431.
    max_headers: int = 100

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: Any) -> Settings:
        """Settings from ``SERVING_<FIELD>`` variables over ``defaults`` over the class defaults."""
        env = os.environ if environ is None else environ
        base = dataclasses.replace(cls(), **defaults)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            var = f"SERVING_{field.name.upper()}"
            if var not in env:
                continue
            values[field.name] = _parse(var, env[var], getattr(base, field.name))
        settings = dataclasses.replace(base, **values)
        settings.check()
        return settings

    def batch_delay_s(self, device_type: str) -> float:
        """The batch delay in seconds for a device type ("cpu" or "cuda")."""
        if self.max_batch_delay_ms == AUTO:
            return AUTO_DELAY_MS.get(device_type, 0.0) / 1000
        return float(self.max_batch_delay_ms) / 1000

    def check(self) -> None:
        for name in (
            "max_batch_size",
            "max_queue",
            "max_concurrency",
            "request_timeout_s",
            "max_payload_bytes",
            "header_timeout_s",
            "body_timeout_s",
            "body_min_rate",
            "keepalive_timeout_s",
            "max_connections",
            "max_buffered_bytes",
            "max_headers",
        ):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise SettingsError(f"SERVING_{name.upper()} must be a number > 0, got {value}")
        if not 0 <= self.graceful_shutdown_s <= 3600:
            raise SettingsError(f"SERVING_GRACEFUL_SHUTDOWN_S must be 0..3600, got {self.graceful_shutdown_s}")
        if self.max_buffered_bytes < self.max_payload_bytes:
            raise SettingsError(
                f"SERVING_MAX_BUFFERED_BYTES ({self.max_buffered_bytes}) must be at least SERVING_MAX_PAYLOAD_BYTES "
                f"({self.max_payload_bytes}), or no request of the largest size could ever be read"
            )
        if self.max_header_bytes < 1024:
            raise SettingsError(f"SERVING_MAX_HEADER_BYTES must be >= 1024, got {self.max_header_bytes}")
        if self.max_batch_delay_ms != AUTO and (
            isinstance(self.max_batch_delay_ms, str) or not 0 <= self.max_batch_delay_ms <= 10_000
        ):
            raise SettingsError(f"SERVING_MAX_BATCH_DELAY_MS must be auto or 0..10000, got {self.max_batch_delay_ms}")
        if not self.warmup_batch_sizes or any(b < 1 for b in self.warmup_batch_sizes):
            raise SettingsError("SERVING_WARMUP_BATCH_SIZES must be a comma-separated list of sizes >= 1")
        if max(self.warmup_batch_sizes) > self.max_batch_size:
            raise SettingsError(
                f"SERVING_WARMUP_BATCH_SIZES {list(self.warmup_batch_sizes)} exceed SERVING_MAX_BATCH_SIZE "
                f"{self.max_batch_size}"
            )
        if self.device != AUTO and self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise SettingsError(f"SERVING_DEVICE must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.compile_mode not in ("default", "reduce-overhead", "max-autotune"):
            raise SettingsError(
                f"SERVING_COMPILE_MODE must be default, reduce-overhead or max-autotune, got {self.compile_mode!r}"
            )
        if self.torch_threads != AUTO and (isinstance(self.torch_threads, str) or self.torch_threads < 1):
            raise SettingsError(f"SERVING_TORCH_THREADS must be auto or >= 1, got {self.torch_threads}")
        if not 1 <= self.port <= 65535:
            raise SettingsError(f"SERVING_PORT must be 1..65535, got {self.port}")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"SERVING_METRICS_PORT must be 0 (off) or 1..65535, got {self.metrics_port}")
        if self.metrics_port == self.port:
            raise SettingsError(f"SERVING_METRICS_PORT must differ from SERVING_PORT ({self.port})")


def available_cpus() -> float:
    """CPUs this process may use: its affinity, capped by a cgroup CPU limit (containers)."""
    count: float = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for path, parse in (
        ("/sys/fs/cgroup/cpu.max", lambda text: text.split()),
        (
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            lambda text: [text.strip(), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")],
        ),
    ):
        try:
            quota, period = parse(_read(path))
            if quota not in ("max", "-1"):
                count = min(count, int(quota) / int(period))
                break
        except (OSError, ValueError):
            continue
    return max(count, 1.0)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def resolve_torch_threads(setting: int | str) -> int:
    if setting != AUTO:
        return int(setting)
    import math

    return max(1, math.ceil(available_cpus()) - 1)


def _parse(var: str, raw: str, default: Any) -> Any:
    text = raw.strip()
    try:
        if isinstance(default, bool):
            if text.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError("expected true or false")
            return text.lower() in {"1", "true", "yes"}
        if isinstance(default, int):
            return int(text)
        if var == "SERVING_MAX_BATCH_DELAY_MS":
            return AUTO if text.lower() == AUTO else float(text)
        if var == "SERVING_TORCH_THREADS":
            return AUTO if text.lower() == AUTO else int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(int(v) for v in text.split(",") if v.strip())
        return text
    except ValueError as exc:
        raise SettingsError(f"{var}={raw!r}: {exc}") from None
