"""Service templates: discovery, manifests (``template.yaml``) and their questions.

A template is a directory holding ``template.yaml`` and a ``files/`` tree. Templates are found in
the directories of ``MLCTL_TEMPLATE_PATH`` (``os.pathsep``-separated, searched first) and then
among mlctl's built-in templates.
"""

from __future__ import annotations

import difflib
import os
import re
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
    pattern: str | None = None
    #: Said when ``pattern`` does not match, e.g. "a DNS label".
    pattern_help: str | None = None
    #: A jinja expression over earlier answers; the question is asked only when it is true.
    when: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Question:
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice question needs choices")
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
            raise ValueError(f"must be true or false, got {value!r}")
        if isinstance(text, bool):
            raise ValueError(f"must be a {self.type}, got {value!r}")
        if self.type == "int":
            try:
                result = int(text)
            except ValueError:
                raise ValueError(f"must be an integer, got {value!r}") from None
        elif self.type == "float":
            try:
                result = float(text)
            except ValueError:
                raise ValueError(f"must be a number, got {value!r}") from None
        elif self.type == "choice":
            if text not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}; got {value!r}")
            return text
        else:
            if self.pattern and not re.fullmatch(self.pattern, text):
                raise ValueError(f"must be {self.pattern_help or 'matching ' + self.pattern}, got {value!r}")
            return text
        if self.min is not None and result < self.min:
            raise ValueError(f"must be >= {_num(self.min)}, got {value!r}")
        if self.max is not None and result > self.max:
            raise ValueError(f"must be <= {_num(self.max)}, got {value!r}")
        return result

    def info(self) -> QuestionInfo:
        return QuestionInfo(self.name, self.type, self.help, self.default, tuple(self.choices))


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
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    manifest_path = path / MANIFEST
    try:
        raw = YAML(typ="safe").load(manifest_path.read_text(encoding="utf-8"))
        manifest = Manifest.model_validate(raw)
    except (YAMLError, OSError) as exc:
        raise TemplateError(f"template manifest {manifest_path} cannot be read: {exc}") from None
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


def answer_problem(template: Template, key: str, value: str) -> tuple[str, str | None]:
    """For a ``--set`` key the template does not ask: the message and a hint."""
    names = [q.name for q in template.manifest.questions]
    close = difflib.get_close_matches(key, names, n=1)
    return (
        f"--set {key}={value}: template {template.name!r} has no question {key!r}",
        (f"did you mean {close[0]!r}? " if close else "") + f"its questions: {', '.join(names)}",
    )


def parse_set_options(pairs: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; raises InputError on ``a`` or ``=1``."""
    from mlctl.errors import InputError

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {pair}: expected KEY=VALUE, e.g. --set gpu_count=2")
        out[key.strip()] = value
    return out


def render_context(template: Template, name: str, answers: dict[str, Any]) -> dict[str, Any]:
    """The variables a template's files see."""
    from mlctl import __version__
    from mlctl.names import package_name

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

    target = _store() / template.name / template.version
    if (target / MANIFEST).is_file():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{template.version}.", dir=target.parent))
        shutil.copytree(template.path, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        os.replace(staging, target)
    except OSError:
        pass


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
