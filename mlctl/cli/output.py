"""Everything the CLI writes: results on stdout, progress and errors on stderr.

Three modes, chosen once per run:

* terminal: rich output with colour (``NO_COLOR`` turns colour off);
* plain: the same words without decoration, when stdout is not a terminal (CI logs);
* JSON (``--json`` / ``MLCTL_JSON=1``): the result object on stdout as JSON; progress as JSON
  lines on stderr; errors as a JSON object on stdout.

rich loads only when something is printed, so ``mlctl --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer

from mlctl.errors import MlctlError

if TYPE_CHECKING:
    from rich.console import Console

    from mlctl.config import LoadedConfig


#: Variables that mean "running in CI": no prompts, plain output.
CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL", "TF_BUILD")


def running_in_ci(environ: dict[str, str] | None = None) -> bool:
    """Whether a CI system's variable is set (then there are no prompts and output is plain)."""
    env = os.environ if environ is None else environ
    return any(env.get(v, "").lower() not in ("", "0", "false", "no") for v in CI_VARIABLES)


class State:
    """One run of ``mlctl``: its global options, its output, the service config.

    One run of ``mlctl``: the global options (set by the root callback), its output, and the
    service config, loaded once and announced once (``config``).
    """

    def __init__(self, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> None:
        self.json = False
        self.debug = False
        self.no_input = False
        #: The command being run (``build``), which names its log file.
        self.command = "mlctl"
        self.stdout = stdout
        self.stderr = stderr
        self._output: Output | None = None
        self._configs: dict[str | None, LoadedConfig] = {}
        self._announced: set[str] = set()

    def output(self, json_flag: bool = False) -> Output:
        """The run's output (``--json`` given to the command itself switches it to JSON)."""
        if json_flag:
            self.json = True
        if self._output is None or self._output.json != self.json:
            self._output = Output(
                json=self.json,
                debug=self.debug,
                no_input=self.no_input,
                stdout=self.stdout or sys.stdout,
                stderr=self.stderr or sys.stderr,
                command=self.command,
            )
        return self._output

    def config(self, env: str | None = None) -> LoadedConfig:
        """The service's mlctl.yaml with ``env`` applied, loaded once per environment.

        The service's mlctl.yaml with ``env`` applied, loaded once per environment; every
        ``MLCTL_CONFIG__*`` override is announced on stderr, once, whichever command reads the config.
        """
        if env not in self._configs:
            import json

            from mlctl.config import load_service_config

            loaded = load_service_config(env=env)
            reporter = self.output().reporter()
            for o in loaded.overrides:
                if o.variable in self._announced:
                    continue
                self._announced.add(o.variable)
                before = "not set" if o.file_value is None else json.dumps(o.file_value)
                reporter.warn(f"{o.variable} overrides {o.key} (mlctl.yaml: {before}, now: {json.dumps(o.value)})")
            self._configs[env] = loaded
        return self._configs[env]


def state_of(ctx: typer.Context) -> State:
    """The run's ``State`` (made on first use, e.g. when a command runs without the root callback)."""
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State()
        ctx.find_root().obj = obj
    return obj


class Output:
    """Writes results, progress and errors in the run's mode: the one reporting context of a run.

    Progress goes through one reporter (``reporter()``), which is closed (a live pane cleared)
    before the result or an error is written.
    """

    def __init__(
        self, *, json: bool, debug: bool, no_input: bool, stdout: IO[str], stderr: IO[str], command: str = "mlctl"
    ) -> None:
        self.json = json
        self.debug = debug
        self.no_input = no_input
        self.stdout = stdout
        self.stderr = stderr
        self.command = command
        self._console: Console | None = None
        self._err_console: Console | None = None
        self._reporter: _ConsoleReporter | _JsonReporter | None = None

    # --- consoles ---------------------------------------------------------------------------------

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = _make_console(self.stdout)
        return self._console

    @property
    def err_console(self) -> Console:
        if self._err_console is None:
            self._err_console = _make_console(self.stderr)
        return self._err_console

    @property
    def interactive(self) -> bool:
        """May we prompt? Only with a terminal on both ends, outside CI, without --no-input/--json."""
        return (
            not self.no_input and not self.json and not running_in_ci() and _isatty(sys.stdin) and _isatty(self.stdout)
        )

    def why_no_prompts(self) -> str:
        """Why ``interactive`` is false, in words ("no terminal", "--no-input"...)."""
        if self.json:
            return "--json"
        if self.no_input:
            return "--no-input"
        if running_in_ci():
            return "CI is set"
        if not _isatty(sys.stdin):
            return "no terminal to ask in"
        return "output is not a terminal"

    # --- results ----------------------------------------------------------------------------------

    def result(self, value: Any, render: Callable[[Console], None]) -> None:
        """Print a command's result: as JSON, or by calling ``render`` with the stdout console."""
        self.close()
        if self.json:
            import json

            from mlctl.models import to_data

            self.stdout.write(json.dumps(to_data(value), indent=2, sort_keys=False) + "\n")
            self.stdout.flush()
        else:
            render(self.console)

    def reporter(self) -> _ConsoleReporter | _JsonReporter:
        """The run's progress reporter (the same one each time)."""
        if self._reporter is None:
            self._reporter = (
                _JsonReporter(self.stderr)
                if self.json
                else _ConsoleReporter(self.err_console, debug=self.debug, log_file=LogFile(self.command))
            )
        return self._reporter

    def close(self) -> None:
        """End live progress (a terminal's pane), so that what follows prints below it."""
        if self._reporter is not None:
            self._reporter.close()

    # --- errors -----------------------------------------------------------------------------------

    def error(self, exc: MlctlError) -> None:
        self.close()
        if self.json:
            import json

            self.stdout.write(json.dumps({"error": exc.to_data()}, indent=2) + "\n")
            self.stdout.flush()
        else:
            for line, quote in zip(exc.lines(), exc.quotes(), strict=False):
                self.err_console.print(f"[bold red]error:[/] {_escape(line)}", highlight=False)
                for quoted in quote:
                    self.err_console.print(quoted, markup=False, highlight=False)
            for finding in getattr(exc, "findings", ()):
                self.err_console.print(f"[bold red]why:[/] {_escape(finding.message)}", highlight=False)
                self.err_console.print(f"     [yellow]fix:[/] {_escape(finding.hint)}", highlight=False)
            if exc.hint:
                self.err_console.print(f"[yellow]hint:[/] {_escape(exc.hint)}", highlight=False)
            log = self._reporter.log_file.path if isinstance(self._reporter, _ConsoleReporter) else None
            if log is not None:
                self.err_console.print(f"full output: {log}", markup=False, highlight=False)
        if self.debug:
            self.traceback(exc)

    def bug(self, exc: BaseException) -> None:
        self.close()
        message = f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]
        hint = "this is a bug in mlctl; rerun with --debug for the traceback and report it"
        if self.json:
            import json

            self.stdout.write(
                json.dumps({"error": {"type": "InternalError", "exit_code": 1, "message": message, "hint": hint}})
                + "\n"
            )
        else:
            self.err_console.print(f"[bold red]error:[/] {_escape(message)}", highlight=False)
            if not self.debug:
                self.err_console.print(f"[yellow]hint:[/] {hint}", highlight=False)
        if self.debug:
            self.traceback(exc)

    def traceback(self, exc: BaseException) -> None:
        import traceback

        # The plain traceback module never prints local variables (CI logs may hold tokens).
        self.stderr.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        self.stderr.flush()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _make_console(stream: IO[str]) -> Console:
    from rich.console import Console

    # soft_wrap: a line of ours is never broken in two (log readers and tests grep for whole lines).
    # emoji=False: rich would turn ":x:" in text we relay (a build's "app:x:10001:") into an emoji.
    # NO_COLOR: rich alone would drop colours but keep bold; we drop every escape sequence.
    if os.environ.get("NO_COLOR"):
        return Console(file=stream, highlight=False, soft_wrap=True, emoji=False, color_system=None)
    return Console(file=stream, highlight=False, soft_wrap=True, emoji=False)


#: The longest line of a tool's output (a build step) a log shows whole; longer ones are cut there and
#: kept whole in the log file (a build's LABEL step runs to a few KB).
LOG_LINE_LIMIT = 200
#: Log files kept in the cache; older ones are removed when a new one is made.
LOG_FILES_KEPT = 20


class LogFile:
    """Every line of a tool's output during one run, whole: made on the first line, in the cache's ``logs/``."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.path: Path | None = None
        self._handle: IO[str] | None = None
        self._failed = False

    def write(self, line: str) -> bool:
        """Add ``line``; True the first time (when the file is made, so its path can be said)."""
        made = False
        if self._handle is None and not self._failed:
            try:
                made = self.path is None
                self._handle = self._open()
            except OSError:
                self._failed = True  # a read-only cache: the output is shown, only not kept
                return False
        if self._handle is not None:
            self._handle.write(line + "\n")
            self._handle.flush()
        return made

    def _open(self) -> IO[str]:
        if self.path is not None:
            return self.path.open("a", encoding="utf-8")
        import time

        from mlctl.resources import cache_dir

        folder = cache_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.path = folder / f"{self.command}-{stamp}-{os.getpid()}.log"
        handle = self.path.open("a", encoding="utf-8")
        old = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)[:-LOG_FILES_KEPT]
        for path in old:
            path.unlink(missing_ok=True)
        return handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def shorten_line(line: str, limit: int = LOG_LINE_LIMIT) -> str:
    """``line``, or its start and how long it was when it is longer than ``limit``."""
    if len(line) <= limit:
        return line
    return f"{line[:limit].rstrip()}... ({len(line) - limit} more characters)"


class _ConsoleReporter:
    """Progress for people: steps as lines, tool output as a live pane.

    Steps as lines; tool output (``log``) as a live pane of its last lines in a terminal, and as its
    ``Step n/m`` lines only in logs (a CI log gets the progress, not every line pip prints), long
    ones shortened. Every line of tool output goes whole to a log file whose path is said once; with
    ``--debug`` every line is also shown whole.
    """

    PANE_LINES = 8

    def __init__(self, console: Console, *, debug: bool = False, log_file: LogFile | None = None) -> None:
        self.console = console
        self.debug = debug
        self.log_file = log_file or LogFile("mlctl")
        self._live: Any = None
        self._pane: list[str] = []
        self._last_status = ""

    def _close_pane(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._pane = []

    def step(self, message: str) -> None:
        self._close_pane()
        self.console.print(f"[cyan]•[/] {_escape(message)}", highlight=False)

    def log(self, line: str) -> None:
        if self.log_file.write(line):
            self.info(f"full output: {self.log_file.path}")
        if self.debug:
            self._close_pane()
            self.console.print(f"  {line}", markup=False, highlight=False)
            return
        if not self.console.is_terminal:
            if " Step " in f" {line}" or line.startswith("[push]"):
                self.console.print(f"  {shorten_line(line)}", markup=False, highlight=False)
            return
        from rich.live import Live
        from rich.text import Text

        width = max(self.console.width - 4, 20)
        shown = line if len(line) <= width else line[: width - 3] + "..."
        self._pane = [*self._pane[-(self.PANE_LINES - 1) :], shown]
        text = Text("\n".join(f"  {entry}" for entry in self._pane), style="dim")
        if self._live is None:
            self._live = Live(text, console=self.console, refresh_per_second=8, transient=True)
            self._live.start()
        else:
            self._live.update(text)

    def status(self, line: str, elapsed: str = "", details: Sequence[str] = ()) -> None:
        if not self.console.is_terminal:
            if line != self._last_status:  # a CI log gets each change once, with the time it happened
                self._last_status = line
                self.console.print(f"  {line}" + (f" ({elapsed})" if elapsed else ""), markup=False, highlight=False)
            return
        from rich.live import Live
        from rich.text import Text

        text = Text(f"  {line}" + (f", {elapsed}" if elapsed else ""), style="cyan")
        for detail in details:
            text.append(f"\n    {detail[: self.console.width - 6]}", style="dim")
        if self._live is None:
            self._live = Live(text, console=self.console, refresh_per_second=8, transient=True)
            self._live.start()
        else:
            self._live.update(text)

    def info(self, message: str) -> None:
        self._close_pane()
        self.console.print(f"  {_escape(message)}", highlight=False)

    def warn(self, message: str) -> None:
        self._close_pane()
        self.console.print(f"[yellow]warning:[/] {_escape(message)}", highlight=False)

    def close(self) -> None:
        self._close_pane()
        self.log_file.close()


class _JsonReporter:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._last_status = ""

    def _event(self, kind: str, message: str) -> None:
        import json

        self.stream.write(json.dumps({"event": kind, "message": message}) + "\n")
        self.stream.flush()

    def step(self, message: str) -> None:
        self._event("step", message)

    def info(self, message: str) -> None:
        self._event("info", message)

    def warn(self, message: str) -> None:
        self._event("warn", message)

    def log(self, line: str) -> None:
        self._event("log", line)

    def status(self, line: str, elapsed: str = "", details: Sequence[str] = ()) -> None:
        if line != self._last_status:
            self._last_status = line
            self._event("status", line + (f" ({elapsed})" if elapsed else ""))

    def close(self) -> None:
        pass


def print_table(console: Console, headers: list[str] | None, rows: list[list[str]]) -> None:
    """Aligned plain columns (like kubectl): no box lines, no wrapping, no trailing spaces."""
    table = [headers, *rows] if headers else rows
    widths = [max(len(str(cell)) for cell in column) for column in zip(*table, strict=False)]
    for i, row in enumerate(table):
        line = "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        bold = headers is not None and i == 0
        console.print(f"[bold]{_escape(line)}[/]" if bold else line, markup=bold, highlight=False)
