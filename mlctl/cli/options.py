"""The options several commands share, declared once.

Each is an ``Annotated`` type for a command's parameter. The four that say where a release lives
(``--env``, ``--release``, ``--namespace``, ``--context``) come together: ``@target_options`` adds
them to a command and hands it one ``TargetArgs``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from mlctl.cli.output import State
    from mlctl.deploy.target import Target

JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print the result as JSON on stdout (same as the global --json, MLCTL_JSON=1)."),
]
EnvOption = Annotated[
    str | None,
    typer.Option("--env", "-e", envvar="MLCTL_ENV", metavar="ENV", help="Apply the overrides of environments.ENV."),
]

# --- building ---------------------------------------------------------------------------------------------

RootOption = Annotated[
    str | None,
    typer.Option(
        "--root",
        metavar="IMAGE",
        envvar="MLCTL_ROOT_IMAGE",
        help="Start from this local root image instead of the matrix's (air-gapped).",
    ),
]
WheelhouseOption = Annotated[
    Path | None,
    typer.Option(
        "--wheelhouse",
        metavar="DIR",
        envvar="MLCTL_WHEELHOUSE",
        help="Install Python packages from this directory of wheels (offline).",
    ),
]
PlatformOption = Annotated[str, typer.Option("--platform", help="Platform to build for: linux/amd64 or linux/arm64.")]
LabelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--label",
        metavar="KEY=VALUE",
        help="Also label the service image (e.g. ci.pipeline=1234). Repeatable; part of the image's inputs.",
    ),
]

# --- deploying --------------------------------------------------------------------------------------------

ReleaseOption = Annotated[
    str | None, typer.Option("--release", metavar="NAME", help="Helm release name.  [default: the service name]")
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        metavar="NS",
        help="Namespace.  [default: deploy.namespace in mlctl.yaml, else the kube context's]",
    ),
]
ContextOption = Annotated[
    str | None,
    typer.Option("--context", metavar="NAME", envvar="MLCTL_KUBE_CONTEXT", help="Kube context.  [default: current]"),
]
ImageOption = Annotated[
    str | None,
    typer.Option(
        "--image",
        metavar="REF",
        help="Image to deploy, REPO:TAG@sha256:...  [default: the last image `mlctl build` made here]",
    ),
]
ValuesOption = Annotated[
    list[Path] | None, typer.Option("--values", "-f", metavar="FILE", help="Extra chart values (YAML). Repeatable.")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Extra chart value (Helm syntax). Repeatable.")
]
TimeoutOption = Annotated[
    float | None,
    typer.Option("--timeout", metavar="SECONDS", help="How long to wait for the rollout.  [default: its deadline]"),
]
WaitOption = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the rollout until it is ready or fails.")]
TargetOption = Annotated[
    str | None,
    typer.Option(
        "--target",
        metavar="cluster|local",
        envvar="MLCTL_DEPLOY_TARGET",
        help="Kubernetes (a Helm release) or this machine's Docker engine.  [default: deploy.target, else cluster]",
    ),
]


@dataclass(frozen=True)
class TargetArgs:
    """``--env``, ``--release``, ``--namespace`` and ``--context`` as given."""

    env: str | None = None
    release: str | None = None
    namespace: str | None = None
    context: str | None = None

    def resolve(self, state: State) -> Target:
        """The release they name, from the service's config (loaded and announced once per run)."""
        from mlctl.deploy.target import resolve_target

        return resolve_target(
            state.config(self.env), release=self.release, namespace=self.namespace, context=self.context
        )


_TARGET_PARAMETERS = (
    ("env", EnvOption),
    ("release", ReleaseOption),
    ("namespace", NamespaceOption),
    ("context", ContextOption),
)

F = TypeVar("F", bound=Callable[..., Any])


def target_options(command: F) -> F:
    """Give a command the options that say where a release lives.

    Give a command the options that say where a release lives, as one ``where: TargetArgs``
    parameter. They are listed after the command's own options, before ``--json``.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "where"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation in _TARGET_PARAMETERS
    ]
    # The context stays first and positional; typer passes every other parameter by name.
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[1:]]
    parameters = [
        own[0],
        *(p for p in keyword if p.name != "json_"),
        *added,
        *(p for p in keyword if p.name == "json_"),
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        where = TargetArgs(*(kwargs.pop(name) for name, _ in _TARGET_PARAMETERS))
        return command(*args, where=where, **kwargs)

    del wrapper.__wrapped__  # typer reads the signature below, not the wrapped function's
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper  # type: ignore[return-value]
