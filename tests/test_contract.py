"""The container contract (mlctl.contract) against the runtime that reads it (mlctl_serve.settings).

Every SERVING_* variable mlctl sets is one the runtime's Settings knows, and what the runtime reads
back from them is the service's mlctl.yaml: the image, the chart and the local target pass the same.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from mlctl_serve.settings import Settings

from mlctl import contract
from mlctl.config import ServiceConfig, load_service_config

SERVICE = """\
name: fraud-scorer
runtime:
  accelerator: cpu
model:
  source: baked
  path: weights/model.pt
serving:
  app: fraud_scorer.server:app
  port: 9000
  max_batch_size: 32
  max_batch_delay_ms: 2.5
  warmup_batch_sizes: [1, 8]
  compile:
    enabled: true
    mode: reduce-overhead
  header_timeout_s: 2.5
  max_connections: 64
  metrics_port: 9100
"""


def config(text: str = SERVICE) -> ServiceConfig:
    Path("mlctl.yaml").write_text(text)
    return load_service_config().config


def test_every_variable_is_a_setting_of_the_runtime() -> None:
    known = {f"SERVING_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    for env in (
        contract.serving_environment(config()),
        contract.container_environment(config()),
        contract.image_environment(config()),
        contract.chart_environment(config()),
    ):
        assert set(env) <= known, set(env) - known


def test_the_runtime_reads_back_what_mlctl_yaml_says() -> None:
    service = config()
    settings = Settings.from_env(contract.container_environment(service))
    serving = service.serving
    assert (settings.model_name, settings.port, settings.host) == ("fraud-scorer", 9000, contract.CONTAINER_HOST)
    assert settings.model_path == f"{contract.APP_DIR}/weights/model.pt" == contract.weights_in_image(service)
    assert (settings.max_batch_size, settings.max_batch_delay_ms) == (32, 2.5)
    assert settings.warmup_batch_sizes == (1, 8)
    assert (settings.compile, settings.compile_mode) == (True, "reduce-overhead")
    assert (settings.max_queue, settings.max_concurrency, settings.workers) == (
        serving.max_queue,
        serving.max_concurrency,
        serving.workers,
    )
    assert (settings.request_timeout_s, settings.graceful_shutdown_s) == (
        serving.request_timeout_s,
        serving.graceful_shutdown_s,
    )
    assert settings.max_payload_bytes == serving.max_payload_bytes
    assert settings.torch_threads == serving.torch_threads == "auto"
    # The client limits and the metrics port (set in SERVICE, or mlctl.yaml's defaults).
    assert (settings.header_timeout_s, settings.max_connections, settings.metrics_port) == (2.5, 64, 9100)
    assert (settings.body_timeout_s, settings.body_min_rate, settings.keepalive_timeout_s) == (10.0, 65536, 75.0)
    assert (settings.max_buffered_bytes, settings.max_header_bytes, settings.max_headers) == (2**27, 16384, 100)


def test_from_source_the_weights_are_where_mlctl_yaml_puts_them() -> None:
    env = contract.serving_environment(config())
    assert env["SERVING_MODEL_PATH"] == "weights/model.pt"
    assert "SERVING_HOST" not in env  # mlctl run passes --host itself


def test_weights_loaded_at_start_are_a_deploy_time_value() -> None:
    service = config(
        SERVICE.replace("  source: baked\n  path: weights/model.pt\n", "  source: external\n  uri: s3://b/m.pt\n")
    )
    assert contract.weights_in_image(service) is None
    assert "SERVING_MODEL_PATH" not in contract.image_environment(service)
    assert contract.chart_environment(service)["SERVING_MODEL_PATH"] == "s3://b/m.pt"
    assert Settings.from_env(contract.container_environment(service)).model_path == "s3://b/m.pt"


def test_weights_downloaded_when_building_are_in_the_image() -> None:
    pinned = "  source: uri\n  uri: https://models.example.com/m.pt\n  sha256: " + "a" * 64 + "\n"
    service = config(SERVICE.replace("  source: baked\n  path: weights/model.pt\n", pinned))
    assert contract.weights_in_image(service) == "/srv/weights/model.pt"  # model.path's default, in the image
    assert contract.image_environment(service)["SERVING_MODEL_PATH"] == "/srv/weights/model.pt"


def test_the_chart_sets_host_port_and_name_itself() -> None:
    env = contract.chart_environment(config())
    assert not set(contract.CHART_OWNED) & set(env)


@pytest.mark.parametrize("kind", ["image", "chart", "local"])
def test_one_uid_and_port_everywhere(kind: str, cli, service: Path) -> None:  # type: ignore[no-untyped-def]
    """The UID and the port the image is built with are the ones the chart and the local target use."""
    import json

    loaded = load_service_config(service)
    if kind == "chart":
        result = cli("-C", str(service), "render", "--json", "--image", "demo-svc:v1@sha256:" + "a" * 64)
        assert result.exit_code == 0, result.stderr
        values = json.loads(result.stdout)["values"]
        assert (values["serving"]["uid"], values["serving"]["port"]) == (contract.UID, contract.port(loaded.config))
        deployment = json.loads(result.stdout)["manifests"]["deployment.yaml"]
        assert f"runAsUser: {contract.UID}" in deployment
    elif kind == "image":
        from mlctl.images.context import ServiceFiles
        from mlctl.images.ladder import render_template
        from mlctl.resources import data_dir

        template = (data_dir("base_images") / "service" / "Dockerfile.j2").read_text()
        files = ServiceFiles((), (), f"{contract.APP_DIR}/weights")
        dockerfile = render_template(
            template,
            wheelhouse_url="http://127.0.0.1:1/",
            uid=contract.UID,
            app_dir=contract.APP_DIR,
            port=contract.port(loaded.config),
            start_period=1,
            app="x:app",
            env=contract.image_environment(loaded.config),
            weights=bool(files.weights),
            weights_dir=files.weights_dir,
        )
        assert f"USER {contract.UID}:{contract.UID}" in dockerfile
        assert f"EXPOSE {contract.port(loaded.config)}" in dockerfile
        assert f"WORKDIR {contract.APP_DIR}" in dockerfile
    else:
        env = contract.container_environment(loaded.config)
        assert env["SERVING_PORT"] == str(contract.port(loaded.config))
        assert env["SERVING_MODEL_PATH"].startswith(contract.APP_DIR + "/")
