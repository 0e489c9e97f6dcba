"""``mlctl new``: a template plus answers becomes a service directory, atomically.

Files are rendered in memory first, written to a temporary directory beside the target, committed
to git there, and only then moved into place with one ``rename``. On any failure (including
Ctrl-C) the temporary directory and any parent directories we created are removed: nothing is
left half-written.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlctl.errors import ConfigError, ConflictError, InputError, TemplateError
from mlctl.files import umask
from mlctl.models import AnswerValue, PlannedFile, ScaffoldResult
from mlctl.names import service_name_problem, suggest_service_name
from mlctl.reporting import NullReporter, Reporter
from mlctl.scaffold.templates import Question, Template, answer_problem, find_template, remember, render_context

if TYPE_CHECKING:
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

    resolved = _resolve_answers(tmpl, given, ask)
    reporter.step(f"rendering {tmpl.name} {tmpl.version}")
    files = render_template(tmpl, name, resolved)
    config = _check_rendered_config(tmpl, files)
    if ci is not None:
        from mlctl.ci.core import ci_path, render_ci

        files.append(RenderedFile(ci_path(ci), render_ci(config, ci).encode("utf-8"), False))
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
    )
    if dry_run:
        return result

    commit = _write_atomically(target, files, git=git, reporter=reporter, message=_commit_message(tmpl, name))
    remember(tmpl)  # `mlctl update` re-renders this version later
    return dataclasses.replace(result, git_commit=commit)


def render_template(template: Template, name: str, answers: Mapping[str, AnswerValue]) -> list[RenderedFile]:
    """Render every file of ``template`` in memory, in a sandbox with ``StrictUndefined``."""
    from jinja2 import StrictUndefined
    from jinja2 import TemplateError as JinjaError
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
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
        except JinjaError as exc:
            line = getattr(exc, "lineno", None)
            where = f"{relative}:{line}" if line else relative
            raise TemplateError(f"template {template.name} failed to render {where}: {exc}") from None
        if not path or path.endswith("/"):
            continue  # a file whose name renders empty is left out on purpose
        executable = bool(source.stat().st_mode & stat.S_IXUSR)
        out.append(RenderedFile(path, content, executable))
    return out


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
            raise InputError(f"--set {key}={value}: {key} {exc}", hint=question.help) from None
    return parsed


def _resolve_answers(template: Template, given: dict[str, AnswerValue], ask: Ask | None) -> dict[str, AnswerValue]:
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment()
    answers: dict[str, AnswerValue] = {}
    for question in template.manifest.questions:
        asked = question.when is None or bool(env.compile_expression(question.when)(**answers))
        if question.name in given:
            answers[question.name] = given[question.name]
        elif asked and ask is not None:
            answers[question.name] = ask(question, question.default)
        elif question.default is not None:
            answers[question.name] = question.parse(question.default)
        else:
            raise InputError(
                f"template {template.name!r} needs an answer for {question.name!r} ({question.help})",
                hint=f"pass --set {question.name}=VALUE",
            )
    return answers


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


def _write_atomically(
    target: Path, files: list[RenderedFile], *, git: bool, reporter: Reporter, message: str
) -> str | None:
    created_parents = _missing_parents(target)
    staging: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.mlctl-", dir=target.parent))
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
        # rename() replaces an empty directory atomically on POSIX.
        os.replace(staging, target)
        staging = None
        return commit
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for parent in created_parents:
            try:
                parent.rmdir()
            except OSError:
                break
        raise


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
        "python -m pip install -e '.[test]'",
        "python -m pytest",
        "mlctl run",
    )
