"""What the CLI writes when it relays a tool's output (a build's steps): the text as the tool wrote it,
long lines shortened where people read them, every line whole in a log file whose path is said."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from mlctl.cli.output import LOG_LINE_LIMIT, Output
from mlctl.errors import BuildError

#: A real line of the service layer's build (base_images/service/Dockerfile.j2), as the engine sends it.
PASSWD_STEP = (
    "[service] Step 3/14 : RUN grep -q ':x:10001:' /etc/passwd || "
    "echo 'app:x:10001:10001:app:/srv:/usr/sbin/nologin' >> /etc/passwd"
)
#: A LABEL step: mlctl.inputs holds the layer's inputs as JSON, a few KB.
LABEL_STEP = "[service] Step 13/14 : LABEL mlctl.inputs='" + '{"file": "' + "ab" * 1500 + "\"}'"


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so rich draws its live pane into it (TERM must not be dumb)."""

    def isatty(self) -> bool:
        return True


def output(stderr: io.StringIO, *, debug: bool = False) -> Output:
    return Output(json=False, debug=debug, no_input=True, stdout=io.StringIO(), stderr=stderr, command="build")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TERM", "xterm")  # rich draws no live pane on a dumb terminal
    return tmp_path / "cache"


def log_file(text: str) -> Path:
    return Path(re.findall(r"full output: (\S+)", text)[0])


@pytest.mark.parametrize("stream", [io.StringIO, Terminal], ids=["log", "terminal"])
def test_relayed_lines_keep_their_text_no_emoji_no_markup(stream: type[io.StringIO]) -> None:
    err = stream()
    out = output(err)
    reporter = out.reporter()
    reporter.log(PASSWD_STEP)
    reporter.log("[service] Step 4/14 : RUN echo '[bold]not bold[/bold] :thumbs_up:'")
    out.close()
    text = err.getvalue()
    assert "grep -q ':x:10001:' /etc/passwd || echo 'app:x:10001:10001:app:" in text  # rich made it "app❌10001:"
    assert "'[bold]not bold[/bold] :thumbs_up:'" in text
    assert "\u274c" not in text
    assert "\U0001f44d" not in text


def test_errors_and_warnings_keep_their_text_too() -> None:
    err = io.StringIO()
    out = output(err)
    out.reporter().warn("user app:x:10001: exists")
    out.error(BuildError("step 3/14 exited with status 1", hint="its last lines:\n    app:x:10001:10001:app"))
    assert err.getvalue() == (
        "warning: user app:x:10001: exists\n"
        "error: step 3/14 exited with status 1\n"
        "hint: its last lines:\n    app:x:10001:10001:app\n"
    )


def test_a_long_step_is_shortened_in_a_log_and_kept_whole_in_the_log_file(cache: Path) -> None:
    err = io.StringIO()
    out = output(err)
    out.reporter().log(PASSWD_STEP)
    out.reporter().log("  some pip output that a log leaves out")
    out.reporter().log(LABEL_STEP)
    out.close()
    lines = err.getvalue().splitlines()
    path = log_file(err.getvalue())
    assert path.parent == cache / "logs"
    assert path.name.startswith("build-")
    assert lines[0] == f"  full output: {path}"  # said before the first line, so it can be followed
    assert lines[1] == f"  {PASSWD_STEP}"
    assert lines[2] == f"  {LABEL_STEP[:LOG_LINE_LIMIT]}... ({len(LABEL_STEP) - LOG_LINE_LIMIT} more characters)"
    assert len(lines) == 3
    assert path.read_text() == f"{PASSWD_STEP}\n  some pip output that a log leaves out\n{LABEL_STEP}\n"


def test_the_live_pane_cuts_long_lines_at_the_terminal_width() -> None:
    err = Terminal()
    out = output(err)
    out.reporter().log(LABEL_STEP)
    out.close()
    assert "ab" * 100 not in err.getvalue()
    assert LABEL_STEP in log_file(err.getvalue()).read_text()


def test_debug_shows_every_line_whole() -> None:
    err = io.StringIO()
    out = output(err, debug=True)
    out.reporter().log(LABEL_STEP)
    out.reporter().log("  some pip output")
    out.close()
    assert f"  {LABEL_STEP}\n" in err.getvalue()
    assert "  some pip output\n" in err.getvalue()


def test_an_error_after_tool_output_names_the_log_file() -> None:
    err = io.StringIO()
    out = output(err)
    out.reporter().log(PASSWD_STEP)
    out.error(BuildError("step 3/14 exited with status 1"))
    assert err.getvalue().endswith(f"error: step 3/14 exited with status 1\nfull output: {log_file(err.getvalue())}\n")


def test_an_unwritable_cache_shows_the_output_and_says_no_path(cache: Path) -> None:
    cache.parent.mkdir(exist_ok=True)
    cache.write_text("a file where the cache folder should be")
    err = io.StringIO()
    out = output(err)
    out.reporter().log(PASSWD_STEP)
    out.close()
    assert err.getvalue() == f"  {PASSWD_STEP}\n"


def test_log_files_are_kept_up_to_a_bound(cache: Path) -> None:
    from mlctl.cli.output import LOG_FILES_KEPT

    (cache / "logs").mkdir(parents=True)
    for i in range(LOG_FILES_KEPT + 5):
        (cache / "logs" / f"old-{i}.log").write_text("x")
    out = output(io.StringIO())
    out.reporter().log(PASSWD_STEP)
    out.close()
    assert len(list((cache / "logs").glob("*.log"))) == LOG_FILES_KEPT
