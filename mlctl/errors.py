"""One exception tree, one set of exit codes.

Every error the core raises is an :class:`MlctlError`. Each class carries the exit code the CLI
returns for it and, where one exists, a hint that tells the user what to do next; ``to_data()`` is
the error as ``--json`` prints it. The CLI maps errors to output and exit codes in exactly one place
(``mlctl.cli.app.run_cli``).

The classes of this module are one per kind of failure (its exit code), with what each carries
(``ConfigError`` its problems, ``DeployError`` its findings). Two are declared where they arise,
beside the code that raises them: ``ValuesError`` (``mlctl.adapters.helm``), which lists every
problem of the chart's values in its ``to_data()``, and ``ServiceExited`` (``mlctl.workflow.run``).

Exit codes are part of mlctl's API: CI pipelines branch on them. Never renumber one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes of the ``mlctl`` command."""

    OK = 0
    #: An unexpected error: a bug in mlctl. Rerun with ``--debug`` for the traceback.
    FAILURE = 1
    #: The command line itself is wrong: unknown flag, missing argument.
    USAGE = 2
    #: ``mlctl.yaml`` is missing, malformed or invalid.
    CONFIG = 3
    #: Other bad input: a service name, a ``--set`` value, an unknown template.
    INPUT = 4
    #: Something is in the way: a non-empty target directory, a port in use.
    CONFLICT = 5
    #: A required tool, daemon or package is missing (see ``mlctl doctor``).
    ENVIRONMENT = 6
    #: An image build failed.
    BUILD = 7
    #: A rollout failed (and was rolled back).
    DEPLOY = 8
    #: The cluster, registry or service is unreachable, or refused the request.
    CLUSTER = 9
    #: A rollout failed and the rollback did not come up either (or ``mlctl rollback`` did not): the
    #: release is left failed, and a person has to look.
    ROLLBACK = 10
    #: Interrupted by the user (Ctrl-C).
    INTERRUPTED = 130


class MlctlError(Exception):
    """Base of every error mlctl reports to users.

    Args:
        message: One line saying what went wrong and where.
        hint: One line saying what to do about it, if we know.
    """

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        """The error as the lines a user sees (without the hint)."""
        return [self.message]

    def quotes(self) -> list[list[str]]:
        """For each of ``lines()``, what to show under it as it is (a quoted line of a file), or nothing."""
        return [[] for _ in self.lines()]

    def to_data(self) -> dict[str, Any]:
        """The error as ``--json`` prints it (under ``"error"``).

        Its type, exit code, message and hint, and what a subclass carries besides.
        """
        return {
            "type": type(self).__name__,
            "exit_code": int(self.exit_code),
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file, located by file, line (and column) and key path.

    ``source`` is the line of the file the problem is on, as written, when it is known: it is shown
    under the message, with a caret under ``column``.
    """

    file: str
    line: int | None
    key: str
    message: str
    column: int | None = None
    source: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.line and self.column:
            where += f":{self.column}"
        return f"{where} {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def quote(self) -> list[str]:
        """The file's line, numbered, and a caret under the column: what to show under the message."""
        if self.source is None or not self.line:
            return []
        number = str(self.line)
        lines = [f"  {number} | {self.source}"]
        if self.column:
            lines.append(f"  {' ' * len(number)} | {' ' * (self.column - 1)}^")
        return lines


class ConfigError(MlctlError):
    """``mlctl.yaml`` (or another config file) cannot be used. Lists every problem found."""

    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, *, problems: list[ConfigProblem] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or []

    def lines(self) -> list[str]:
        if not self.problems:
            return [self.message]
        return [str(p) for p in self.problems]

    def quotes(self) -> list[list[str]]:
        if not self.problems:
            return [[]]
        return [p.quote() for p in self.problems]

    def to_data(self) -> dict[str, Any]:
        """The error, with every problem (file, line, key, message) when there are any."""
        from mlctl.models import to_data

        data = super().to_data()
        if self.problems:
            data["problems"] = [to_data(p) for p in self.problems]
        return data


class NotAServiceError(ConfigError):
    """The command needs a service directory (one with ``mlctl.yaml``) and there is none."""


class InputError(MlctlError):
    """Bad input other than the config file: names, flags, ``--set`` values."""

    exit_code = ExitCode.INPUT


class NotFoundError(InputError):
    """Something the user named does not exist (a template, an environment)."""


class ConflictError(MlctlError):
    """Something is in the way: an existing directory, a busy port."""

    exit_code = ExitCode.CONFLICT


class EnvironmentProblem(MlctlError):
    """A required tool, daemon or package is missing or broken on this machine."""

    exit_code = ExitCode.ENVIRONMENT


class TemplateError(MlctlError):
    """A template itself is broken (its manifest or files): a bug for the template's author."""

    exit_code = ExitCode.FAILURE


class BuildError(MlctlError):
    """An image build failed."""

    exit_code = ExitCode.BUILD


class DeployError(MlctlError):
    """A deploy was refused (no node can run it) or its rollout failed.

    Args:
        findings: Why, most telling first: objects with ``kind``, ``message`` and ``hint``
            (``mlctl.deploy.explain.Finding``); shown as "why:"/"fix:" lines and in ``--json``.
    """

    exit_code = ExitCode.DEPLOY

    def __init__(self, message: str, *, hint: str | None = None, findings: Sequence[Any] = ()) -> None:
        super().__init__(message, hint=hint)
        self.findings = tuple(findings)

    def to_data(self) -> dict[str, Any]:
        """The error, with its findings (kind, message, hint, final) when there are any."""
        from mlctl.models import to_data

        data = super().to_data()
        if self.findings:
            data["findings"] = [to_data(f) for f in self.findings]
        return data


class RollbackError(DeployError):
    """A rollback did not become ready: the release is left failed (its findings say why)."""

    exit_code = ExitCode.ROLLBACK


class ClusterError(MlctlError):
    """The cluster, registry or a service is unreachable or refused a request."""

    exit_code = ExitCode.CLUSTER


class ThresholdError(MlctlError):
    """A measurement crossed a limit the user set (``mlctl bench --max-error-rate``).

    Args:
        result: What was measured; ``--json`` prints it inside the error, so that the output stays
            one JSON document.
    """

    exit_code = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None, result: Any = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result

    def to_data(self) -> dict[str, Any]:
        """The error, with the result that crossed the limit when it has one."""
        from mlctl.models import to_data

        data = super().to_data()
        if self.result is not None:
            data["result"] = to_data(self.result)
        return data
