"""The command itself: start-up cost, global options, exit codes, completion."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from mlctl import __version__
from mlctl.errors import ExitCode

HEAVY = ("torch", "docker", "kubernetes", "helm_python", "git", "pydantic", "jinja2", "ruamel")


def test_importing_the_cli_leaves_heavy_packages_out() -> None:
    code = f"import sys, mlctl.cli.app; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_help_loads_no_heavy_package_either() -> None:
    code = (
        "import sys\nfrom mlctl.cli.app import run_cli\nrun_cli(['--help'])\n"
        f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED=\n" in done.stdout + "\n"


def test_version(cli) -> None:
    result = cli("--version")
    assert (result.exit_code, result.stdout) == (0, f"mlctl {__version__}\n")


def test_python_dash_m_and_console_script_agree() -> None:
    done = subprocess.run([sys.executable, "-m", "mlctl", "--version"], capture_output=True, text=True)
    assert done.stdout == f"mlctl {__version__}\n"


def test_help_lists_every_command_and_the_exit_codes(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("new", "run", "doctor", "templates", "config"):
        assert f"\n  {command} " in result.stdout
    assert "Exit codes: 0 ok, 1 failure, 2 usage, 3 config, 4 input, 5 conflict, 6 environment," in result.stdout
    assert "[env var: MLCTL_JSON]" in result.stdout


def test_usage_error_exits_2(cli) -> None:
    result = cli("new", "x", "--bogus")
    assert result.exit_code == ExitCode.USAGE
    assert "No such option: --bogus" in result.stderr


def test_no_arguments_shows_help(cli) -> None:
    result = cli()
    assert result.exit_code == ExitCode.USAGE
    assert "Usage: mlctl" in result.stdout + result.stderr


def test_project_dir_must_exist(cli) -> None:
    result = cli("-C", "nowhere", "config", "validate")
    assert result.exit_code == ExitCode.INPUT
    assert result.stderr == "error: -C nowhere: no such directory\n"


def test_project_dir_runs_as_if_started_there(cli, service) -> None:
    result = cli("-C", "demo-svc", "config", "validate")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "valid: mlctl.yaml for service demo-svc (environments: dev, staging, prod)\n"


def test_project_dir_from_the_environment(cli, service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCTL_PROJECT_DIR", "demo-svc")
    assert cli("config", "validate").exit_code == 0


def test_json_errors_carry_the_exit_code_and_hint(cli) -> None:
    result = cli("--json", "new", "Bad_Name")
    assert result.exit_code == ExitCode.INPUT
    assert json.loads(result.stdout) == {
        "error": {
            "type": "InputError",
            "exit_code": 4,
            "message": "invalid service name 'Bad_Name': contains '_'; use '-' between words",
            "hint": "try 'bad-name'",
        }
    }


def test_json_errors_carry_what_their_class_carries(cli, service) -> None:
    """Each error says in its own to_data() what --json prints of it: a config error its problems with
    file, line and key; the chart's values error every values problem."""
    path = service / "mlctl.yaml"
    path.write_text(path.read_text().replace("  max_batch_size: 16", "  max_batch_size: 0"))
    config = json.loads(cli("-C", str(service), "--json", "config", "validate").stdout)["error"]
    assert (config["type"], config["exit_code"]) == ("ConfigError", 3)
    [problem] = config["problems"]
    assert (problem["file"], problem["key"]) == ("mlctl.yaml", "serving.max_batch_size")
    assert problem["line"] > 0
    path.write_text(path.read_text().replace("  max_batch_size: 0", "  max_batch_size: 16"))
    image = "demo-svc:v1@sha256:" + "a" * 64
    values = json.loads(
        cli("-C", str(service), "--json", "render", "--image", image, "--set", "replicaCount=-1").stdout
    )
    assert values["error"]["type"] == "ValuesError"
    assert values["error"]["problems"] == ["replicaCount: minimum: got -1, want 0"]


def test_json_from_the_environment(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCTL_JSON", "1")
    result = cli("templates", "list")
    assert [t["name"] for t in json.loads(result.stdout)] == ["pytorch-generate", "pytorch-predict"]


def test_user_errors_print_no_traceback_but_debug_does(cli) -> None:
    plain = cli("new", "Bad_Name")
    assert "Traceback" not in plain.stderr
    debug = cli("--debug", "new", "Bad_Name")
    assert debug.exit_code == ExitCode.INPUT
    assert "Traceback (most recent call last)" in debug.stderr
    assert "mlctl/scaffold/create.py" in debug.stderr


def test_a_bug_is_reported_as_internal_error_exit_1(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlctl.scaffold.templates as templates

    def broken() -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(templates, "list_templates", broken)
    result = cli("templates", "list")
    assert result.exit_code == ExitCode.FAILURE
    assert result.stderr == (
        "error: internal error: ZeroDivisionError: boom\n"
        "hint: this is a bug in mlctl; rerun with --debug for the traceback and report it\n"
    )


def test_shell_completion_completes_commands() -> None:
    env = {**os.environ, "_MLCTL_COMPLETE": "complete_bash", "COMP_WORDS": "mlctl te", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "mlctl"], env=env, capture_output=True, text=True)
    assert "templates" in done.stdout.split()


def test_show_completion_prints_a_script() -> None:
    env = {**os.environ, "SHELL": "/bin/bash"}
    done = subprocess.run(
        [sys.executable, "-m", "mlctl", "--show-completion", "bash"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "_MLCTL_COMPLETE" in done.stdout


def test_exit_codes_are_stable() -> None:
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0,
        "FAILURE": 1,
        "USAGE": 2,
        "CONFIG": 3,
        "INPUT": 4,
        "CONFLICT": 5,
        "ENVIRONMENT": 6,
        "BUILD": 7,
        "DEPLOY": 8,
        "CLUSTER": 9,
        "ROLLBACK": 10,
        "INTERRUPTED": 130,
    }


def _in_a_terminal(*args: str, env: dict[str, str]) -> str:
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "mlctl", *args], env=env, encoding="utf-8", timeout=30)
    output = child.read()
    child.close()
    return output


def test_colour_in_a_terminal_and_none_with_no_color() -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM", "CI")}
    coloured = _in_a_terminal("templates", "list", env={**base, "TERM": "xterm-256color"})
    assert "\x1b[" in coloured
    plain = _in_a_terminal("templates", "list", env={**base, "TERM": "xterm-256color", "NO_COLOR": "1"})
    assert "\x1b[" not in plain
    assert "pytorch-predict" in plain


def test_the_lazy_command_list_matches_each_command() -> None:
    """--help lists commands without loading them; what it says must be what each command says."""
    import typer

    from mlctl.cli.app import COMMANDS, load_command

    for name, (_, _, short) in COMMANDS.items():
        command = load_command(name)
        assert isinstance(command, typer.core.TyperGroup | typer.core.TyperCommand)
        first_line = (command.help or "").strip().splitlines()[0]
        assert first_line == short, name


class _SlowModel(http.server.BaseHTTPRequestHandler):
    """Answers POST /predict after a short pause (a model at work); everything else is 404."""

    posted = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).posted.set()
        time.sleep(0.05)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("json_flag", [False, True], ids=["plain", "json"])
def test_ctrl_c_during_a_command_says_interrupted_and_exits_130(isolated, json_flag: bool) -> None:
    """A real SIGINT to a real mlctl process, in the middle of a long command (a 2-minute load test)."""
    _SlowModel.posted = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    body = isolated / "body.json"
    body.write_text("{}")
    url = f"http://127.0.0.1:{server.server_address[1]}/predict"
    argv = [*(["--json"] if json_flag else []), "bench", url, "--body", str(body), "-c", "1", "-d", "120"]
    process = subprocess.Popen(
        [sys.executable, "-m", "mlctl", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _SlowModel.posted.wait(60), "the load test never sent a request"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        server.shutdown()
    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert stderr.endswith("\ninterrupted\n"), stderr
    assert "Traceback" not in stderr
    if json_flag:
        assert json.loads(stdout) == {
            "error": {"type": "Interrupted", "exit_code": 130, "message": "interrupted", "hint": None}
        }
    else:
        assert stdout == ""
