"""``mlctl new``: a template plus answers becomes a service directory, atomically.

Files are rendered in memory first, written to a temporary directory beside the target, committed
to git there, and only then moved into place with one ``rename``. On any failure (including
Ctrl-C) the temporary directory and any parent directories we created are removed: nothing is
left half-written.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlctl.atomic import umask
from mlctl.errors import ConfigError, ConflictError, InputError, TemplateError
from mlctl.models import AnswerValue, DefaultAnswer, PlannedFile, ScaffoldResult
from mlctl.names import service_name_problem, suggest_service_name
from mlctl.reporting import NullReporter, Reporter
from mlctl.scaffold.templates import (
    Question,
    Template,
    answer_problem,
    find_template,
    remember,
    render_context,
    set_option,
)

if TYPE_CHECKING:
    from mlctl.adapters.gpu import GpuSighting
    from mlctl.config import ServiceConfig

DEFAULT_TEMPLATE = "pytorch-predict"

#: Asks one question interactively and returns the typed answer (the CLI draws a prompt).
Ask = Callable[[Question, AnswerValue | None], AnswerValue]


@dataclass(frozen=True)
class RenderedFile:
    """A file of a new service, rendered: its path, content and whether it is executable."""

    path: str
    content: bytes
    executable: bool


def new_service(
    name: str,
    *,
    template: str = DEFAULT_TEMPLATE,
    directory: Path | str | None = None,
    answers: Mapping[str, AnswerValue | str] | None = None,
    ask: Ask | None = None,
    git: bool = True,
    ci: str | None = "github",
    dry_run: bool = False,
    gpus: GpuSighting | None = None,
    reporter: Reporter | None = None,
) -> ScaffoldResult:
    """Scaffold a service from a template.

    Args:
        name: The service name (a DNS label: lowercase letters, digits, ``-``).
        template: The template's name (see ``mlctl templates list``).
        directory: Where to create the service (default ``./NAME``). It must not exist or be empty.
        answers: Answers to the template's questions (strings are parsed by each question's type).
        ask: Called for each question not in ``answers``; None takes the defaults (no prompts).
        git: Initialise a git repository with a first commit.
        ci: Also write the CI pipeline for this provider (github, gitlab; None: none), as
            ``mlctl ci generate`` does.
        dry_run: Render and report the files without writing anything.
        gpus: The NVIDIA GPUs of this machine, which give the accelerator question its default
            (default: looked for, cheaply, when needed; see ``mlctl.adapters.gpu.seen_gpus``).
        reporter: Receives progress events.

    Returns:
        What was (or would be) written.

    Raises:
        InputError: a bad name or answer. NotFoundError: an unknown template.
        ConflictError: the target exists and is not empty.
    """
    reporter = reporter or NullReporter()
    problem = service_name_problem(name)
    if problem:
        suggestion = suggest_service_name(name)
        raise InputError(
            f"invalid service name {name!r}: {problem}",
            hint=f"try {suggestion!r}" if suggestion else "example: fraud-scorer",
        )
    tmpl = find_template(template)
    given = _parse_given(tmpl, answers or {})
    target = Path(directory) if directory is not None else Path(name)
    target = target.absolute()
    _check_target(target)

    machine = _Machine(gpus)
    resolved, defaults = _resolve_answers(tmpl, given, ask, machine)
    notes = _notes(tmpl, resolved, machine)
    for note in notes:
        reporter.warn(note)
    reporter.step(f"rendering {tmpl.name} {tmpl.version}")
    files = render_template(tmpl, name, resolved)
    config = _check_rendered_config(tmpl, files)
    if ci is not None:
        from mlctl.ci.pipeline import ci_path, render_ci

        files.append(RenderedFile(ci_path(ci), render_ci(config, ci).encode("utf-8"), False))
    _check_rendered_files(tmpl, files)
    planned = tuple(PlannedFile(f.path, len(f.content), f.executable) for f in files)
    result = ScaffoldResult(
        name=name,
        path=str(target),
        template=tmpl.name,
        template_version=tmpl.version,
        answers=resolved,
        files=planned,
        dry_run=dry_run,
        next_steps=_next_steps(target),
        defaults=tuple(defaults),
        notes=tuple(notes),
    )
    if dry_run:
        return result

    commit = _write_atomically(target, files, git=git, reporter=reporter, message=_commit_message(tmpl, name))
    remember(tmpl)  # `mlctl update` re-renders this version later
    return dataclasses.replace(result, git_commit=commit)


def render_template(
    template: Template, name: str, answers: Mapping[str, AnswerValue], *, strict: bool = True
) -> list[RenderedFile]:
    """Render every file of ``template`` in memory, in a sandbox with ``StrictUndefined``.

    With ``strict`` (the default), a free-text answer written without an escaping filter is a
    TemplateError; ``mlctl update`` renders old template versions, written before the filters
    existed, with ``strict=False``.
    """
    from jinja2 import StrictUndefined
    from jinja2 import TemplateError as JinjaError
    from jinja2.sandbox import SandboxedEnvironment

    from mlctl.scaffold.escape import FILTERS, RawAnswerError, refuse_raw

    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=refuse_raw if strict else None,
    )
    env.filters.update(FILTERS)
    context = render_context(template, name, dict(answers))
    out: list[RenderedFile] = []
    root = template.files_dir
    for source in sorted(root.rglob("*")):
        if source.is_dir() or "__pycache__" in source.parts or source.suffix == ".pyc":
            continue
        relative = source.relative_to(root).as_posix()
        try:
            path = env.from_string(relative).render(context)
            if source.suffix == ".j2":
                path = path[: -len(".j2")]
                content = env.from_string(source.read_text(encoding="utf-8")).render(context).encode("utf-8")
            else:
                content = source.read_bytes()
        except (JinjaError, RawAnswerError) as exc:
            line = getattr(exc, "lineno", None) or _template_line(exc)
            where = f"{relative}:{line}" if line else relative
            raise TemplateError(f"template {template.name} failed to render {where}: {exc}") from None
        if not path or path.endswith("/"):
            continue  # a file whose name renders empty is left out on purpose
        executable = bool(source.stat().st_mode & stat.S_IXUSR)
        out.append(RenderedFile(path, content, executable))
    return out


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised at.

    Jinja rewrites tracebacks so that the frames of a template's code carry its file's line numbers.
    """
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _parse_given(template: Template, answers: Mapping[str, AnswerValue | str]) -> dict[str, AnswerValue]:
    parsed: dict[str, AnswerValue] = {}
    for key, value in answers.items():
        question = template.question(key)
        if question is None:
            message, hint = answer_problem(template, key, str(value))
            raise InputError(message, hint=hint)
        try:
            parsed[key] = question.parse(value)
        except ValueError as exc:
            raise InputError(f"{set_option(key, value)}: {key} {exc}", hint=question.help) from None
    return parsed


class _Machine:
    """This machine's GPUs, looked for once and only when a question needs them."""

    def __init__(self, gpus: GpuSighting | None) -> None:
        self._gpus = gpus

    @property
    def gpus(self) -> GpuSighting:
        if self._gpus is None:
            from mlctl.adapters.gpu import seen_gpus

            self._gpus = seen_gpus()
        return self._gpus


def accelerator_default(gpus: GpuSighting) -> tuple[str, str]:
    """The accelerator ``mlctl new`` takes by default on a machine with ``gpus``, and why.

    ``mlctl doctor`` says the same, from the same function.
    """
    return ("cuda" if gpus.count else "cpu"), gpus.describe()


def _default(question: Question, machine: _Machine) -> tuple[AnswerValue | None, str]:
    """A question's default here, and where it comes from."""
    if question.machine == "accelerator":
        return accelerator_default(machine.gpus)
    if question.default is None:
        return None, ""
    return question.parse(question.default), "the template's default"


def _resolve_answers(
    template: Template, given: dict[str, AnswerValue], ask: Ask | None, machine: _Machine
) -> tuple[dict[str, AnswerValue], list[DefaultAnswer]]:
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment()
    answers: dict[str, AnswerValue] = {}
    defaults: list[DefaultAnswer] = []
    for question in template.manifest.questions:
        asked = question.when is None or bool(env.compile_expression(question.when)(**answers))
        if question.name in given:
            answers[question.name] = given[question.name]
            continue
        default, why = _default(question, machine)
        if asked and ask is not None:
            answers[question.name] = ask(question, default)
        elif default is not None:
            answers[question.name] = default
            if asked:  # a question that does not apply (gpu_count for cpu) is not a choice made
                defaults.append(DefaultAnswer(question.name, default, why))
        else:
            raise InputError(
                f"template {template.name!r} needs an answer for {question.name!r} ({question.help})",
                hint=f"pass --set {question.name}=VALUE",
            )
    return answers, defaults


def _notes(template: Template, answers: dict[str, AnswerValue], machine: _Machine) -> list[str]:
    """What to say about the answers: a CUDA service made on a machine where no GPU is seen is allowed."""
    notes = []
    for question in template.manifest.questions:
        if question.machine == "accelerator" and answers.get(question.name) == "cuda" and not machine.gpus.count:
            notes.append(
                f"{question.name}=cuda, but {machine.gpus.describe()}: the service is made for NVIDIA GPUs as asked; "
                "here `mlctl run` and `mlctl deploy --target local` run it on the CPU, and its image starts from "
                "a CUDA root (several GB)"
            )
    return notes


def _check_target(target: Path) -> None:
    if target.is_file() or target.is_symlink():
        raise ConflictError(f"{target} exists and is not a directory", hint="choose another --dir")
    if target.is_dir() and any(target.iterdir()):
        raise ConflictError(
            f"{target} already exists and is not empty",
            hint="choose another name or --dir, or remove that directory",
        )


def _check_rendered_config(template: Template, files: list[RenderedFile]) -> ServiceConfig:
    from mlctl.config import CONFIG_FILE, parse_config_text

    config = next((f for f in files if f.path == CONFIG_FILE), None)
    if config is None:
        raise TemplateError(f"template {template.name} renders no {CONFIG_FILE}")
    try:
        return parse_config_text(config.content.decode("utf-8"))
    except ConfigError as exc:
        raise InputError(
            f"these answers give an invalid {CONFIG_FILE}: " + "; ".join(exc.lines()),
            hint="check the --set values against `mlctl templates show " + template.name + "`",
        ) from None


def _check_rendered_files(template: Template, files: list[RenderedFile]) -> None:
    """Check that every Python, TOML, YAML and JSON file parses.

    A service is never committed broken, whatever the answers held (the escaping filters should see to
    that; this catches a template that skips them).
    """
    for f in files:
        problem = parse_problem(f.path, f.content)
        if problem:
            raise TemplateError(
                f"template {template.name} {template.version} rendered an invalid {problem}; nothing was written",
                hint="a bug in the template: an answer reached the file without its escaping filter",
            )


def parse_problem(path: str, content: bytes) -> str | None:
    """Why a rendered file does not parse as its kind (by suffix), as ``path:line: what``; None if it does."""
    suffix = Path(path).suffix
    if suffix not in (".py", ".toml", ".yaml", ".yml", ".json"):
        return None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"{path}: not UTF-8 at byte {exc.start}"
    if suffix == ".py":
        import ast

        try:
            ast.parse(text, path)
        except SyntaxError as exc:
            return f"{path}:{exc.lineno}: {exc.msg}"
        except ValueError as exc:  # NUL bytes
            return f"{path}: {exc}"
    elif suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            return f"{path}: {exc}"
    elif suffix in (".yaml", ".yml"):
        from ruamel.yaml import YAML
        from ruamel.yaml.error import MarkedYAMLError, YAMLError

        try:
            list(YAML(typ="safe", pure=True).load_all(text))
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            return f"{path}:{mark.line + 1 if mark else '?'}: {exc.problem or exc.context}"
        except YAMLError as exc:
            return f"{path}: {exc}"
    else:
        import json

        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return f"{path}:{exc.lineno}: {exc.msg}"
    return None


def _write_atomically(
    target: Path, files: list[RenderedFile], *, git: bool, reporter: Reporter, message: str
) -> str | None:
    from mlctl.atomic import interruptible

    created_parents = _missing_parents(target)
    staging: Path | None = None
    with interruptible() as interrupts:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _clean_stale_staging(target.parent, reporter)
            with interrupts.held():  # the directory exists only once its name is in `staging`
                staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
            reporter.step(f"writing {len(files)} files")
            for f in files:
                path = staging / f.path
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f.content)
                if f.executable:
                    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            commit = None
            if git:
                from mlctl.adapters.git import init_and_commit

                reporter.step("initialising git")
                made = init_and_commit(staging, message)
                if made.fallback_identity:
                    reporter.warn("git has no user.name/user.email here; the first commit is authored by 'mlctl'")
                commit = made.sha
            staging.chmod(0o755 & ~umask())
            with interrupts.held():
                # rename() replaces an empty directory atomically on POSIX.
                os.replace(staging, target)
                staging = None
            return commit
        except BaseException:
            with interrupts.held(then_raise=False):  # a second Ctrl-C must not stop the cleanup half-way
                if staging is not None:
                    _remove_tree(staging)
                for parent in created_parents:
                    try:
                        parent.rmdir()
                    except OSError:
                        break
            raise


# --- staging directories ----------------------------------------------------------------------------
# A staging directory is named after its target and the process writing it (.NAME.mlctl-PID-XXXXXXXX),
# so that one left by a process that was killed outright (SIGKILL, a power cut) is recognised by the
# next `mlctl new` in the same directory, and removed once its process is gone.

_STAGING = re.compile(r"^\.(?P<name>.+)\.mlctl-(?:(?P<pid>[0-9]+)-)?[a-z0-9_]{6,}$")
#: A staging directory whose process still seems to run but which is older than this was left by a
#: process whose number has since been reused: it is reported, not removed.
STALE_AFTER_S = 3600


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.mlctl-{os.getpid()}-"


def _clean_stale_staging(directory: Path, reporter: Reporter) -> None:
    """Remove the staging directories in ``directory`` whose ``mlctl new`` is gone; report doubtful ones."""
    import time

    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = _STAGING.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if info.st_uid != os.getuid():
            continue  # someone else's: not ours to judge
        pid = int(match["pid"]) if match["pid"] else None
        if pid == os.getpid():
            continue
        path = Path(entry.path)
        if pid is not None and not _process_alive(pid):
            _remove_tree(path)
            if path.exists():
                reporter.warn(f"could not remove {path}, left by an interrupted `mlctl new` (process {pid})")
            else:
                reporter.warn(f"removed {path}, left by an interrupted `mlctl new` (process {pid})")
        elif time.time() - info.st_mtime > STALE_AFTER_S:
            reporter.warn(f"{path} looks left by an interrupted `mlctl new`: remove it if no `mlctl new` is running")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's
    return True


def _remove_tree(path: Path) -> None:
    """Remove ``path``; retried briefly, since a git process we were interrupted in may still write to it."""
    import time

    for _ in range(50):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.1)


def _missing_parents(target: Path) -> list[Path]:
    """Parents of ``target`` that do not exist yet, deepest first."""
    missing = []
    for parent in target.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _commit_message(template: Template, name: str) -> str:
    return f"Scaffold {name} from {template.name} {template.version}\n\nCreated by `mlctl new`."


def _next_steps(target: Path) -> tuple[str, ...]:
    try:
        shown: Any = target.relative_to(Path.cwd())
    except ValueError:
        shown = target
    return (
        f"cd {shown}",
        "python -m pip install \"$(mlctl runtime wheel)\" -e '.[test]'",
        "python -m pytest",
        "mlctl run",
    )
