"""ImageRef.parse, the one parser of image references, held to the reference grammar Docker and registries use
(the distribution project's reference package): bad references are input errors, never reach the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlctl.errors import InputError
from mlctl.models import ImageRef

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("reference", "parsed"),
    [
        (f"registry.local/team/svc:v1@{DIGEST}", ("registry.local/team/svc", "v1", DIGEST)),
        ("127.0.0.1:5000/ml-1/svc-a_b:0.1-g123-dirty", ("127.0.0.1:5000/ml-1/svc-a_b", "0.1-g123-dirty", None)),
        ("localhost:5000/x", ("localhost:5000/x", "", None)),
        ("localhost/x", ("localhost/x", "", None)),
        ("Registry.Example.com/a/b__c", ("Registry.Example.com/a/b__c", "", None)),  # hosts may have capitals
        ("demo-svc:0.1.0", ("demo-svc", "0.1.0", None)),
        ("mlctl/torch:d80e693202a0b26e", ("mlctl/torch", "d80e693202a0b26e", None)),
    ],
)
def test_references_of_the_grammar_parse(reference: str, parsed: tuple[str, str, str | None]) -> None:
    ref = ImageRef.parse(reference)
    assert (ref.repository, ref.tag, ref.digest) == parsed


@pytest.mark.parametrize(
    "reference",
    [
        "not a reference",  # spaces
        "ghcr.io/Acme/x:1",  # capitals in the path
        "UPPER/x",  # a first part without a dot or port is a path component: lowercase
        "a//b",  # an empty component
        "x:bad tag",
        "x:" + "t" * 129,  # tags hold at most 128 characters
        "-x",
        "a" * 256,  # names hold at most 255
    ],
)
def test_references_outside_the_grammar_are_input_errors(reference: str) -> None:
    with pytest.raises(InputError) as caught:
        ImageRef.parse(reference, source="--image")
    assert caught.value.message.startswith(f"--image {reference!r}: not an image reference (")


def test_deploy_refuses_a_bad_image_before_asking_anything(cli: Any, service: Path) -> None:
    # Once, a reference with spaces passed the parser and the engine's 400 came back as an internal error.
    result = cli("-C", str(service), "deploy", "--env", "staging", "--image", "not a reference")
    assert result.exit_code == InputError.exit_code
    assert result.stderr.startswith("error: --image 'not a reference': not an image reference ("), result.stderr
    assert "internal error" not in result.stderr
