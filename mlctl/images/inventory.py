"""``mlctl images list | prune``: the base layers on this machine, and which services stand on them."""

from __future__ import annotations

from mlctl.images.ladder import BASE_REPOSITORY, LABEL_LAYER, LAYERS
from mlctl.images.plan import engine
from mlctl.models import LadderImage
from mlctl.ports import ImageBuilder, LocalImage


def list_ladder_images(label: str | None = None, builder: ImageBuilder | None = None) -> list[LadderImage]:
    """The base layer images on this machine, and which service images stand on them.

    Args:
        label: Only images carrying this label (``KEY`` or ``KEY=VALUE``).
        builder: The engine (default: the local Docker engine).
    """
    with engine(builder, timeout=30) as found:
        return _ladder_images(found, label)


def prune_ladder_images(
    *, dry_run: bool = False, label: str | None = None, builder: ImageBuilder | None = None
) -> list[LadderImage]:
    """Remove the base layer images no local service image uses; returns them.

    Args:
        dry_run: Remove nothing; return what would be removed.
        label: Only consider images carrying this label (``KEY`` or ``KEY=VALUE``), e.g. the ones a
            CI job or a test run made; whether an image is in use is judged over every image.
        builder: The engine (default: the local Docker engine).
    """
    with engine(builder, timeout=120) as found:
        unused = [image for image in _ladder_images(found, label) if not image.used_by]
        # A torch layer stands on a python layer: remove children first.
        unused.sort(key=lambda image: LAYERS.index(image.layer), reverse=True)
        if not dry_run:
            for image in unused:
                found.remove(image.image)
        return unused


def _ladder_images(builder: ImageBuilder, label: str | None = None) -> list[LadderImage]:
    services = builder.list_images(f"{LABEL_LAYER}=service")
    torch_layers = builder.list_images(f"{LABEL_LAYER}=torch")
    key, has_value, value = (label or "").partition("=")
    found = []
    for layer in ("python", "torch"):
        for image in builder.list_images(f"{LABEL_LAYER}={layer}"):
            if label and (key not in image.labels or (has_value and image.labels[key] != value)):
                continue
            names = [t for t in image.tags if t.startswith(BASE_REPOSITORY.format(layer=layer) + ":")]
            names = names or list(image.tags)
            if not names:
                continue
            ref = names[0]
            if layer == "torch":
                users = [s for s in services if f"torch={ref}" in s.labels.get("mlctl.ladder", "")]
            else:
                users = [s for s in services if f"python={ref}" in s.labels.get("mlctl.ladder", "")]
                users += [t for t in torch_layers if t.labels.get("mlctl.parent") == ref and t not in users]
            used_by = sorted({u.labels.get("mlctl.service") or _base_name(u) for u in users})
            found.append(LadderImage(layer, ref, image.size, image.created, tuple(used_by)))
    return found


def _base_name(image: LocalImage) -> str:
    layer = image.labels.get(LABEL_LAYER, "")
    mine = [t for t in image.tags if t.startswith(BASE_REPOSITORY.format(layer=layer) + ":")]
    return (mine or list(image.tags) or [image.id[:19]])[0]
