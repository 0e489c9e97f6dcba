"""The GPU gate: before deploying, can any node ever run a replica? Compares the request and the
image's driver floor with the nodes' allocatable GPUs and GPU Feature Discovery labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlctl.errors import DeployError

PRODUCT = "nvidia.com/gpu.product"
DRIVER_MAJOR = "nvidia.com/cuda.driver.major"


@dataclass(frozen=True)
class GateResult:
    #: Nodes that could run a replica (ignoring what other pods use now).
    nodes: tuple[str, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: The driver floor to require through node affinity (0: the nodes carry no driver labels to match).
    min_driver_major: int = 0


def gpu_gate(nodes: list[dict[str, Any]], *, gpus: int, products: list[str], min_driver: str | None) -> GateResult:
    """Raise DeployError when no node can ever run a replica; warn where the cluster cannot tell.

    Args:
        nodes: The cluster's Node objects.
        gpus: nvidia.com/gpu per replica.
        products: Allowed GPU products (empty: any).
        min_driver: The image's minimum driver version (``mlctl.min-driver``), e.g. ``"580.65.06"``.
    """
    if gpus <= 0:
        return GateResult(tuple(n["metadata"]["name"] for n in nodes))
    offered = [(n, _allocatable(n)) for n in nodes]
    gpu_nodes = [(n, count) for n, count in offered if count > 0]
    if not gpu_nodes:
        raise DeployError(
            f"no node in the cluster offers nvidia.com/gpu, and each replica asks for {gpus}",
            hint="deploy to a cluster with GPU nodes (and the NVIDIA device plugin), or set runtime.accelerator: cpu",
        )
    big_enough = [(n, c) for n, c in gpu_nodes if c >= gpus]
    if not big_enough:
        largest = max(gpu_nodes, key=lambda item: item[1])
        raise DeployError(
            f"no node has {gpus} GPUs; the largest has {largest[1]} ({_name(largest[0])})",
            hint=f"lower resources.gpu.count to at most {largest[1]}",
        )
    warnings: list[str] = []
    labelled = [n for n, _ in big_enough if PRODUCT in _labels(n)]
    candidates = [n for n, _ in big_enough]
    if products:
        if not labelled:
            warnings.append(
                "cannot check resources.gpu.products: no GPU node carries nvidia.com/gpu.product labels "
                "(GPU Feature Discovery); the scheduler will decide"
            )
        else:
            matching = [n for n in labelled if _labels(n)[PRODUCT] in products]
            if not matching:
                have = sorted({_labels(n)[PRODUCT] for n in labelled})
                raise DeployError(
                    f"no node with {gpus} GPU(s) has a GPU of type {', '.join(products)}; they have {', '.join(have)}",
                    hint="change resources.gpu.products in mlctl.yaml (or leave it empty for any GPU)",
                )
            candidates = matching
    floor = int(min_driver.split(".")[0]) if min_driver else 0
    required = 0
    if floor:
        with_driver = [n for n in candidates if DRIVER_MAJOR in _labels(n)]
        if not with_driver:
            warnings.append(
                f"cannot check the NVIDIA driver (the image needs >= {min_driver}): the GPU nodes carry no "
                "nvidia.com/cuda.driver.major labels"
            )
        else:
            able = [n for n in with_driver if _driver(n) >= floor]
            if not able:
                have = sorted({str(_driver(n)) for n in with_driver})
                raise DeployError(
                    f"the image needs an NVIDIA driver >= {min_driver} (its CUDA build); the GPU nodes run "
                    f"driver {', '.join(have)}",
                    hint="set runtime.cuda to a version the nodes' driver supports (`mlctl images matrix`), "
                    "or upgrade the nodes' driver",
                )
            candidates = able
            required = floor
    return GateResult(tuple(_name(n) for n in candidates), tuple(warnings), required)


def _name(node: dict[str, Any]) -> str:
    return str(node["metadata"]["name"])


def _labels(node: dict[str, Any]) -> dict[str, str]:
    return dict(node.get("metadata", {}).get("labels") or {})


def _allocatable(node: dict[str, Any]) -> int:
    value = ((node.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", "0")
    try:
        return int(str(value))
    except ValueError:
        return 0


def _driver(node: dict[str, Any]) -> int:
    try:
        return int(_labels(node).get(DRIVER_MAJOR, "0"))
    except ValueError:
        return 0
