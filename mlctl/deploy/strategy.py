"""How an update replaces a release's pods: maxSurge and maxUnavailable, and whether that means downtime.

``deploy.strategy`` in mlctl.yaml says it in Kubernetes' terms. Its default (``auto``) avoids downtime
when the cluster has room: a surge pod (the new revision's, started beside the old ones) when some node
has the GPUs for one, else one replica down at a time, which for a single replica is downtime, and is
said before the update starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlctl.config import StrategyConfig

AUTO = "auto"


@dataclass(frozen=True)
class Strategy:
    """The rollout strategy a deploy gives the Deployment, and what it means for the service."""

    max_surge: int | str
    max_unavailable: int | str
    #: Every replica may be down at once during an update.
    downtime: bool = False
    #: Why, in words (for the announcement), when there is downtime or the surge pod has to wait.
    why: str = ""
    #: A surge pod is asked for but no node has the GPUs for it: it will wait for them.
    surge_waits: bool = False

    def values(self) -> dict[str, int | str]:
        """The chart's ``rollout`` values."""
        return {"maxSurge": self.max_surge, "maxUnavailable": self.max_unavailable}


def pods(value: int | str, replicas: int, *, round_up: bool) -> int:
    """A count or percentage as pods of ``replicas`` (Kubernetes rounds surge up and unavailability down)."""
    if isinstance(value, str) and value.endswith("%"):
        scaled = replicas * int(value[:-1]) / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value)


def plan_strategy(config: StrategyConfig, *, replicas: int, gpus: int, room: bool | None) -> Strategy:
    """The strategy for a release of ``replicas`` replicas asking ``gpus`` GPUs each.

    Args:
        config: ``deploy.strategy``; ``auto`` values are chosen here.
        replicas: The replicas an update replaces (the HPA's floor when autoscaling).
        gpus: GPUs per replica (0: CPU; a surge pod is then always asked for).
        room: Some node has ``gpus`` free GPUs for a surge pod (the GPU gate's count); None: unknown.
    """
    fits = gpus == 0 or room is True
    surge, unavailable = config.max_surge, config.max_unavailable
    if surge == AUTO and unavailable == AUTO:
        surge = 1 if fits else 0
        unavailable = 0 if surge else 1
    elif surge == AUTO:
        surge = 1 if fits or pods(unavailable, replicas, round_up=False) == 0 else 0
    elif unavailable == AUTO:
        unavailable = 0 if pods(surge, replicas, round_up=True) > 0 else 1
    surge_pods = pods(surge, replicas, round_up=True)
    down = pods(unavailable, replicas, round_up=False)
    if surge_pods == 0 and down == 0:
        down = 1  # as the Deployment controller resolves it (ResolveFenceposts)
    downtime = replicas > 0 and down >= replicas
    why = ""
    if downtime:
        if config.max_unavailable == AUTO and config.max_surge in (AUTO, 0, "0%"):
            free = (
                "mlctl cannot tell whether a node has a GPU free"
                if room is None
                else f"no node has {gpus} free GPU(s) for a new pod beside the old"
            )
            why = f"{free}, so the old pod stops before the new one starts"
        else:
            why = f"deploy.strategy lets {down} of its {replicas} replica(s) be down at once"
    waits = surge_pods > 0 and gpus > 0 and room is not True
    if waits and not why:
        why = f"deploy.strategy asks for a surge pod but no node has {gpus} free GPU(s) for it: it will wait for them"
    return Strategy(surge, unavailable, downtime, why, waits)
