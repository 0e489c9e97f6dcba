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
    ],
)
def test_bad_values_name_the_variable(variables: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(variables)
    assert str(caught.value).startswith(message), str(caught.value)
