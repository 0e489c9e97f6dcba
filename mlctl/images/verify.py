"""The torch layer is what its labels say: checked by running it, once, when it is built.

Resolution picks the wheel of the service's flavour (``mlctl.images.index``) and the layer's labels
say what it found; the built layer is then run, and the torch it imports must say the same:
``torch.__version__`` the exact version (``2.13.0+cu130``), ``torch.version.cuda`` the CUDA of the
flavour (None for cpu). A wheel whose file name says one build and whose content is another, or a
layer that installed something else, fails the build, and the layer's tag is removed so that no
later build reuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlctl.errors import BuildError
from mlctl.images.index import TorchWheel
from mlctl.ports import ImageBuilder

_CHECK = "import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda}))"


@dataclass(frozen=True)
class TorchFound:
    """What the torch in an image says about itself."""

    version: str
    cuda: str | None

    def describe(self) -> str:
        return f"torch {self.version} (CUDA {self.cuda or 'none: a CPU build'})"


def torch_in_image(builder: ImageBuilder, image: str) -> TorchFound:
    """Import torch in a throwaway container of ``image`` and ask it its version and CUDA.

    Raises:
        BuildError: torch does not import there.
    """
    code, output = builder.probe(image, ["python", "-W", "ignore", "-c", _CHECK], timeout=300)
    lines = [line for line in output.strip().splitlines() if line.strip()]
    try:
        data = json.loads(lines[-1]) if code == 0 and lines else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BuildError(
            f"torch does not import in {image} (exit status {code})",
            hint="its last lines:\n    " + "\n    ".join(lines[-10:]) if lines else None,
        )
    cuda = data.get("cuda")
    return TorchFound(str(data.get("version", "")), str(cuda) if cuda else None)


def verify_torch(builder: ImageBuilder, image: str, wheel: TorchWheel) -> TorchFound:
    """The torch layer ``image`` holds the torch resolution found, or it is untagged and the build fails.

    Raises:
        BuildError: naming what was expected and what the layer holds.
    """
    try:
        found = torch_in_image(builder, image)
    except BuildError:
        builder.remove(image)
        raise
    expected = TorchFound(wheel.version, wheel.cuda)
    if found != expected:
        builder.remove(image)  # a mislabelled layer must never be reused
        raise BuildError(
            f"the torch layer {image} is not what its labels say: expected {expected.describe()}, "
            f"resolved from {wheel.filename} ({wheel.source}), but it holds {found.describe()}",
            hint="the wheel's file name and its content disagree: take torch from PyTorch's own index "
            "for the flavour, or a wheelhouse filled from it",
        )
    return found
