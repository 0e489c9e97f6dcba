"""charts/model-service: ``mlctl.yaml`` and a built image become chart values, then manifests.

Rendering is the real Helm engine (helm-python-sdk), offline: no cluster is needed to see what a
deploy would apply (``mlctl render``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlctl import contract
from mlctl.config import ServiceConfig
from mlctl.errors import InputError
from mlctl.models import ImageRef, RenderedRelease
from mlctl.quantity import add
from mlctl.resources import data_dir

CHART = "model-service"
#: Helm's own limit on release names (they end up in label values and resource names).
MAX_RELEASE_NAME = 53
_RELEASE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: Manifests are listed in the order Helm applies kinds.
_KIND_ORDER = [
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Ingress",
    "NetworkPolicy",
    "ServiceMonitor",
]


def chart_dir() -> Path:
    """The model-service chart's directory."""
    return data_dir("charts") / CHART


def check_release_name(name: str) -> None:
    """Raise InputError for a release name Helm refuses."""
    if len(name) > MAX_RELEASE_NAME:
        raise InputError(f"release name {name!r} is {len(name)} characters long; Helm allows {MAX_RELEASE_NAME}")
    if not _RELEASE.match(name):
        raise InputError(f"release name {name!r} must be lowercase letters, digits and '-' (a DNS label)")


def chart_values(config: ServiceConfig, image: ImageRef) -> dict[str, Any]:
    """The chart's values for a service: everything the chart needs, from mlctl.yaml and the image.

    The driver pin (``resources.gpu.minDriverMajor``) stays 0 here: the GPU gate sets it, from the
    image's label and what the nodes say (``mlctl.deploy.plan.render``).
    """
    serving = config.serving
    resources = config.resources
    scaling = config.deploy.autoscaling
    return {
        "image": {"repository": image.repository, "tag": image.tag, "digest": image.digest or ""},
        "model": {"name": config.name},
        "serving": {
            "port": contract.port(config),
            "env": contract.chart_environment(config),
            "gracefulShutdownSeconds": int(serving.graceful_shutdown_s),
            "uid": contract.UID,
        },
        "resources": {
            "cpu": resources.cpu,
            "memory": resources.memory,
            "memoryLimit": add(resources.memory, resources.shm_size),
            "shmSize": resources.shm_size,
            "gpu": {
                "count": resources.gpu.count,
                "products": list(resources.gpu.products),
                "minDriverMajor": 0,
                "tolerateGpuTaint": True,
            },
        },
        "metrics": {"port": serving.metrics_port},
        "probes": {"startupBudgetSeconds": config.probes.startup_budget_s},
        "replicaCount": config.deploy.replicas,
        "autoscaling": {
            "enabled": scaling.enabled,
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metric": scaling.metric,
            "target": scaling.target,
        },
    }


def render_values(values: dict[str, Any], *, release: str, namespace: str) -> RenderedRelease:
    """Render the chart offline with ``values``; raises InputError listing every values problem."""
    from mlctl.adapters.helm import render_chart

    version, rendered = render_chart(chart_dir(), values, release=release, namespace=namespace)
    manifests = {
        path.rsplit("/", 1)[-1]: text
        for path, text in rendered.items()
        if text.strip() and not path.endswith("NOTES.txt")
    }
    return RenderedRelease(release, namespace, version, values, manifests)


def manifest_documents(text: str) -> list[dict[str, Any]]:
    """The YAML documents of rendered manifests (empty ones dropped)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    return [doc for doc in yaml.load_all(text) if doc]


def joined(manifests: dict[str, str]) -> str:
    """All manifests as one multi-document YAML stream, in apply order."""

    def order(item: tuple[str, str]) -> tuple[int, str]:
        kind = next((k for k in _KIND_ORDER if f"\nkind: {k}\n" in "\n" + item[1]), "")
        return (_KIND_ORDER.index(kind) if kind else len(_KIND_ORDER), item[0])

    parts = [
        f"# Source: {CHART}/templates/{name}\n{text.strip()}\n" for name, text in sorted(manifests.items(), key=order)
    ]
    return "---\n" + "---\n".join(parts)


def same_manifests(live: str, new: str) -> bool:
    """Whether two manifest streams hold the same objects (order and formatting aside)."""
    return documents_by_name(live) == documents_by_name(new)


def replaces_pods(live: str, new: str) -> bool:
    """Whether applying ``new`` over ``live`` changes a Deployment's pod template (which rolls its pods)."""
    before, after = documents_by_name(live), documents_by_name(new)
    for name, document in after.items():
        if document.get("kind") == "Deployment" and name in before:
            old = before[name]
            if (old.get("spec") or {}).get("template") != (document.get("spec") or {}).get("template"):
                return True
    return False


def documents_by_name(text: str) -> dict[str, Any]:
    """The documents of a manifest stream by ``Kind/name``."""
    return {f"{d.get('kind')}/{d.get('metadata', {}).get('name')}": d for d in manifest_documents(text)}
