"""Service templates: discovery, manifests (``template.yaml``) and their questions.

A template is a directory holding ``template.yaml`` and a ``files/`` tree. Templates are found in
the directories of ``MLCTL_TEMPLATE_PATH`` (``os.pathsep``-separated, searched first) and then
among mlctl's built-in templates.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlctl.errors import ConfigProblem, NotFoundError, TemplateError
from mlctl.models import AnswerValue, QuestionInfo, TemplateInfo
from mlctl.resources import data_dir

MANIFEST = "template.yaml"
TEMPLATE_PATH_ENV = "MLCTL_TEMPLATE_PATH"
_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}
#: The longest answer to a ``str`` question whose manifest sets no ``max_length``.
MAX_ANSWER_LENGTH = 200
#: Bidirectional controls reorder how text is shown ("Trojan Source"): a description that reads one way
#: in an editor and another to Python has no place in a generated service.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_INTEGER = re.compile(r"[+-]?[0-9]+")


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be a one-line answer, or None.

    Control characters (newlines included), line and paragraph separators, lone surrogates and
    bidirectional controls are refused.
    """
    for c in text:
        category = unicodedata.category(c)
        if c in "\r\n" or category in ("Zl", "Zp"):
            return "must be one line"
        if category == "Cc":
            return f"must not contain the control character U+{ord(c):04X}"
        if category == "Cs":
            return f"must be text, not the lone surrogate U+{ord(c):04X}"
        if c in _BIDI_CONTROLS:
            return f"must not contain the bidirectional control U+{ord(c):04X} (it makes text read out of order)"
    return None


def shown(value: object, limit: int = 60) -> str:
    """A value as one short line for an error message: repr-escaped, cut after ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class Question(BaseModel):
    """One question of a template; ``--set NAME=VALUE`` answers it without a prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: Literal["str", "int", "float", "bool", "choice"] = "str"
    help: str
    default: AnswerValue | None = None
    choices: list[str] = Field(default_factory=list)
    min: float | None = None
    max: float | None = None
    #: ``str``: a regular expression the whole answer must match (classes like ``\\d`` are ASCII-only).
    pattern: str | None = None
    #: Said when ``pattern`` does not match, e.g. "a DNS label".
    pattern_help: str | None = None
    #: ``str``: the shortest and the longest answer, in characters (default 0 and :data:`MAX_ANSWER_LENGTH`).
    min_length: int = Field(default=0, ge=0)
    max_length: int | None = Field(default=None, ge=1, le=10_000)
    #: A jinja expression over earlier answers; the question is asked only when it is true.
    when: str | None = None
    #: ``accelerator``: the default comes from this machine: ``cuda`` where an NVIDIA GPU is seen, else
    #: ``cpu`` (a choice of both). ``default`` is then used only where the machine is not asked.
    machine: Literal["accelerator"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Question:
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice question needs choices")
        if self.machine == "accelerator" and not {"cuda", "cpu"} <= set(self.choices):
            raise ValueError("machine: accelerator is for a choice of cuda and cpu")
        if (self.max_length is not None or self.min_length) and self.type != "str":
            raise ValueError("min_length and max_length are for str questions")
        if self.default is not None:
            self.parse(self.default)  # a default that fails its own question is a template bug
        return self

    def parse(self, value: AnswerValue | str) -> AnswerValue:
        """Turn a raw answer (a ``--set`` string or a prompt reply) into a typed value.

        Raises:
            ValueError: with a message fit to follow the question's name.
        """
        text = str(value).strip() if not isinstance(value, bool) else value
        result: AnswerValue
        if self.type == "bool":
            if isinstance(text, bool):
                return text
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(f"must be true or false, got {shown(value)}")
        if isinstance(text, bool):
            raise ValueError(f"must be a {self.type}, got {shown(value)}")
        if self.type == "int":
            if not _INTEGER.fullmatch(text) or len(text) > 20:
                raise ValueError(f"must be an integer, got {shown(value)}")
            result = int(text)
        elif self.type == "float":
            try:
                result = float(text)
            except ValueError:
                raise ValueError(f"must be a number, got {shown(value)}") from None
            if not math.isfinite(result):
                raise ValueError(f"must be a finite number, got {shown(value)}")
        elif self.type == "choice":
            if text not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}; got {shown(value)}")
            return text
        else:
            limit = self.max_length or MAX_ANSWER_LENGTH
            if len(text) > limit:
                raise ValueError(f"must be at most {limit} characters, got {len(text)}")
            if len(text) < self.min_length:
                raise ValueError("must not be empty" if len(text) == 0 else f"must be at least {self.min_length} "
                                 f"characters, got {len(text)}")  # fmt: skip
            problem = text_problem(text)
            if problem:
                raise ValueError(problem)
            if self.pattern and not re.fullmatch(self.pattern, text, flags=re.ASCII):
                raise ValueError(f"must be {self.pattern_help or 'matching ' + self.pattern}, got {shown(value)}")
            return text
        if self.min is not None and result < self.min:
            raise ValueError(f"must be >= {_num(self.min)}, got {shown(value)}")
        if self.max is not None and result > self.max:
            raise ValueError(f"must be <= {_num(self.max)}, got {shown(value)}")
        return result

    def info(self) -> QuestionInfo:
        return QuestionInfo(self.name, self.type, self.help, self.default, tuple(self.choices), self.machine)


class Manifest(BaseModel):
    """A template's template.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    description: str
    questions: list[Question] = Field(default_factory=list)


@dataclass(frozen=True)
class Template:
    """A template on disk."""

    manifest: Manifest
    path: Path

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def files_dir(self) -> Path:
        return self.path / "files"

    def question(self, name: str) -> Question | None:
        return next((q for q in self.manifest.questions if q.name == name), None)

    def info(self) -> TemplateInfo:
        builtin = self.path.parent == data_dir("templates")
        return TemplateInfo(
            name=self.name,
            version=self.version,
            description=self.manifest.description,
            source="built-in" if builtin else str(self.path),
            questions=tuple(q.info() for q in self.manifest.questions),
        )


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def template_roots() -> list[Path]:
    """Directories searched for templates, in order."""
    extra = [Path(p) for p in os.environ.get(TEMPLATE_PATH_ENV, "").split(os.pathsep) if p]
    return [*extra, data_dir("templates")]


def load_template(path: Path) -> Template:
    """Read and validate a template's manifest."""
    from mlctl import safe_yaml
    from mlctl.errors import ConfigError

    manifest_path = path / MANIFEST
    try:
        # A template from MLCTL_TEMPLATE_PATH is someone else's file: read with the same bounds as mlctl.yaml.
        raw, _ = safe_yaml.load(manifest_path.read_bytes(), str(manifest_path))
        manifest = Manifest.model_validate(raw)
    except OSError as exc:
        raise TemplateError(f"template manifest {manifest_path} cannot be read: {exc.strerror}") from None
    except ConfigError as exc:
        raise TemplateError(f"template manifest {manifest_path} cannot be read: {'; '.join(exc.lines())}") from None
    except ValidationError as exc:
        problems = [
            ConfigProblem(str(manifest_path), None, ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()
        ]
        raise TemplateError(
            f"template manifest {manifest_path} is invalid: " + "; ".join(str(p) for p in problems)
        ) from None
    if not (path / "files").is_dir():
        raise TemplateError(f"template {manifest.name} at {path} has no files/ directory")
    return Template(manifest, path)


def list_templates() -> list[TemplateInfo]:
    """Every template found, the first of each name winning (``MLCTL_TEMPLATE_PATH`` before built-ins)."""
    return [t.info() for t in _discover().values()]


def _discover() -> dict[str, Template]:
    found: dict[str, Template] = {}
    for root in template_roots():
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if (child / MANIFEST).is_file():
                template = load_template(child)
                found.setdefault(template.name, template)
    return found


def find_template(name: str) -> Template:
    """The template called ``name``.

    Raises:
        NotFoundError: naming the templates that exist, and the closest one.
    """
    found = _discover()
    if name in found:
        return found[name]
    close = difflib.get_close_matches(name, list(found), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise NotFoundError(
        f"unknown template {name!r}; available: {', '.join(found) or 'none'}",
        hint=hint + "see `mlctl templates list`",
    )


def set_option(key: str, value: object) -> str:
    """``--set KEY=VALUE`` as an error message shows it.

    As typed where that is one short printable line, else repr-escaped and cut.
    """
    shown_key = key if key.isprintable() and len(key) <= 40 else shown(key, 40)
    if isinstance(value, str) and len(value) <= 80 and value.isprintable():
        return f"--set {shown_key}={value}"
    return f"--set {shown_key}={shown(value)}"


def answer_problem(template: Template, key: str, value: str) -> tuple[str, str | None]:
    """For a ``--set`` key the template does not ask: the message and a hint."""
    names = [q.name for q in template.manifest.questions]
    close = difflib.get_close_matches(key, names, n=1)
    return (
        f"{set_option(key, value)}: template {template.name!r} has no question {shown(key, 40)}",
        (f"did you mean {close[0]!r}? " if close else "") + f"its questions: {', '.join(names)}",
    )


def parse_set_options(pairs: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; raises InputError on ``a`` or ``=1``."""
    from mlctl.errors import InputError

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            where = f"--set {pair}" if pair.isprintable() and len(pair) <= 80 else f"--set {shown(pair)}"
            raise InputError(f"{where}: expected KEY=VALUE, e.g. --set gpu_count=2")
        out[key.strip()] = value
    return out


def render_context(template: Template, name: str, answers: dict[str, Any]) -> dict[str, Any]:
    """The variables a template's files see.

    Answers to ``str`` questions are marked as raw text: a file must write them through an escaping
    filter (:mod:`mlctl.scaffold.escape`).
    """
    from mlctl import __version__
    from mlctl.names import package_name
    from mlctl.scaffold.escape import mark_answers

    free_text = {q.name for q in template.manifest.questions if q.type == "str"}
    answers = mark_answers(answers, free_text)
    return {
        **answers,
        "name": name,
        "package": package_name(name),
        "title": name.replace("-", " ").title(),
        "template_name": template.name,
        "template_version": template.version,
        "mlctl_version": __version__,
        "answers": dict(answers),
    }


# --- earlier versions, for `mlctl update` ------------------------------------------------------------


def version_key(version: str) -> tuple[int, ...]:
    """``"1.10.0"`` -> (1, 10, 0): template versions compare as numbers."""
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _store() -> Path:
    from mlctl.resources import cache_dir

    return cache_dir() / "templates"


def remember(template: Template) -> None:
    """Keep a copy of this template version for a later ``mlctl update``.

    Keep a copy of this template version, so that a later ``mlctl update`` can re-render it.
    Best effort: a read-only cache only means the update will ask for the old version.
    """
    import shutil
    import tempfile

    from mlctl.atomic import interruptible

    target = _store() / template.name / template.version
    if (target / MANIFEST).is_file():
        return
    staging: Path | None = None
    with interruptible() as interrupts:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with interrupts.held():
                staging = Path(tempfile.mkdtemp(prefix=f".{template.version}.", dir=target.parent))
            shutil.copytree(template.path, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            with interrupts.held():
                os.replace(staging, target)
                staging = None
        except OSError:
            pass
        finally:
            if staging is not None:
                with interrupts.held(then_raise=False):
                    shutil.rmtree(staging, ignore_errors=True)


def find_version(name: str, version: str) -> Template | None:
    """Template ``name`` at exactly ``version``: on the search path, else among the versions kept."""
    candidates = [child for root in template_roots() if root.is_dir() for child in sorted(root.iterdir())]
    candidates.append(_store() / name / version)
    for path in candidates:
        if (path / MANIFEST).is_file():
            template = load_template(path)
            if (template.name, template.version) == (name, version):
                return template
    return None
