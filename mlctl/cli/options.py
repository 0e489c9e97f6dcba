"""The options several commands share, declared once.

Each is an ``Annotated`` type for a command's parameter. The four that say where a release lives
(``--env``, ``--release``, ``--namespace``, ``--context``) come together: ``@target_options`` adds
them to a command and hands it one ``TargetArgs``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from mlctl.errors import InputError

if TYPE_CHECKING:
    from mlctl.cli.output import State
    from mlctl.deploy.target import Target

# --- values that several commands take, each checked in one place with one message ------------------------
# A bad value is bad input (exit 4, as a bad --set or --target is), whichever command it reaches, and
# whether it is not a number at all or out of range: "--port 80000: must be a port number from 1 to 65535".


def _number(text: str | float) -> float | None:
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def port_number(flag: str = "--port") -> Callable[[str | int], int]:
    """A parser for a TCP port (1 to 65535)."""

    def parse(text: str | int) -> int:
        value = _number(text)
        if value is None or value != int(value) or not 1 <= value <= 65535:
            raise InputError(f"{flag} {text}: must be a port number from 1 to 65535")
        return int(value)

    return parse


def seconds(flag: str = "--timeout") -> Callable[[str | float], float]:
    """A parser for a positive number of seconds."""

    def parse(text: str | float) -> float:
        value = _number(text)
        if value is None or value <= 0:
            raise InputError(f"{flag} {text}: must be a number of seconds greater than 0")
        return value

    return parse


def whole_number(flag: str, minimum: int = 0) -> Callable[[str | int], int]:
    """A parser for a whole number of at least ``minimum``."""

    def parse(text: str | int) -> int:
        value = _number(text)
        if value is None or value != int(value) or value < minimum:
            raise InputError(f"{flag} {text}: must be a whole number of at least {minimum}")
        return int(value)

    return parse


def positive_number(flag: str) -> Callable[[str | float], float]:
    """A parser for a number greater than 0."""

    def parse(text: str | float) -> float:
        value = _number(text)
        if value is None or value <= 0:
            raise InputError(f"{flag} {text}: must be a number greater than 0")
        return value

    return parse


def port_option(help_text: str) -> Any:
    """``--port/-p PORT``, with the help of the command that takes it."""
    return typer.Option("--port", "-p", metavar="PORT", parser=port_number(), help=help_text)


def timeout_option(help_text: str) -> Any:
    """``--timeout SECONDS``, with the help of the command that takes it."""
    return typer.Option("--timeout", metavar="SECONDS", parser=seconds(), help=help_text)


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
        envvar="MLCTL_ROOT",
        help="Start from this root image instead of the matrix's (air-gapped: `mlctl images root` makes one).",
    ),
]
TorchIndexOption = Annotated[
    str | None,
    typer.Option(
        "--torch-index",
        metavar="URL",
        envvar="MLCTL_TORCH_INDEX",
        help="Take torch of the service's flavour from this wheel index (a mirror) instead of the matrix's.",
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
PlatformOption = Annotated[
    str, typer.Option("--platform", metavar="PLATFORM", help="Platform to build for: linux/amd64 or linux/arm64.")
]
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
TimeoutOption = Annotated[float | None, timeout_option("How long to wait for the rollout.  [default: its deadline]")]
WaitOption = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the rollout until it is ready or fails.")]
AllowDowntimeOption = Annotated[
    bool,
    typer.Option(
        "--allow-downtime",
        help="Let an update that stops the old pods before new ones are ready go ahead in a protected environment.",
    ),
]
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
