"""``--help`` of every command as a person reads it, and one message per bad option value."""

from __future__ import annotations

import re

import pytest

from mlctl.cli.app import COMMANDS, load_command
from mlctl.cli.help import summary
from mlctl.errors import ExitCode

#: typer's own type names, which say nothing to a user.
TYPE_NAMES = re.compile(r"<(?:str|int|float|bool|path|text|file|uuid|datetime|list\[[^\]]*\]|[a-z]+ range)>")


def every_command() -> list[list[str]]:
    """The argv prefix of every command and subcommand: ["new"], ["images", "plan"]..."""
    found = []
    for name in COMMANDS:
        command = load_command(name)
        found.append([name])
        found += [[name, sub] for sub in getattr(command, "commands", {})]
    return found


@pytest.fixture(params=[50, 60, 100], ids=lambda w: f"{w}-columns")
def columns(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("COLUMNS", str(request.param))
    return int(request.param)


def test_help_shows_plain_metavars_and_breaks_no_word_at_a_hyphen(cli, columns: int) -> None:
    for argv in [[], *every_command()]:
        result = cli(*argv, "--help")
        assert result.exit_code == 0, argv
        text = result.stdout
        assert not TYPE_NAMES.search(text), (argv, TYPE_NAMES.search(text))
        usage = text.splitlines()[0]
        assert usage.startswith("Usage: mlctl")
        assert "{" not in usage, usage  # typer writes a required argument as {NAME}
        assert not re.search(r"\bx\s*[<>]=|<=\s*x\b", text), argv  # "[1<=x<=65535]"
        assert not re.search(r"[A-Za-z0-9]-\n", text), (argv, re.search(r".*[A-Za-z0-9]-\n.*", text))
        assert "--install-completion" not in text or argv == [], argv  # offered once, by mlctl itself


def test_an_image_name_stays_whole_at_any_width(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    for width in range(50, 121):
        monkeypatch.setenv("COLUMNS", str(width))
        result = cli("deploy", "--help")
        assert "ghcr.io/acme/fraud-scorer:3f2a-g1c9d@sha256:..." in result.stdout, width


def listed(text: str) -> dict[str, str]:
    """The Commands section of a help text: name -> summary (wrapped lines joined)."""
    section = text.split("\nCommands:\n", 1)[1]
    rows: dict[str, str] = {}
    name = ""
    for line in section.splitlines():
        if re.match(r"^  \S", line):
            name, _, rest = line.strip().partition(" ")
            rows[name] = rest.strip()
        elif line.strip():
            rows[name] += " " + line.strip()
    return rows


def test_command_lists_give_each_summary_whole(cli, columns: int) -> None:
    root = listed(cli("--help").stdout)
    assert root == {name: help_ for name, (_, _, help_) in COMMANDS.items()}
    for name in ("images", "templates", "config", "ci"):
        group = load_command(name)
        shown = listed(cli(name, "--help").stdout)
        assert shown == {sub: summary(command.help or "") for sub, command in group.commands.items()}
        assert not any(text.endswith("...") for text in shown.values())


@pytest.mark.parametrize(("typo", "meant"), [(["buidl"], "build"), (["stauts"], "status"), (["images", "lst"], "list")])
def test_a_mistyped_command_gets_a_suggestion(cli, typo: list[str], meant: str) -> None:
    result = cli(*typo)
    assert result.exit_code == ExitCode.USAGE
    assert f"No such command '{typo[-1]}'. Did you mean '{meant}'?" in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--port", "80000"], "--port 80000: must be a port number from 1 to 65535"),
        (["deploy", "--port", "80000"], "--port 80000: must be a port number from 1 to 65535"),
        (["deploy", "--target", "local", "-p", "http"], "--port http: must be a port number from 1 to 65535"),
        (["run", "--port", "0"], "--port 0: must be a port number from 1 to 65535"),
        (["doctor", "--timeout", "0"], "--timeout 0: must be a number of seconds greater than 0"),
        (["deploy", "--timeout", "-1"], "--timeout -1: must be a number of seconds greater than 0"),
        (["rollback", "--timeout", "soon"], "--timeout soon: must be a number of seconds greater than 0"),
        (["bench", "http://x", "--timeout", "nan"], "--timeout nan: must be a number of seconds greater than 0"),
        (["bench", "http://127.0.0.1:9", "-c", "two"], "--concurrency two: must be a whole number of at least 1"),
        (["logs", "--tail", "-3"], "--tail -3: must be a whole number of at least 0"),
    ],
)
def test_one_message_and_one_exit_code_per_option_value(cli, argv: list[str], message: str) -> None:
    """The same value of the same option is refused the same way by every command, before anything runs."""
    result = cli(*argv)
    assert (result.exit_code, result.stderr) == (ExitCode.INPUT, f"error: {message}\n")
    json_result = cli("--json", *argv)
    assert json_result.exit_code == ExitCode.INPUT
    assert f'"message": "{message}"' in json_result.stdout
