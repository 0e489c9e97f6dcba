"""``mlctl update``: move a service to a newer version of its template, keeping the team's changes.

The template version and answers recorded in ``mlctl.yaml`` are re-rendered (the base), the newer
version is rendered with the same answers (new questions take their defaults), and each file the
template changed is merged three ways with the service's own: untouched files are replaced, edited
ones are merged line by line (``git merge-file``), and where both changed the same lines the file gets
conflict markers to resolve by hand. The service must be committed first, so the update is one
reviewable, undoable change.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from mlctl.atomic import replace_file, umask
from mlctl.config import load_service_config
from mlctl.errors import ConflictError, InputError, NotFoundError
from mlctl.models import AnswerValue, FileUpdate, UpdateResult
from mlctl.reporting import NullReporter, Reporter
from mlctl.scaffold.create import render_template
from mlctl.scaffold.templates import Template, find_template, find_version, remember, version_key


@dataclass(frozen=True)
class _Planned:
    path: str
    action: str
    content: bytes | None
    executable: bool
    diff: str


def check_update(project_dir: Path | str | None = None) -> UpdateResult:
    """Whether a newer version of the service's template exists (no change is made)."""
    config = load_service_config(project_dir).config
    if config.template is None:
        raise InputError("mlctl.yaml records no template (its template: section): there is nothing to update from")
    latest = find_template(config.template.name)
    newer = version_key(latest.version) > version_key(config.template.version)
    return UpdateResult(
        config.template.name,
        config.template.version,
        latest.version,
        "update available" if newer else "up to date",
        (),
        0,
        True,
    )


def update_service(
    project_dir: Path | str | None = None, *, dry_run: bool = False, reporter: Reporter | None = None
) -> UpdateResult:
    """Merge the newest version of the service's template into it.

    Raises:
        InputError: no template recorded, or a recorded answer the new version refuses.
        ConflictError: uncommitted changes (or no git repository), unless ``dry_run``.
        NotFoundError: the recorded template version cannot be found to re-render.
    """
    from mlctl.adapters.git import is_dirty

    reporter = reporter or NullReporter()
    loaded = load_service_config(project_dir)
    directory = loaded.directory
    checked = check_update(directory)
    if checked.status == "up to date":
        return checked
    recorded = loaded.config.template
    assert recorded is not None
    if not dry_run:
        dirty = is_dirty(directory)
        if dirty is None:
            raise ConflictError(
                f"{directory} is not in a git repository: the update could not be reviewed or undone",
                hint="git init && git add -A && git commit, then update (or look first with --dry-run)",
            )
        if dirty:
            raise ConflictError(
                "the service has uncommitted changes; commit or stash them first, so the update is one change "
                "you can review (git diff) and undo",
                hint="git status shows them; --dry-run shows what the update would do",
            )
    old = find_version(recorded.name, recorded.version)
    if old is None:
        raise NotFoundError(
            f"template {recorded.name} {recorded.version} (the version this service was made from) cannot be found "
            "to re-render it",
            hint="put that version's directory on MLCTL_TEMPLATE_PATH; mlctl keeps each version it uses in its "
            "cache (MLCTL_CACHE_DIR), so this happens on a machine where it was never used",
        )
    new = find_template(recorded.name)
    name = loaded.config.name
    reporter.step(f"re-rendering {recorded.name} {recorded.version} and rendering {new.version}")
    # The base is re-rendered as it was made: versions older than the escaping filters wrote answers raw.
    base = {f.path: f for f in render_template(old, name, dict(recorded.answers), strict=False)}
    theirs = {f.path: f for f in render_template(new, name, _answers(new, dict(recorded.answers)))}
    labels = ("yours", f"{recorded.name} {recorded.version}", f"{recorded.name} {new.version}")
    planned = [
        p
        for path in sorted(set(base) | set(theirs))
        if (p := _plan(directory, path, base.get(path), theirs.get(path), labels)) is not None
    ]
    conflicts = sum(1 for p in planned if p.action == "conflict")
    result = UpdateResult(
        recorded.name,
        recorded.version,
        new.version,
        "would update" if dry_run else "updated",
        tuple(FileUpdate(p.path, p.action, p.diff) for p in planned),
        conflicts,
        dry_run,
    )
    if dry_run:
        return result
    reporter.step(f"writing {len(planned)} files")
    for plan in planned:
        _apply(directory, plan)
    remember(new)
    return result


def _answers(template: Template, recorded: dict[str, AnswerValue]) -> dict[str, AnswerValue]:
    """The recorded answers under the new version's questions: new questions take their defaults."""
    answers: dict[str, AnswerValue] = {}
    problems = []
    for question in template.manifest.questions:
        if question.name in recorded:
            try:
                answers[question.name] = question.parse(recorded[question.name])
            except ValueError as exc:
                problems.append(f"{question.name}={recorded[question.name]!r}: {exc}")
        elif question.default is not None:
            answers[question.name] = question.parse(question.default)
        else:
            problems.append(f"{question.name}: a new question with no default ({question.help})")
    if problems:
        raise InputError(
            f"{template.name} {template.version} does not take this service's answers: " + "; ".join(problems),
            hint="edit template.answers in mlctl.yaml to values the new version accepts, commit, and update again",
        )
    return answers


def _plan(
    directory: Path, path: str, base: object | None, theirs: object | None, labels: tuple[str, str, str]
) -> _Planned | None:
    from mlctl.adapters.git import merge_file

    b = getattr(base, "content", None)
    t = getattr(theirs, "content", None)
    executable = bool(getattr(theirs, "executable", False))
    target = directory / path
    ours = target.read_bytes() if target.is_file() else None
    if b == t or ours == t:
        return None  # the template did not change it, or the service already has the new version
    if ours == b:  # untouched since the template wrote it (or absent from both)
        action = "added" if b is None else "removed" if t is None else "updated"
        return _Planned(path, action, t, executable, _diff(path, ours, t))
    if ours is None:
        return _Planned(path, "skipped", None, executable, f"{path}: you deleted it; the template changed it\n")
    if t is None:
        return _Planned(path, "kept", ours, executable, f"{path}: the template dropped it; you changed it\n")
    try:
        texts = [x.decode("utf-8") for x in (ours, b or b"", t)]
    except UnicodeDecodeError:
        return _Planned(path, "conflict", ours, executable, f"{path}: binary, changed by you and the template\n")
    merged, count = merge_file(texts[0], texts[1], texts[2], labels)
    content = merged.encode("utf-8")
    return _Planned(path, "conflict" if count else "merged", content, executable, _diff(path, ours, content))


def _diff(path: str, before: bytes | None, after: bytes | None) -> str:
    try:
        old = (before or b"").decode("utf-8").splitlines(keepends=True)
        new = (after or b"").decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return f"{path}: binary file changed\n"
    return "".join(difflib.unified_diff(old, new, f"a/{path}", f"b/{path}"))


def _apply(directory: Path, plan: _Planned) -> None:
    target = directory / plan.path
    if plan.action in ("skipped", "kept"):
        return
    if plan.content is None:
        target.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode if target.exists() else 0o644 & ~umask()
    if plan.executable:
        mode |= 0o111
    replace_file(target, plan.content, mode=mode)
