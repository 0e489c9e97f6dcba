"""The GPU gate: before deploying, can any node ever run a replica?

The GPU gate: before deploying, can any node ever run a replica? Compares the request and the
image's driver floor (its ``mlctl.min-driver`` label) with the nodes' allocatable GPUs and their GPU
Feature Discovery labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlctl.errors import DeployError
from mlctl.models import ReleaseImage
from mlctl.views import Node


@dataclass(frozen=True)
class GpuRequest:
    """What one replica asks for: GPUs, the products allowed, and the image's driver floor."""

    count: int
    products: tuple[str, ...] = ()
    #: The NVIDIA driver the image needs (``mlctl.min-driver``, e.g. ``"580.65.06"``); None: unknown or CPU.
    min_driver: str | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any], image: ReleaseImage) -> GpuRequest:
        """The request in the chart values a deploy installs, and the image's driver floor.

        The request in the chart values a deploy installs (mlctl.yaml with --values/--set on top) and the
        image's label. A count the chart's schema will refuse reads as 0 here: the render reports it.
        """
        gpu = (values.get("resources") or {}).get("gpu") or {}
        count = gpu.get("count", 0)
        products = gpu.get("products") or []
        return cls(
            count if isinstance(count, int) and not isinstance(count, bool) else 0,
            tuple(str(p) for p in products) if isinstance(products, list) else (),
            image.min_driver,
        )


@dataclass(frozen=True)
class GateResult:
    """What the GPU gate found: the nodes that could run a replica, warnings, the driver pin."""

    #: Nodes that could run a replica (ignoring what other pods use now).
    nodes: tuple[str, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: The driver floor to require through node affinity (0: the nodes carry no driver labels to match).
    min_driver_major: int = 0
    #: Each node's GPUs not used by the pods on it now; None when the pods could not be read.
    free: Mapping[str, int] | None = None

    def room_for(self, gpus: int) -> bool | None:
        """Whether one more replica fits now on a node that can run one (None: unknown)."""
        if gpus <= 0:
            return True
        if self.free is None:
            return None
        return any(self.free.get(name, 0) >= gpus for name in self.nodes)


def gpu_gate(nodes: list[Node], request: GpuRequest, free: Mapping[str, int] | None = None) -> GateResult:
    """Raise DeployError when no node can ever run a replica; warn where the cluster cannot tell.

    Args:
        nodes: The cluster's nodes.
        request: What a replica asks for.
        free: Each node's GPUs not in use now (``mlctl.views.free_gpus``), kept for the rollout strategy.
    """
    gpus, products, min_driver = request.count, request.products, request.min_driver
    if gpus <= 0:
        return GateResult(tuple(n.name for n in nodes), free=free)
    gpu_nodes = [n for n in nodes if n.gpus > 0]
    if not gpu_nodes:
        raise DeployError(
            f"no node in the cluster offers nvidia.com/gpu, and each replica asks for {gpus}",
            hint="deploy to a cluster with GPU nodes (and the NVIDIA device plugin), or set runtime.accelerator: cpu",
        )
    candidates = [n for n in gpu_nodes if n.gpus >= gpus]
    if not candidates:
        largest = max(gpu_nodes, key=lambda n: n.gpus)
        raise DeployError(
            f"no node has {gpus} GPUs; the largest has {largest.gpus} ({largest.name})",
            hint=f"lower resources.gpu.count to at most {largest.gpus}",
        )
    warnings: list[str] = []
    if products:
        labelled = [n for n in candidates if n.product is not None]
        if not labelled:
            warnings.append(
                "cannot check resources.gpu.products: no GPU node carries nvidia.com/gpu.product labels "
                "(GPU Feature Discovery); the scheduler will decide"
            )
        else:
            matching = [n for n in labelled if n.product in products]
            if not matching:
                have = sorted({str(n.product) for n in labelled})
                raise DeployError(
                    f"no node with {gpus} GPU(s) has a GPU of type {', '.join(products)}; they have {', '.join(have)}",
                    hint="change resources.gpu.products in mlctl.yaml (or leave it empty for any GPU)",
                )
            candidates = matching
    floor = int(min_driver.split(".")[0]) if min_driver else 0
    required = 0
    if floor:
        with_driver = [n for n in candidates if n.driver_major is not None]
        if not with_driver:
            warnings.append(
                f"cannot check the NVIDIA driver (the image needs >= {min_driver}): the GPU nodes carry no "
                "nvidia.com/cuda.driver.major labels"
            )
        else:
            able = [n for n in with_driver if (n.driver_major or 0) >= floor]
            if not able:
                have = sorted({str(n.driver_major) for n in with_driver})
                raise DeployError(
                    f"the image needs an NVIDIA driver >= {min_driver} (its CUDA build); the GPU nodes run "
                    f"driver {', '.join(have)}",
                    hint="set runtime.cuda to a version the nodes' driver supports (`mlctl images matrix`), "
                    "or upgrade the nodes' driver",
                )
            candidates = able
            required = floor
    return GateResult(tuple(n.name for n in candidates), tuple(warnings), required, free)
