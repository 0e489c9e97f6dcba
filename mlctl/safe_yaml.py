"""YAML from users, read with bounds: the size, the nesting depth, the values aliases expand to.

``mlctl.yaml`` is data a user (or a pull request) controls, and CI parses it on every push. A general
YAML loader will happily expand a 600-byte alias bomb into gigabytes, recurse until Python gives
up on deep nesting, or build objects from ``!!python/...`` tags. This reader walks the parser's
event stream itself and builds plain values (dicts with string keys, lists, str, int, float, bool,
None) under hard limits, so every input ends in a value or in a :class:`ConfigError` naming the
line, quickly:

- at most :data:`MAX_BYTES` bytes, strict UTF-8 (a byte-order mark is allowed);
- at most :data:`MAX_DEPTH` nested mappings and lists;
- at most :data:`MAX_VALUES` values in the result, counting every value an alias repeats;
- only the YAML 1.2 core schema: untagged values, or the ``!!str``, ``!!int``, ``!!float``,
  ``!!bool``, ``!!null``, ``!!map`` and ``!!seq`` tags; any other tag is refused;
- finite numbers only, string keys only (numbers and booleans as keys are read as their text),
  no duplicate keys, one document.

Merge keys (``<<: *defaults``) work as in YAML 1.1, so environments can share a block.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mlctl.errors import ConfigError, ConfigProblem

#: mlctl.yaml is a few KiB; 64 KiB leaves room for generous comments and still parses in a tenth of a second
#: whatever it holds (ruamel's pure-Python scanner reads about 1 MB/s).
MAX_BYTES = 64 * 1024
#: The deepest real key path (environments.prod.resources.gpu.products[0]) is 5 levels.
MAX_DEPTH = 32
#: Keys and values in the result, aliases counted each time they are used. A full mlctl.yaml has ~200.
MAX_VALUES = 2_500

Path_ = tuple[str | int, ...]

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}
_MAP_TAG = _CORE + "map"
_SEQ_TAG = _CORE + "seq"


class _Stop(Exception):
    """A problem found while walking the events: its line and column (1-based, or None) and message."""

    def __init__(self, line: int | None, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.message = message


@dataclass
class _Anchor:
    value: Any
    size: int
    #: Lines of the keys below the anchored value, relative to it.
    lines: dict[Path_, int]


@dataclass
class _Walk:
    index: dict[Path_, int] = field(default_factory=dict)
    anchors: dict[str, _Anchor] = field(default_factory=dict)
    count: int = 0

    def spend(self, n: int, line: int | None) -> None:
        self.count += n
        if self.count > MAX_VALUES:
            raise _Stop(
                line,
                f"more than {MAX_VALUES} keys and values (aliases counted each time they are used): "
                "too large for an mlctl config",
            )


def load(data: bytes | str, filename: str) -> tuple[Any, dict[Path_, int]]:
    """Parse one YAML document into plain values, with the line of every key.

    Returns:
        The value (None for an empty document) and ``{key path: line}`` for every mapping key and
        list item, lines counted from 1.

    Raises:
        ConfigError: with one :class:`ConfigProblem` naming the file and, where it has one, the line.
    """
    text = _decode(data, filename)
    try:
        return _compose(text)
    except _Stop as stop:
        source = _source_line(text, stop.line)
        column = stop.column if source is not None and stop.column and stop.column <= len(source) + 1 else None
        problem = ConfigProblem(filename, stop.line, "", stop.message, column, source)
        raise ConfigError(f"{filename} cannot be read", problems=[problem]) from None


#: A quoted line of the file is cut after this many characters.
_QUOTE_LIMIT = 160


def _source_line(text: str, line: int | None) -> str | None:
    """Line ``line`` (1-based) of ``text`` as written (tabs shown as spaces, cut if long), or None."""
    lines = text.splitlines()
    if not line or line > len(lines):
        return None
    # One column per character, nothing a terminal would act on: tabs and control characters are replaced.
    shown = "".join(c if c.isprintable() else " " if c == "\t" else "\ufffd" for c in lines[line - 1])
    return shown if len(shown) <= _QUOTE_LIMIT else shown[:_QUOTE_LIMIT] + "..."


def _fail(filename: str, line: int | None, message: str) -> ConfigError:
    return ConfigError(f"{filename} cannot be read", problems=[ConfigProblem(filename, line, "", message)])


def _decode(data: bytes | str, filename: str) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_BYTES:
        line = raw.count(b"\n", 0, MAX_BYTES) + 1
        raise _fail(
            filename,
            line,
            f"the file is {len(raw)} bytes, over the limit of {MAX_BYTES} bytes here (an mlctl config is a few KiB)",
        )
    if isinstance(data, str):
        text = data
        bad = next((i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF), None)
        if bad is not None:
            raise _fail(filename, text.count("\n", 0, bad) + 1, "not valid UTF-8 (a lone surrogate)")
        return text.removeprefix("\ufeff")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = raw[exc.start]
        raise _fail(
            filename, line, f"not valid UTF-8: byte 0x{byte:02x} at column {column} (save the file as UTF-8)"
        ) from None


def _events(text: str) -> Iterator[Any]:
    """The parser's events; YAML syntax errors become _Stop with their line."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.reader import ReaderError

    # pure=True: the same parser everywhere; it is iterative, so deep nesting cannot exhaust the stack.
    parser = YAML(typ="safe", pure=True)
    stream = iter(parser.parse(text))
    while True:
        try:
            event = next(stream)
        except StopIteration:
            return
        except MarkedYAMLError as exc:
            raise _syntax_error(text, exc) from None
        except ReaderError as exc:
            line = column = None
            if isinstance(exc.position, int):
                line = text.count("\n", 0, exc.position) + 1
                column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
            code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
            raise _Stop(line, f"invalid YAML: the control character U+{code:04X} is not allowed", column) from None
        except YAMLError as exc:
            raise _Stop(None, f"invalid YAML: {exc}") from None
        yield event


#: A construct the parser was reading when the file ended or went wrong: where it started is the mistake.
_UNCLOSED = {
    "while scanning a quoted scalar": "this quoted text is not closed",
    "while parsing a flow sequence": "this '[' is not closed",
    "while parsing a flow mapping": "this '{' is not closed",
}


def _syntax_error(text: str, exc: Any) -> _Stop:
    """A YAML syntax error located where the mistake is, which is often not where the parser stopped.

    The parser stops at the next token it cannot take, often on the line after the mistake: a key
    without its ':' swallows the next line as more of its text, and an unclosed quote or bracket is
    noticed only where the file ends. Those are located where they start.
    """
    problem, context = exc.problem_mark, exc.context_mark
    what = exc.problem or exc.context or "not valid YAML"

    def at(mark: Any, message: str) -> _Stop:
        return _Stop(mark.line + 1, f"invalid YAML: {message}", mark.column + 1)

    if problem is None:
        return _Stop(context.line + 1 if context is not None else None, f"invalid YAML: {what}")
    where = f"line {problem.line + 1}, column {problem.column + 1}"
    if context is not None and exc.context == "while scanning a simple key":
        return at(context, "a ':' is missing after this key")
    opened_before = context is not None and (context.line, context.column) < (problem.line, problem.column)
    if context is not None and exc.context in _UNCLOSED and opened_before:
        if exc.problem == "found unexpected end of stream" or "'<stream end>'" in exc.problem:
            return at(context, f"{_UNCLOSED[exc.context]} (the file ends first)")
        return at(context, f"{_UNCLOSED[exc.context]}: {exc.problem} at {where}")
    if exc.problem == "mapping values are not allowed here":
        start = _last_scalar_start(text)
        if start is not None and start.line < problem.line:
            lines = text.splitlines()
            before = lines[start.line][: start.column] if start.line < len(lines) else ""
            if before.strip() in ("", "-"):  # the text starts its line: a key without its ':'
                return at(start, f"a ':' is missing after this key (line {problem.line + 1} reads as more of it)")
            # the text is a value: the next line, indented under it, reads as more of it
            line = lines[problem.line] if problem.line < len(lines) else ""
            indent = len(line) - len(line.lstrip(" "))
            return _Stop(
                problem.line + 1,
                f"invalid YAML: indented too far: this line reads as more of the value on line {start.line + 1}",
                indent + 1,
            )
        return at(problem, "a ':' is not allowed here (quote a value that holds ': ')")
    if exc.problem.startswith("found character '\\t'"):
        return at(problem, "a tab cannot indent YAML; indent with spaces")
    if exc.problem.startswith("expected <block end>, but found"):
        found = exc.problem.rsplit("found ", 1)[1]
        return at(problem, _UNEXPECTED.get(found, f"unexpected {found} here (check the indentation)"))
    return at(problem, what)


#: What a block mapping or list found where its next key or item (or its end) should be.
_UNEXPECTED = {
    "'<block mapping start>'": "this line lines up with no key above it (check its indentation)",
    "'-'": "a list item where a key should be (check its indentation)",
    "'<scalar>'": "unexpected text here (after a closing quote, or at the wrong indentation)",
}


def _last_scalar_start(text: str) -> Any:
    """Where the last text the scanner read before its error starts (its start mark), if any."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.tokens import ScalarToken

    start = None
    try:
        for token in YAML(typ="safe", pure=True).scan(text):
            if isinstance(token, ScalarToken):
                start = token.start_mark
    except YAMLError:
        pass
    return start


@dataclass
class _Frame:
    """A mapping or list being read."""

    container: dict[str, Any] | list[Any]
    path: Path_
    line: int
    anchor: str | None
    #: The walk's count before this collection: its size is what was counted since.
    start: int
    #: Mappings: the key whose value comes next (_NO_KEY while a key is expected), the keys seen, and
    #: the values of merge keys (<<), merged in when the mapping ends.
    key: Any = None
    seen: set[str] = field(default_factory=set)
    merges: list[tuple[int, Any]] = field(default_factory=list)

    def expects_key(self) -> bool:
        return isinstance(self.container, dict) and self.key is _NO_KEY


def _compose(text: str) -> tuple[Any, dict[Path_, int]]:
    from ruamel.yaml import events as ev

    walk = _Walk()
    stack: list[_Frame] = []
    result: Any = None
    documents = 0
    line = 1

    def here() -> Path_:
        """The path of the value about to be read (recording a list item's line)."""
        if not stack:
            return ()
        frame = stack[-1]
        if isinstance(frame.container, list):
            path = (*frame.path, len(frame.container))
            walk.index[path] = line
            return path
        if frame.key is _NO_KEY or isinstance(frame.key, _MergeKey):
            return (*frame.path, "<key>")
        return (*frame.path, frame.key)

    def attach(value: Any) -> None:
        nonlocal result
        if not stack:
            result = value
            return
        frame = stack[-1]
        if isinstance(frame.container, list):
            frame.container.append(_unwrap(value))
        elif frame.key is _NO_KEY:
            if not isinstance(value, (_Scalar, _MergeKey)):
                raise _Stop(line, "a key must be a plain value (a name), not a mapping or a list")
            if isinstance(value, _MergeKey):
                frame.key = value
                return
            name = value.text
            if name in frame.seen:
                first = walk.index.get((*frame.path, name))
                where = f" (first on line {first})" if first else ""
                raise _Stop(line, f'invalid YAML: duplicate key "{name}"{where}')
            frame.seen.add(name)
            frame.key = name
            key_path = (*frame.path, name)
            walk.index[key_path] = line
        else:
            if isinstance(frame.key, _MergeKey):
                frame.merges.append((line, _unwrap(value)))
            else:
                frame.container[frame.key] = _unwrap(value)
            frame.key = _NO_KEY

    def remember(anchor: str | None, value: Any, start: int, path: Path_) -> None:
        if anchor is None:
            return
        n = len(path)
        lines = {k[n:]: v for k, v in walk.index.items() if len(k) > n and k[:n] == path}
        walk.anchors[anchor] = _Anchor(value, walk.count - start, lines)

    for event in _events(text):
        mark = getattr(event, "start_mark", None)
        line = mark.line + 1 if mark is not None else line
        if isinstance(event, ev.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _Stop(line, "more than one YAML document (---): mlctl reads one")
        elif isinstance(event, (ev.MappingStartEvent, ev.SequenceStartEvent)):
            is_map = isinstance(event, ev.MappingStartEvent)
            if event.tag not in (None, "!", _MAP_TAG if is_map else _SEQ_TAG):
                raise _Stop(line, _tag_problem(event.tag))
            if len(stack) >= MAX_DEPTH:
                raise _Stop(line, f"nested deeper than {MAX_DEPTH} levels")
            start = walk.count
            walk.spend(1, line)
            container: dict[str, Any] | list[Any] = {} if is_map else []
            stack.append(_Frame(container, here(), line, event.anchor, start, key=_NO_KEY))
        elif isinstance(event, (ev.MappingEndEvent, ev.SequenceEndEvent)):
            frame = stack.pop()
            if isinstance(frame.container, dict) and frame.merges:
                _merge(frame.container, frame.merges)
            remember(frame.anchor, frame.container, frame.start, frame.path)
            attach(frame.container)
        elif isinstance(event, ev.ScalarEvent):
            start = walk.count
            walk.spend(1, line)
            scalar = _scalar(event, line, is_key=bool(stack) and stack[-1].expects_key())
            if not isinstance(scalar, _MergeKey):
                here()
            remember(event.anchor, scalar, start, ())
            attach(scalar)
        elif isinstance(event, ev.AliasEvent):
            anchored = walk.anchors.get(event.anchor)
            if anchored is None:
                raise _Stop(line, f"invalid YAML: alias *{event.anchor} comes before its anchor is complete")
            walk.spend(anchored.size, line)
            if stack and stack[-1].expects_key():
                attach(anchored.value)
                continue
            path = here()
            for relative, key_line in anchored.lines.items():
                walk.index.setdefault((*path, *relative), key_line)
            attach(_copy(anchored.value))
    return _unwrap(result), walk.index


_NO_KEY = object()


@dataclass(frozen=True)
class _Scalar:
    """A scalar read from the stream: its value, and its text (what a key is called)."""

    value: Any
    text: str


class _MergeKey:
    """The ``<<`` key of a mapping: its value's mappings are merged in."""


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, _Scalar) else value


def _tag_problem(tag: str) -> str:
    shown = "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag
    return (
        f"the YAML tag {shown} is not allowed: mlctl.yaml holds plain mappings, lists, strings, "
        "numbers, booleans and null"
    )


def _scalar(event: Any, line: int, *, is_key: bool) -> _Scalar | _MergeKey:
    from ruamel.yaml.nodes import ScalarNode

    resolver, constructor = _core_schema()
    tag = event.tag
    text = event.value
    plain = event.style in (None, "") and event.implicit[0]
    if tag in (None, "!"):
        if is_key and plain and text == "<<":
            return _MergeKey()
        if not plain:
            return _Scalar(text, text)
        tag = str(resolver.resolve(ScalarNode, text, (True, False)))
        if tag == _CORE + "timestamp":
            return _Scalar(text, text)  # a date is just text to mlctl (YAML 1.2 has no timestamps)
    elif tag not in _SCALAR_TAGS:
        raise _Stop(line, _tag_problem(tag))
    if tag == _CORE + "str":
        return _Scalar(text, text)
    try:
        value = constructor.construct_object(ScalarNode(tag, text), deep=True)
    except Exception:  # the constructor's own errors for text its tag does not fit, e.g. !!int abc
        raise _Stop(line, f"{text!r} is not a valid {tag[len(_CORE) :]}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise _Stop(line, f"{text!r}: numbers must be finite")
    return _Scalar(value, text)


def _merge(container: dict[str, Any], merges: list[tuple[int, Any]]) -> None:
    """YAML merge keys: the merged mappings' keys, where the mapping does not set them itself."""
    for line, value in merges:
        sources = value if isinstance(value, list) else [value]
        for source in sources:
            if not isinstance(source, dict):
                raise _Stop(line, "a merge key (<<) takes a mapping or a list of mappings")
            for key, item in source.items():
                container.setdefault(key, _copy(item))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, _Scalar):
        return value.value
    return value


@functools.cache
def _core_schema() -> tuple[Any, Any]:
    """Ruamel's YAML 1.2 resolver (which tag a plain scalar has) and its constructor for those tags."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    return yaml.resolver, yaml.constructor
