"""How the core tells the user what it is doing without printing.

Core functions take a ``reporter`` and call it; the CLI passes one that draws rich output in a
terminal, plain lines in CI, or JSON events with ``--json``. Library users get silence by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Reporter(Protocol):
    """Progress sink handed to core functions."""

    def step(self, message: str) -> None:
        """A stage of the work begins (``rendering files``)."""

    def info(self, message: str) -> None:
        """A detail worth showing (``wrote 17 files``)."""

    def warn(self, message: str) -> None:
        """Something the user should know about; the work goes on."""

    def log(self, line: str) -> None:
        """A line of output from a tool doing the work (a build step, a push); shown live, not kept."""

    def status(self, line: str, elapsed: str = "", details: Sequence[str] = ()) -> None:
        """The current state of something long (a rollout), called again and again while it lasts.

        Args:
            line: The state (``1/2 ready (1 loading the model)``); logs get it each time it changes.
            elapsed: How long so far, against what (``42 s of a 300 s start-up budget``).
            details: One line per part (each pod), shown live in a terminal.
        """


class NullReporter:
    """Reports nothing: the default for library use."""

    def step(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def log(self, line: str) -> None:
        pass

    def status(self, line: str, elapsed: str = "", details: Sequence[str] = ()) -> None:
        pass


class RecordingReporter:
    """Keeps every event as ``(kind, message)``: for tests and for embedding mlctl."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def step(self, message: str) -> None:
        self.events.append(("step", message))

    def info(self, message: str) -> None:
        self.events.append(("info", message))

    def warn(self, message: str) -> None:
        self.events.append(("warn", message))

    def log(self, line: str) -> None:
        self.events.append(("log", line))

    def status(self, line: str, elapsed: str = "", details: Sequence[str] = ()) -> None:
        if ("status", line) != (self.events[-1] if self.events else None):
            self.events.append(("status", line))
