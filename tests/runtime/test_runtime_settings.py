"""SERVING_* settings: parsing, defaults, and every bad value named by its variable."""

from __future__ import annotations

import pytest
from mlctl_serve.settings import Settings, SettingsError, available_cpus, resolve_torch_threads


def test_values_and_defaults() -> None:
    settings = Settings.from_env(
        {
            "SERVING_MAX_BATCH_SIZE": "32",
            "SERVING_WARMUP_BATCH_SIZES": "1,8",
            "SERVING_COMPILE": "true",
            "SERVING_MAX_BATCH_DELAY_MS": "2.5",
            "SERVING_TORCH_THREADS": "3",
        },
        model_name="fraud-scorer",
    )
    assert (settings.model_name, settings.max_batch_size, settings.warmup_batch_sizes) == ("fraud-scorer", 32, (1, 8))
    assert settings.compile is True
    assert settings.batch_delay_s("cuda") == pytest.approx(0.0025)
    assert resolve_torch_threads(settings.torch_threads) == 3
    auto = Settings.from_env({})
    assert (auto.batch_delay_s("cpu"), auto.batch_delay_s("cuda")) == (0.0, 0.002)
    assert 1 <= resolve_torch_threads("auto") <= max(1, int(available_cpus()))


def test_client_limits_metrics_port_and_a_fractional_grace() -> None:
    settings = Settings.from_env(
        {
            "SERVING_GRACEFUL_SHUTDOWN_S": "0.5",
            "SERVING_METRICS_PORT": "9090",
            "SERVING_HEADER_TIMEOUT_S": "2.5",
            "SERVING_BODY_MIN_RATE": "1000",
            "SERVING_MAX_CONNECTIONS": "64",
            "SERVING_MAX_BUFFERED_BYTES": str(2**24),
        }
    )
    assert (settings.graceful_shutdown_s, settings.metrics_port, settings.header_timeout_s) == (0.5, 9090, 2.5)
    assert (settings.body_min_rate, settings.max_connections, settings.max_buffered_bytes) == (1000, 64, 2**24)
    assert Settings.from_env({"SERVING_GRACEFUL_SHUTDOWN_S": "0"}).graceful_shutdown_s == 0.0  # 0: stop now
    defaults = Settings.from_env({})
    assert (defaults.metrics_port, defaults.max_connections, defaults.max_header_bytes) == (0, 1024, 16384)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"SERVING_MAX_QUEUE": "many"}, "SERVING_MAX_QUEUE='many': invalid literal for int()"),
        ({"SERVING_DEVICE": "tpu"}, "SERVING_DEVICE must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        ({"SERVING_COMPILE": "maybe"}, "SERVING_COMPILE='maybe': expected true or false"),
        ({"SERVING_MAX_BATCH_DELAY_MS": "-1"}, "SERVING_MAX_BATCH_DELAY_MS must be auto or 0..10000, got -1.0"),
        ({"SERVING_TORCH_THREADS": "0"}, "SERVING_TORCH_THREADS must be auto or >= 1, got 0"),
        ({"SERVING_WARMUP_BATCH_SIZES": "1,64"}, "SERVING_WARMUP_BATCH_SIZES [1, 64] exceed SERVING_MAX_BATCH_SIZE 16"),
        ({"SERVING_COMPILE_MODE": "fast"}, "SERVING_COMPILE_MODE must be default, reduce-overhead or max-autotune"),
        # The client limits and the metrics port: a limit of 0, infinity or NaN would be no limit at all.
        ({"SERVING_HEADER_TIMEOUT_S": "0"}, "SERVING_HEADER_TIMEOUT_S must be a number > 0, got 0.0"),
        ({"SERVING_BODY_TIMEOUT_S": "inf"}, "SERVING_BODY_TIMEOUT_S must be a number > 0, got inf"),
        ({"SERVING_KEEPALIVE_TIMEOUT_S": "nan"}, "SERVING_KEEPALIVE_TIMEOUT_S must be a number > 0, got nan"),
        ({"SERVING_BODY_MIN_RATE": "fast"}, "SERVING_BODY_MIN_RATE='fast': invalid literal for int()"),
        ({"SERVING_MAX_CONNECTIONS": "0"}, "SERVING_MAX_CONNECTIONS must be a number > 0, got 0"),
        ({"SERVING_MAX_HEADERS": "0"}, "SERVING_MAX_HEADERS must be a number > 0, got 0"),
        ({"SERVING_MAX_HEADER_BYTES": "512"}, "SERVING_MAX_HEADER_BYTES must be >= 1024, got 512"),
        (
            {"SERVING_MAX_BUFFERED_BYTES": "1000000"},
            "SERVING_MAX_BUFFERED_BYTES (1000000) must be at least SERVING_MAX_PAYLOAD_BYTES (16777216)",
        ),
        ({"SERVING_METRICS_PORT": "70000"}, "SERVING_METRICS_PORT must be 0 (off) or 1..65535, got 70000"),
        ({"SERVING_METRICS_PORT": "8080"}, "SERVING_METRICS_PORT must differ from SERVING_PORT (8080)"),
        ({"SERVING_GRACEFUL_SHUTDOWN_S": "-1"}, "SERVING_GRACEFUL_SHUTDOWN_S must be 0..3600, got -1.0"),
        ({"SERVING_GRACEFUL_SHUTDOWN_S": "nan"}, "SERVING_GRACEFUL_SHUTDOWN_S must be 0..3600, got nan"),
    ],
)
def test_bad_values_name_the_variable(variables: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(variables)
    assert str(caught.value).startswith(message), str(caught.value)
