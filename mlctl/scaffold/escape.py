r"""Answers are data: filters that write a text into each format a template's files are written in.

A template never writes a free-text answer as it is: a description written into a docstring runs
code at import when it holds three double quotes, and ``C:\\Users`` is a syntax error there. Each
filter returns a complete literal of its format (quotes included), so whatever the text holds, the
file parses and the value read back is the text:

- ``py``: a Python string literal, double-quoted, non-printable characters escaped;
- ``py_docstring``: a module docstring, wrapped at spaces, every quote and backslash escaped;
- ``toml``: a TOML basic string (``pyproject.toml``);
- ``yaml``: a YAML double-quoted scalar, or a number, boolean or null (``mlctl.yaml``, pipelines);
- ``md``: Markdown inline text, its markup characters backslash-escaped (``README.md``);
- ``sh``: one POSIX shell word, single-quoted.

:func:`mark_answers` marks each free-text answer, so that rendering it without one of these filters
is an error in the template, caught when it renders rather than in a user's service.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any


class RawText(str):
    """A free-text answer that has not been through a filter yet."""

    question: str


def mark_answers(answers: dict[str, Any], free_text: set[str]) -> dict[str, Any]:
    """The answers, with those named in ``free_text`` (str questions) marked as :class:`RawText`."""
    marked: dict[str, Any] = {}
    for key, value in answers.items():
        if key in free_text and isinstance(value, str):
            value = RawText(value)
            value.question = key
        marked[key] = value
    return marked


def refuse_raw(value: Any) -> Any:
    """Jinja's ``finalize``: every ``{{ }}`` output passes here; a raw answer is a template bug."""
    if isinstance(value, RawText):
        raise RawAnswerError(
            f"the answer {value.question!r} is written without a filter for its format "
            f"({', '.join(FILTERS)}; see mlctl.scaffold.escape)"
        )
    return value


class RawAnswerError(Exception):
    """A template wrote a free-text answer without an escaping filter."""


def _hex(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def python_literal(text: str) -> str:
    """``"..."``: a Python string literal whose value is ``text``; non-printable characters escaped."""
    return '"' + _python_body(text) + '"'


def _python_body(text: str) -> str:
    out = []
    for c in str(text):
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c.isprintable():
            out.append(c)
        else:
            out.append(_hex(c))
    return "".join(out)


def python_docstring(text: str, width: int = 96) -> str:
    r"""A module docstring whose lines, joined with single spaces, are ``text``.

    Long text is wrapped at single spaces (so lines stay under ruff's line length), every ``"`` and
    ``\\`` is escaped (so ``\"\"\"`` or a trailing quote cannot end the string early), and characters
    that are not printable are written as escapes.
    """
    body = _python_body(text)
    words = body.split(" ")
    lines: list[str] = []
    current = words[0]
    for word in words[1:]:
        if current and word and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}"
    lines.append(current)
    return '"""' + "\n".join(lines) + '"""'


def toml_string(text: str) -> str:
    """``"..."``: a TOML basic string whose value is ``text``."""
    out = []
    for c in str(text):
        n = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif n < 0x20 or n == 0x7F:
            out.append(f"\\u{n:04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _yaml_printable(n: int) -> bool:
    """YAML 1.2's c-printable, less the characters some parsers take for line breaks or a BOM."""
    if n in (0x85, 0x2028, 0x2029, 0xFEFF):
        return False
    return 0x20 <= n <= 0x7E or 0xA0 <= n <= 0xD7FF or 0xE000 <= n <= 0xFFFD or 0x10000 <= n <= 0x10FFFF


def yaml_scalar(value: Any) -> str:
    """A YAML scalar for ``value``.

    A double-quoted string (escaped as YAML 1.2 says), or a number, boolean or null as YAML writes them.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    out = []
    for c in str(value):
        n = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif _yaml_printable(n):
            out.append(c)
        else:
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return '"' + "".join(out) + '"'


#: Characters that start Markdown (CommonMark and GitHub's) inline markup, escaped wherever they are.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>&|~$#!])")
#: At the start of a line these begin a heading, quote, list, rule or table.
_MD_LINE_START = re.compile(r"^([-+=>]|\d{1,9}(?=[.)]))")


def markdown_text(text: str) -> str:
    """``text`` as Markdown inline text: markup characters backslash-escaped, so it renders as itself."""
    escaped = _MD_INLINE.sub(r"\\\1", str(text))
    match = _MD_LINE_START.match(escaped)
    if match:
        if match.group(1)[0].isdigit():  # "1. text" is a list; "1\. text" is not
            end = match.end()
            escaped = escaped[:end] + "\\" + escaped[end:]
        else:
            escaped = "\\" + escaped
    return escaped


def shell_word(text: str) -> str:
    """``text`` as one POSIX shell word (``shlex.quote``)."""
    return shlex.quote(str(text))


FILTERS: dict[str, Callable[..., str]] = {
    "py": python_literal,
    "py_docstring": python_docstring,
    "toml": toml_string,
    "yaml": yaml_scalar,
    "md": markdown_text,
    "sh": shell_word,
}
