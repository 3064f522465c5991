"""Text templates: one line of text with typed fields that both writes and reads an event's text.

Each event's words in the text formats are given once, as a template such as::

    "{how:name}, {messages:int} message(s), {seconds:decimal} s"

and :class:`Template` makes from it both directions: ``format(event)`` writes
``clean, 3 messages, 1.500000 s`` from an event dict (with an f-string
expression compiled from the template), and ``parse(text)`` reads
``{"how": "clean", "messages": 3, "seconds": 1.5}`` back from that text (with
a regular expression generated from the same template).  The two cannot
drift apart.

The syntax:

- ``{key:type}`` is the event's field ``key``; the type (:data:`FIELD_TYPES`,
  or ``message``) says how it is written and what it reads back as.
- ``word(s)`` is ``word`` after a count of 1 and ``words`` otherwise; the
  count is the nearest ``int`` field before it.
- Everything else is literal text.

``message`` is the client's bytes (``msg``): escaped when written
(:func:`~chatlog.log.escaping.escape_text`), unescaped when read.  A template
with client text in it is matched as bytes; a template of server-known words
only is decoded as UTF-8 first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from chatlog.log.escaping import escape_text, unescape


class FieldType(NamedTuple):
    """How a field is written (a ``format`` spec) and read back (a regex and a conversion)."""

    spec: str
    pattern: str
    convert: Callable[[str], Any]
    #: The bytes ``%`` conversion that writes every number as ``spec`` does, if any.
    percent: bytes | None = None


FIELD_TYPES: dict[str, FieldType] = {
    # 42 (counts, limits, pids)
    "int": FieldType("", r"\d+", int),
    # 1.500000 (durations and round trips, to the microsecond)
    "decimal": FieldType(".6f", r"\d+(?:\.\d+)?", float, b"%.6f"),
    # 300, 2.5 (configured timeouts: as short as Python writes them)
    "number": FieldType("g", r"\S+", float, b"%g"),
    # clean, lost (a server-chosen identifier)
    "name": FieldType("", r"[a-z_]+", str),
    # 0.1.0 (anything without spaces)
    "word": FieldType("", r"\S+", str),
    # any text, even with spaces and parentheses
    "text": FieldType("", r".*", str),
}

#: The field type of the client's text: escaped bytes, not a :class:`FieldType`.
MESSAGE = "message"

_TOKEN = re.compile(r"\{(\w+):(\w+)\}|(\w+)\(s\)")

Fields = dict[str, Any]
_Writer = Callable[[Mapping[str, Any]], bytes]


class _Words(NamedTuple):
    """Literal text."""

    text: str


class _Field(NamedTuple):
    """``{key:type_name}``."""

    key: str
    type_name: str


class _Plural(NamedTuple):
    """``word(s)``: ``word``, plus ``s`` unless the field ``count_key`` is 1."""

    word: str
    count_key: str


def _pieces(text: str) -> list[_Words | _Field | _Plural]:
    """The template ``text`` cut into its pieces, checked."""
    pieces: list[_Words | _Field | _Plural] = []
    count: str | None = None  # the key of the last int field
    pos = 0
    for token in _TOKEN.finditer(text):
        if token.start() > pos:
            pieces.append(_Words(text[pos : token.start()]))
        key, type_name, word = token.groups()
        if word is not None:
            if count is None:
                raise ValueError(f"{text!r}: {word}(s) has no int field before it")
            pieces.append(_Plural(word, count))
        elif type_name == MESSAGE or type_name in FIELD_TYPES:
            pieces.append(_Field(key, type_name))
            count = key if type_name == "int" else count
        else:
            raise ValueError(f"{text!r}: unknown field type {type_name!r}")
        pos = token.end()
    if text[pos:]:
        pieces.append(_Words(text[pos:]))
    return pieces


# Both directions are compiled into the code one would write by hand for
# each text (an f-string; a match and a dict), so that they cost what
# hand-written code does.  Only keys (\w+, quoted by repr), format specs from
# FIELD_TYPES, repr-quoted literals and names given here go into the source.


def _writer_source(pieces: list[_Words | _Field | _Plural]) -> str:
    """``lambda e: ...``: the text of event ``e``: its words, and the client's text escaped."""
    if not any(isinstance(piece, _Field) for piece in pieces):
        # Words only (a plural needs a count field): a constant.
        return "lambda e: " + repr(
            "".join(p.text for p in pieces if isinstance(p, _Words)).encode()
        )
    parts: list[str] = []
    run: list[_Words | _Field | _Plural] = []  # the words since the client's text
    for piece in pieces:
        if isinstance(piece, _Field) and piece.type_name == MESSAGE:
            if run:
                parts.append(_words_source(run))
                run = []
            parts.append(f"escape(e[{piece.key!r}])[0]")
        else:
            run.append(piece)
    if run:
        parts.append(_words_source(run))
    return "lambda e: " + " + ".join(parts)


def _words_source(run: list[_Words | _Field | _Plural]) -> str:
    """Bytes of server-known words: an f-string, encoded; or, numbers only, a bytes ``%``."""
    form = b""
    values = ""
    for piece in run:
        if isinstance(piece, _Words):
            form += piece.text.encode().replace(b"%", b"%%")
        elif isinstance(piece, _Field) and FIELD_TYPES[piece.type_name].percent:
            form += FIELD_TYPES[piece.type_name].percent or b""
            values += f"e[{piece.key!r}], "
        else:
            break
    else:
        # No str to make and encode: cheaper, and the same bytes for numbers.
        return f"{form!r} % ({values})"
    words = []
    for piece in run:
        if isinstance(piece, _Words):
            words.append(_literal(piece.text))
        elif isinstance(piece, _Plural):
            words.append(_literal(piece.word))
            words.append(_value(f"'' if e[{piece.count_key!r}] == 1 else 's'"))
        else:
            words.append(_value(f"e[{piece.key!r}]", FIELD_TYPES[piece.type_name].spec))
    return "(" + " ".join(words) + ").encode()"


def _regex(pieces: list[_Words | _Field | _Plural]) -> str:
    """The regular expression of every text the pieces write, a group per field."""
    regex = []
    for piece in pieces:
        if isinstance(piece, _Words):
            regex.append(re.escape(piece.text))
        elif isinstance(piece, _Plural):
            regex.append(re.escape(piece.word) + "s?")
        elif piece.type_name == MESSAGE:
            regex.append("(.*)")
        else:
            regex.append(f"({FIELD_TYPES[piece.type_name].pattern})")
    return "".join(regex)


def _reader_source(fields: list[tuple[str, str]], raw: bool, whole: bool) -> str:
    """``lambda text: ...``: the fields of ``text`` if ``match`` matches it, else None.

    ``convertN`` is the conversion of the N-th field; ``whole`` says the
    client's text is the whole text (no match needed).
    """
    values = []
    for n, (key, _) in enumerate(fields, 1):
        group = "text" if whole else f"m[{n}]"
        values.append(f"{key!r}: convert{n}({group})")
    fields_source = "{" + ", ".join(values) + "}"
    if whole:
        return f"lambda text: {fields_source}"
    subject = "text" if raw else "text.decode('utf-8')"
    return f"lambda text: {fields_source} if (m := match({subject})) else None"


def _converter(type_name: str, raw: bool) -> Callable[[Any], Any]:
    """What turns a matched group of this field type into its value."""
    if type_name == MESSAGE:
        return unescape
    convert = FIELD_TYPES[type_name].convert
    if raw and convert is str:
        # Matched as bytes: text is decoded (int and float take bytes as they are).
        return _decoded(str)
    return convert


def _decoded(convert: Callable[[str], Any]) -> Callable[[bytes], Any]:
    return lambda raw: convert(raw.decode("utf-8"))


def _literal(words: str) -> str:
    """An f-string literal, as source, that writes ``words``."""
    return "f" + repr(words.replace("{", "{{").replace("}", "}}"))


def _value(expression: str, spec: str = "") -> str:
    """An f-string, as source, that writes the value of ``expression`` (formatted with ``spec``)."""
    return 'f"{' + expression + (":" + spec if spec else "") + '}"'


class Template:
    """One text with typed fields: ``format(event)`` writes it, ``parse(text)`` reads it back."""

    def __init__(self, text: str) -> None:
        self.text = text
        pieces = _pieces(text)
        #: (key, type name) of each field, in order.
        self.fields = [(p.key, p.type_name) for p in pieces if isinstance(p, _Field)]

        #: The source of :attr:`format`.
        self.format_source = _writer_source(pieces)
        #: ``format(event)``: the text of ``event``, as bytes.
        self.format: _Writer = eval(self.format_source, {"escape": escape_text})

        # A text with client text in it is matched as bytes, others as str.
        raw = any(type_name == MESSAGE for _, type_name in self.fields)
        pattern = _regex(pieces)
        self.pattern: re.Pattern[Any] = re.compile(pattern.encode() if raw else pattern, re.S)
        names: dict[str, Any] = {"match": self.pattern.fullmatch}
        for n, (_, type_name) in enumerate(self.fields, 1):
            names[f"convert{n}"] = _converter(type_name, raw)
        #: The source of :attr:`parse`.
        self.parse_source = _reader_source(self.fields, raw, whole=raw and pattern == "(.*)")
        #: ``parse(text)``: the fields written in ``text``, or None if it is not
        #: this template's text.  Raises :class:`UnicodeDecodeError` (a
        #: :class:`ValueError`) when a text of server-known words is not UTF-8.
        self.parse: Callable[[bytes], Fields | None] = eval(self.parse_source, names)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def choices(self) -> list[tuple[Fields, Template]]:
        """Every template this text may be written with (one), and the fields that pick it (none)."""
        return [({}, self)]


class Variants:
    """Several texts for one event, picked by the value of one field.

    ``Variants("kind", {"idle": "...", "line": "..."})`` writes the text named
    by ``event["kind"]``; any other value writes the last text.  Reading tries
    each text in order and gives back ``kind`` with the fields.
    """

    def __init__(self, key: str, texts: Mapping[str, str]) -> None:
        if not texts:
            raise ValueError("Variants needs at least one text")
        self.key = key
        self.templates = {value: Template(text) for value, text in texts.items()}
        self._last = list(self.templates.values())[-1]

    def __repr__(self) -> str:
        return f"Variants({self.key!r}, {self.templates!r})"

    def format(self, event: Mapping[str, Any]) -> bytes:
        """The text of ``event``, in the variant its field names."""
        return self.templates.get(event[self.key], self._last).format(event)

    def parse(self, text: bytes) -> Fields | None:
        """The picking field and the fields of the first variant ``text`` is, or None."""
        for value, template in self.templates.items():
            fields = template.parse(text)
            if fields is not None:
                return {self.key: value, **fields}
        return None

    def choices(self) -> list[tuple[Fields, Template]]:
        """Each variant's template with the field value that picks it."""
        return [({self.key: value}, template) for value, template in self.templates.items()]


class Alternatives:
    """Several texts for one event, picked by the fields the event has.

    ``Alternatives(longer, shorter)`` writes the first text whose fields are
    all in the event: a field that is only sometimes there (``left`` of a
    ``Log Error``) gets its words only when it is.  Reading tries each text
    in order and gives back the fields of the first that matches, so the
    last texts can also be those of records an earlier version wrote.
    """

    def __init__(self, *texts: str) -> None:
        if not texts:
            raise ValueError("Alternatives needs at least one text")
        self.templates = [Template(text) for text in texts]
        self._keys = [frozenset(key for key, _ in t.fields) for t in self.templates]

    def __repr__(self) -> str:
        return f"Alternatives{tuple(t.text for t in self.templates)!r}"

    def format(self, event: Mapping[str, Any]) -> bytes:
        """The text of ``event``, with the first template whose fields it all has."""
        for keys, template in zip(self._keys, self.templates, strict=True):
            if keys <= event.keys():
                return template.format(event)
        return self.templates[-1].format(event)  # raises KeyError, naming a missing field

    def parse(self, text: bytes) -> Fields | None:
        """The fields of the first template ``text`` is, or None."""
        for template in self.templates:
            fields = template.parse(text)
            if fields is not None:
                return fields
        return None

    def choices(self) -> list[tuple[Fields, Template]]:
        """Each template; no field value picks one (the fields present do)."""
        return [({}, template) for template in self.templates]


Text = Template | Variants | Alternatives
