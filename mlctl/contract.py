"""The container contract: how a service runs in its image, said once.

The user the server runs as, where its code and weights lie in the image, the port it listens on,
and the ``SERVING_*`` variables that carry ``mlctl.yaml``'s settings to the server (the runtime's
``mlctl_serve.settings.Settings`` reads them; a test holds both sides together). The image build
bakes this in, the chart's values and the local target pass it on, and ``mlctl run`` gives the same
variables to a server running from source.
"""

from __future__ import annotations

from mlctl.config import ServiceConfig

#: The user and group the server runs as (a fixed UID: the chart's runAsUser, volumes' fsGroup).
UID = 10001
#: The service's code in the image; the working directory and PYTHONPATH.
APP_DIR = "/srv"
#: A container's server listens on every interface of its network namespace.
CONTAINER_HOST = "0.0.0.0"
#: Variables the chart sets itself (from its own values), so they are left out of its ``serving.env``.
CHART_OWNED = ("SERVING_HOST", "SERVING_PORT", "SERVING_MODEL_NAME", "SERVING_METRICS_PORT")


def port(config: ServiceConfig) -> int:
    """The port the server listens on inside the container (the chart's containerPort)."""
    return config.serving.port


def weights_in_image(config: ServiceConfig) -> str | None:
    """Where the weights lie in the image (None with source ``external``: the server loads ``model.uri``)."""
    return f"{APP_DIR}/{config.model.path}" if config.model.baked else None


def serving_environment(config: ServiceConfig) -> dict[str, str]:
    """The ``SERVING_*`` variables of the service's settings, for a server run from source.

    The ``SERVING_*`` variables of the service's settings, with the model path as ``mlctl.yaml``
    gives it (relative to the service, or the URI): what ``mlctl run`` starts a server from source with.
    """
    serving = config.serving
    env = {
        "SERVING_MODEL_NAME": config.name,
        "SERVING_PORT": str(port(config)),
        "SERVING_WORKERS": str(serving.workers),
        "SERVING_MAX_BATCH_SIZE": str(serving.max_batch_size),
        "SERVING_MAX_BATCH_DELAY_MS": str(serving.max_batch_delay_ms)
        if serving.max_batch_delay_ms == "auto"
        else f"{serving.max_batch_delay_ms:g}",
        "SERVING_MAX_QUEUE": str(serving.max_queue),
        "SERVING_MAX_CONCURRENCY": str(serving.max_concurrency),
        "SERVING_GRACEFUL_SHUTDOWN_S": f"{serving.graceful_shutdown_s:g}",
        "SERVING_REQUEST_TIMEOUT_S": f"{serving.request_timeout_s:g}",
        "SERVING_MAX_PAYLOAD_BYTES": str(serving.max_payload_bytes),
        "SERVING_WARMUP_BATCH_SIZES": ",".join(str(b) for b in serving.warmup_batch_sizes),
        "SERVING_COMPILE": "true" if serving.compile.enabled else "false",
        "SERVING_COMPILE_MODE": serving.compile.mode,
        "SERVING_TORCH_THREADS": str(serving.torch_threads),
        "SERVING_METRICS_PORT": str(serving.metrics_port),
        "SERVING_HEADER_TIMEOUT_S": f"{serving.header_timeout_s:g}",
        "SERVING_BODY_TIMEOUT_S": f"{serving.body_timeout_s:g}",
        "SERVING_BODY_MIN_RATE": str(serving.body_min_rate),
        "SERVING_KEEPALIVE_TIMEOUT_S": f"{serving.keepalive_timeout_s:g}",
        "SERVING_MAX_CONNECTIONS": str(serving.max_connections),
        "SERVING_MAX_BUFFERED_BYTES": str(serving.max_buffered_bytes),
        "SERVING_MAX_HEADER_BYTES": str(serving.max_header_bytes),
        "SERVING_MAX_HEADERS": str(serving.max_headers),
    }
    if config.model.baked:
        env["SERVING_MODEL_PATH"] = config.model.path
    elif config.model.uri:
        env["SERVING_MODEL_PATH"] = config.model.uri
    return env


def container_environment(config: ServiceConfig) -> dict[str, str]:
    """The variables as a container of the image sees them.

    The variables as a container of the image sees them: listening on every interface, the baked
    weights at their place in the image. What the local target runs the image with.
    """
    env = serving_environment(config)
    env["SERVING_HOST"] = CONTAINER_HOST
    baked = weights_in_image(config)
    if baked is not None:
        env["SERVING_MODEL_PATH"] = baked
    return env


def image_environment(config: ServiceConfig) -> dict[str, str]:
    """The variables baked into the image: the container's, less a weights URI (a deploy-time value)."""
    env = container_environment(config)
    if not config.model.baked:
        env.pop("SERVING_MODEL_PATH", None)
    return env


def chart_environment(config: ServiceConfig) -> dict[str, str]:
    """The variables the chart puts in the serving ConfigMap: the container's, less those it sets itself."""
    return {k: v for k, v in container_environment(config).items() if k not in CHART_OWNED}
