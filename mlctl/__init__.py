"""mlctl: the fixed road from a PyTorch model to a GPU service.

The library comes first; the ``mlctl`` command is a thin layer over these functions. Each step
takes the typed result of the one before::

    from mlctl import build_images, deploy_service, load_service_config, resolve_image, resolve_target

    loaded = load_service_config("fraud-scorer", env="staging")
    built = build_images(loaded, push=True)          # recorded in the service for deploys
    where = resolve_target(loaded)
    deploy_service(where, resolve_image(loaded, None))

Names are imported on first use so that ``import mlctl`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "build_images",
    "deploy_service",
    "list_templates",
    "load_service_config",
    "new_service",
    "plan_run",
    "resolve_image",
    "resolve_target",
    "run_doctor",
    "serve",
    "write_runtime_wheel",
]

_LAZY = {
    "build_images": "mlctl.images.build",
    "deploy_service": "mlctl.deploy.release",
    "resolve_image": "mlctl.deploy.plan",
    "resolve_target": "mlctl.deploy.target",
    "new_service": "mlctl.scaffold.create",
    "list_templates": "mlctl.scaffold.templates",
    "load_service_config": "mlctl.config",
    "run_doctor": "mlctl.workflow.doctor",
    "plan_run": "mlctl.workflow.run",
    "serve": "mlctl.workflow.run",
    "write_runtime_wheel": "mlctl.images.wheels",
}

if TYPE_CHECKING:
    from mlctl.config import load_service_config
    from mlctl.deploy.plan import resolve_image
    from mlctl.deploy.release import deploy_service
    from mlctl.deploy.target import resolve_target
    from mlctl.images.build import build_images
    from mlctl.images.wheels import write_runtime_wheel
    from mlctl.scaffold.create import new_service
    from mlctl.scaffold.templates import list_templates
    from mlctl.workflow.doctor import run_doctor
    from mlctl.workflow.run import plan_run, serve


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlctl' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
