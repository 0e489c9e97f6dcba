"""What a service image is called and marked: its tag from git, extra tags, and labels of one's own."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mlctl.errors import InputError
from mlctl.models import ImageRef

#: Label keys mlctl sets itself (or Docker reserves), which ``--label`` may not replace.
_RESERVED_LABELS = re.compile(
    r"^(mlctl\.|org\.mlctl\.|com\.docker\.|io\.docker\.|org\.dockerproject\.|"
    r"org\.opencontainers\.image\.(title|version|source|revision|created)$)"
)
#: Docker's guideline for label keys: lower-case letters and digits, separated by single '.' or '-'.
_LABEL_KEY = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def source_tag(state: Any, weights: str | None = None) -> str:
    """The service image's tag for a source state (``mlctl.adapters.git.SourceState``) and its weights.

    ``<tree>-g<commit>``, plus ``-dirty-<hash>`` with uncommitted changes (``untracked-<hash>`` outside
    git), plus ``-w<12 digits of the weights' digest>`` when the image holds weights: weights made or
    downloaded rather than committed are not in the tree, and other weights make another image.
    """
    if state.tree is None or state.commit is None:
        tag = f"untracked-{state.content_hash[:12]}"
    else:
        tag = f"{state.tree[:12]}-g{state.commit[:7]}"
        if state.dirty:
            tag += f"-dirty-{state.content_hash[:12]}"
    if weights:
        tag += f"-w{weights.removeprefix('sha256:')[:12]}"
    return tag


def check_tag(tag: str) -> None:
    """An extra tag (``--tag``) as Docker allows it.

    Raises:
        InputError: naming the tag and the rule.
    """
    if not _TAG.fullmatch(tag) or ImageRef.parse(f"x:{tag}", source="--tag").tag != tag:
        raise InputError(
            f"--tag {tag}: a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        )


def parse_labels(values: Iterable[str], flag: str = "--label") -> dict[str, str]:
    """``KEY=VALUE`` arguments as a mapping; a value may be empty, a key may not be missing.

    Raises:
        InputError: an argument without ``=``.
    """
    labels: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep:
            raise InputError(f"{flag} {value}: expected KEY=VALUE (e.g. {flag} ci.pipeline=1234)")
        labels[key] = text
    return labels


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Extra labels for a service image, checked.

    Extra labels for a service image, checked: keys in Docker's recommended form and none that
    mlctl sets itself (the ladder, the inputs, the revision) or Docker reserves.

    Raises:
        InputError: naming the first bad key.
    """
    for key in labels:
        if not _LABEL_KEY.fullmatch(key):
            raise InputError(
                f"--label {key}: a label key is lower-case letters and digits separated by '.' or '-' "
                "(e.g. com.example.team)"
            )
        if _RESERVED_LABELS.match(key):
            raise InputError(f"--label {key}: mlctl or Docker sets this label itself; pick a key of your own")
    return dict(labels)
