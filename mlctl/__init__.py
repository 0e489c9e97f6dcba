"""mlctl: the fixed road from a PyTorch model to a GPU service.

The library comes first; the ``mlctl`` command is a thin layer over these functions::

    from mlctl import new_service, load_service_config, run_doctor

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
    "run_doctor",
    "serve",
]

_LAZY = {
    "build_images": "mlctl.images.core",
    "deploy_service": "mlctl.deploy.core",
    "new_service": "mlctl.scaffold.core",
    "list_templates": "mlctl.scaffold.templates",
    "load_service_config": "mlctl.config",
    "run_doctor": "mlctl.workflow.doctor",
    "plan_run": "mlctl.workflow.run",
    "serve": "mlctl.workflow.run",
}

if TYPE_CHECKING:
    from mlctl.config import load_service_config
    from mlctl.deploy.core import deploy_service
    from mlctl.images.core import build_images
    from mlctl.scaffold.core import new_service
    from mlctl.scaffold.templates import list_templates
    from mlctl.workflow.doctor import run_doctor
    from mlctl.workflow.run import plan_run, serve


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlctl' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
