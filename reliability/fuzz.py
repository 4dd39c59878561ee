"""Long fuzzing runs of every parser of untrusted input: only our typed errors come out.

``make reliability`` asks for at least 100 000 inputs per parser and no crash. An input
*crashes* a parser when anything but a :class:`~mesos_secrets.errors.MesosSecretsError`
comes out of it (``KeyError``, ``RecursionError``, ``UnicodeEncodeError``, a warning, as
warnings are errors in the tests…), or one whose message spans lines (the project's rule:
one line naming what is wrong and where; every message of ours is one line today,
:func:`~mesos_secrets.errors.printable` sees to it). Each parser is tried as a user
reaches it:

- ``marathon``: :func:`~mesos_secrets.marathon.load_spec`, what ``validate``,
  ``task-info`` and ``run`` read a spec file with (an app, a pod, a group or an array);
  a spec it accepts is read again with ``strict`` and turned into the Mesos messages
  ``task-info`` prints, which must read back;
- ``mesos``: ``TaskInfo.from_json`` and ``TaskGroupInfo.from_json`` on the bytes, and
  the executor's reading of a LAUNCH: the task decoded as the driver decodes an event
  (``json.loads``; what it refuses is the driver's concern), its id and kill policy read,
  then ``TaskInfo.from_json`` of it, where only a ``SecretValidationError`` is expected
  (the executor fails the task on that one, and on any other gives up on it as a bug);
- ``docker-config``: :func:`~mesos_secrets.docker_config.parse_docker_config` on a
  resolved pull secret, and the credentials looked up in what it read;
- ``acls``: :meth:`ACLs.load <mesos_secrets.acls.ACLs.load>` on a file, and the rules it
  read applied to a few callers and secrets;
- ``config``: :func:`~mesos_secrets.config.load_config` on a file (TOML, or a Mesos
  modules manifest; a file written per input costs little beside the reading), and the
  tables ``run`` and ``agent`` read from what it returns:
  ``[agent]`` (``AgentSettings.from_table``), ``[images]``, ``[fetcher]`` and
  ``[containers]`` (``run``'s private ``_container_options``, for want of a public one);
- ``agent-protocol``: raw HTTP requests to a node agent serving in this process on a
  Unix socket (the embedded store, ACLs, executor tokens checked, an audit file), one
  connection each. A crash: an answer that is not HTTP, a 5xx, a JSON answer not of the
  protocol's shape (a 4xx's message on one line), no answer at all to a request whose
  first line says something, no answer within :data:`ANSWER_WITHIN_S`, an error in the
  agent's log (a request whose handling raised, a resolver that failed), or the agent
  no longer answering ``GET /v1/health`` (asked every :data:`HEALTH_EVERY` inputs). The
  standard library's own refusal of malformed HTTP (``http.server``'s ``send_error``: a
  short HTML page, ``400``, ``414``, ``431``, ``501`` for a method there is no handler
  for, ``505``; bare, as HTTP/0.9, to a request line without a version it can read)
  counts as a clear error.

Inputs. Seeds are real documents of each kind: Marathon's conformance corpus and the
specs collected in the wild (``../shared/conformance``), the TaskInfos and TaskGroupInfos
``task-info`` makes of them, Docker configs with ``auths`` and legacy ``.dockercfg``
ones, ACL documents as the tests and the README write them, configuration files as the
README shows them, and the protocol's requests. Each input is a seed mutated one to a
few times: a value at a random JSON path replaced (hostile strings: NUL, lone
surrogates, control characters, 70 000 characters; numbers past a double or of 5000
digits, ``NaN``, nesting a hundred and fifty thousand deep), a key deleted, an unknown or
misplaced key added, a key given twice, a type changed, a subtree copied elsewhere; then,
one time in three, its bytes cut short, flipped, spliced or its lines duplicated. Among
them are whole documents from the tests' Hypothesis strategies (``tests/strategies.py``):
arbitrary bytes, arbitrary JSON, app- and pod-like JSON, valid TaskInfos.

How Hypothesis is used, measured before choosing: run one input per example, Hypothesis
makes ~5 000 examples/s of ``st.binary()`` but ~800/s of hostile JSON trees, under the
2 000 inputs/s that 100 000 inputs in a minute need. So each example draws a *plan*
(a seed for the mutator, a few hostile JSON values, texts and byte strings, and one
whole document) and :data:`PER_EXAMPLE` inputs are made of it: the document, then
mutations by a ``random.Random`` the plan seeds, inserting the plan's values. Hypothesis
runs its generate phase alone, from a fixed seed, without a database and without the
literals of whatever local modules are loaded; the ids and ports a conversion draws are
fixed too: the same inputs for the same seed in any process. Nothing is shrunk, and
Hypothesis never sees a failure: every input's outcome is counted here, not raised.

Measured on two cores, inputs a second: marathon 4 200, mesos 2 500, docker-config
10 000, acls 3 300, config 2 200, agent-protocol 2 100; 100 000 inputs take 10 to 50
seconds.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import math
import random
import re
import shutil
import socket
import tempfile
import threading
import time
import traceback
import unittest.mock
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import attrs
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from mesos_secrets.errors import MesosSecretsError, SecretValidationError, printable
from tests.strategies import any_text, deeply_nested, hostile_json, spec_documents, tasks

from .sweep import encodings

__all__ = [
    "ANSWER_WITHIN_S",
    "HEALTH_EVERY",
    "PARSERS",
    "PER_EXAMPLE",
    "TARGETS",
    "Crash",
    "FuzzResult",
    "Seed",
    "Target",
    "fuzz",
    "inputs",
    "judge_answer",
]

ROOT = Path(__file__).resolve().parents[1]
#: The shared conformance corpus, beside the checkout (as the tests find it).
CONFORMANCE = ROOT.parent / "shared" / "conformance"
#: Inputs made from one Hypothesis example.
PER_EXAMPLE = 32
#: How often ``progress`` hears of a run (inputs).
PROGRESS_EVERY = 10_000
#: Examples of crashes kept per run.
EXAMPLES_KEPT = 5
#: The node agent must answer a request within this long.
ANSWER_WITHIN_S = 10.0
#: The node agent is asked ``GET /v1/health`` after this many inputs.
HEALTH_EVERY = 50


@attrs.frozen
class FuzzResult:
    """How a run went: inputs tried, how many crashed, a few of those, how long it took."""

    parser: str
    inputs: int
    crashes: int
    #: One line for the first crash of each kind (exception, the project's line it
    #: passed through last): the exception, that line, its message and the input (both
    #: cut short).
    examples: list[str]
    seconds: float


class Crash(Exception):
    """What a parser did wrong other than raising: an answer of the node agent that
    breaks the protocol, an error of ours on more than one line."""


# --- documents and their writers -------------------------------------------------------


class _Raw:
    """Text written as it is where a value goes: what ``json.dumps`` cannot write
    (``NaN`` as a token of its own, 5000 digits, nesting 100 000 deep, bad escapes)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:  # the same in every process, as the inputs
        return f"_Raw({self.text[:40]!r})"


class _Twice:
    """An object written with ``key`` given twice: first ``value``, then as in ``mapping``."""

    __slots__ = ("key", "mapping", "value")

    def __init__(self, mapping: Mapping[str, Any], key: str, value: Any) -> None:
        self.mapping, self.key, self.value = mapping, key, value

    def __repr__(self) -> str:
        return f"_Twice({self.key!r})"


def _json_text(tree: Any, ascii_only: bool = True) -> str:
    """``tree`` as JSON text; :class:`_Raw` and :class:`_Twice` written verbatim."""
    verbatim: list[str] = []

    def default(value: Any) -> Any:
        if isinstance(value, _Raw):
            text = value.text
        elif isinstance(value, _Twice):
            rest = _json_text(dict(value.mapping), ascii_only)[1:]
            first = f"{json.dumps(value.key, ensure_ascii=ascii_only)}: "
            first += _json_text(value.value, ascii_only)
            text = "{" + first + ("" if rest == "}" else ", ") + rest
        else:
            raise TypeError(type(value).__name__)
        verbatim.append(text)
        return f"\0verbatim{len(verbatim) - 1}\0"

    text = json.dumps(tree, default=default, ensure_ascii=ascii_only, allow_nan=True)
    for index, written in enumerate(verbatim):
        placeholder = json.dumps(f"\0verbatim{index}\0", ensure_ascii=ascii_only)
        text = text.replace(placeholder, written, 1)
    return text


def _encode(text: str) -> bytes:
    # A lone surrogate written unescaped: bytes that are not UTF-8, as an attacker sends.
    return text.encode("utf-8", "surrogatepass")


def _write_json(tree: Any, ascii_only: bool = True) -> bytes:
    """A document: JSON text, escaped to ASCII or not, encoded as it is even if that is
    not UTF-8."""
    return _encode(_json_text(tree, ascii_only))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    """A TOML value: JSON's string escapes are TOML's; null, which TOML lacks, is ``{}``."""
    if isinstance(value, _Raw):
        return value.text
    if isinstance(value, _Twice):
        pairs = [(value.key, value.value), *value.mapping.items()]
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in pairs) + "}"
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def _write_toml(tree: Any, ascii_only: bool = True) -> bytes:
    """A configuration file: top-level keys, then a ``[table]`` per table and a
    ``[table.name]`` per table in one (``[resolvers.vault]``), deeper ones inline."""
    if not isinstance(tree, Mapping):
        return _encode(f"value = {_toml_value(tree)}\n")
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in tree.items() if not _table(v)]
    for key, table in tree.items():
        if not _table(table):
            continue
        lines.append(f"\n[{_toml_key(key)}]")
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if not _table(v)]
        for name, inner in table.items():
            if _table(inner):
                lines.append(f"\n[{_toml_key(key)}.{_toml_key(name)}]")
                lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in inner.items()]
    return _encode("\n".join(lines) + "\n")


def _table(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value)


def _word(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, _Raw):
        return value.text
    return _json_text(value)


def _write_http(tree: Any, ascii_only: bool = True) -> bytes:
    """A request from ``{"method", "path", "version", "headers": [[name, value]…],
    "body"}``: ``Content-Length`` added for a body, unless a header gives one already."""
    if not isinstance(tree, Mapping):
        return _write_json(tree, ascii_only)
    line = " ".join(_word(tree.get(part, "")) for part in ("method", "path", "version"))
    headers = tree.get("headers", [])
    lines = [
        f"{_word(h[0])}: {_word(h[1])}" if isinstance(h, list | tuple) and len(h) == 2 else _word(h)
        for h in (headers if isinstance(headers, list) else [headers])
    ]
    body = b""
    if "body" in tree:
        raw = tree["body"]
        body = _encode(raw) if isinstance(raw, str) else _write_json(raw, ascii_only)
        if not any(text.lower().startswith("content-length:") for text in lines):
            lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join([line, *lines]) + "\r\n\r\n"
    try:  # a head is Latin-1 to http.server: "²" is one byte, as a client sends it
        return head.encode("latin-1") + body
    except UnicodeEncodeError:
        return _encode(head) + body


_WRITERS: dict[str, Callable[[Any, bool], bytes]] = {
    "json": _write_json,
    "toml": _write_toml,
    "http": _write_http,
    "bytes": lambda data, ascii_only: bytes(data),
}


@attrs.frozen
class Seed:
    """A document to mutate: its tree and how it is written (``json``, ``toml``,
    ``http``; ``bytes`` for a document that is not JSON, which only its bytes are)."""

    tree: Any
    writer: str = "json"

    def write(self, tree: Any = None, ascii_only: bool = True) -> bytes:
        return _WRITERS[self.writer](self.tree if tree is None else tree, ascii_only)


# --- the mutator -----------------------------------------------------------------------

_STRINGS = [
    *["/", "//", "/..", "..", "../../etc/passwd", "/a/../../b", "*", "**", "/**/x", "~", "0", "-1"],
    *["1e999", "NaN", "null", "true"],
    *["MESOS", "DOCKER", "RO", "RW", "ANY", "NONE", "BRIDGE", "HOST", "user:pass", "dXNlcjpwYXNz"],
    *["!!!", "Bearer"],
    *["busybox:latest", "UPPER:", "127.0.0.1:99999", "[::1]:80", "4GiB", "-5MiB", "1e3MiB"],
    *["", " ", "\0", "a\0b", "\ud800", "\udfff\ud800", "\ud83d\ude00", "\n", "\x1b[2J"],
    *["\u202e", "\x7f", "\x85", "\xa0", "é", "²", "٣", "😀", "a b", "Bearer x"],
    *["a\r\nX-Injected: 1", "sha256:" + "0" * 64, "a" * 300, "a" * 70_000],
]
_NUMBERS = [
    *[0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**300, 10**400],
    *[-0.0, 0.1, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf],
]
_SHAPES: list[Any] = [
    *[None, True, False, [], {}, [None], {"": None}, [["a", "b"]], {"value": "x"}],
    *[{"secret": "s"}, {"source": "/x"}, {"values": ["a"]}, {"type": "ANY"}],
    {"name": "/x", "key": "k"},
]
#: JSON text no ``json.dumps`` writes.
_JSON_TOKENS = [
    *["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "01", "1.", ".5", "-", "1e"],
    *["0x10", "2.5e-400", "-0", "[1,]", "{,}"],
    *["9" * 5000, "-" + "9" * 4301, "1" * 4300, "", '{"a" 1}', '{"a": 1, "a": 2}'],
    *[r'"\ud800"', r'"\udc00\ud800"', r'"\u0000"', r'"\x41"', r'"\u12"', '"\t"', '"\\'],
    *("[" * depth + "]" * depth for depth in (99, 100, 101)),
    '{"a": ' * 101 + "1" + "}" * 101,
]
_TOML_TOKENS = [
    *["nan", "+inf", "-inf", "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "0x_1", "1__0"],
    *["0o777", "0b2", "tru"],
    *["9" * 5000, "'''a\nb'''", '"""\n"""', "'literal\\'", r'"\ud800"', r'"\u0000"', ""],
    *[r'"\x41"', "[" * 1000 + "]" * 1000, "{a.b = 1, a = 2}", "{a = 1, a = 2}", "[1, [{}]]"],
]
_HTTP_TOKENS = [
    *["GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "get", "/v1/resolve", "/v1/release"],
    *["/v1/status"],
    *["/v1/health", "/v1/resolve?x=1", "//v1/resolve", "*", "HTTP/1.0", "HTTP/1.1", "HTTP/2.0"],
    *["HTTP/1.1.1"],
    *["HTTP/0.9", "HTTP/a.b", "x" * 70_000],
]
_HEADERS: list[Any] = [
    *(["Content-Length", n] for n in ("-1", "0", "9" * 20, "1048577", " 5", "1_0", "²", "٣")),
    *[["Transfer-Encoding", "chunked"], ["Expect", "100-continue"], ["Host", ""]],
    *[["Connection", "close"], ["Connection", "keep-alive"], ["Authorization", "Bearer"]],
    *[["Authorization", "Basic dXNlcjpwYXNz"], ["Authorization", "Bearer a.b.c"]],
    *[["Authorization", "Bearer " + "A" * 10_000], ["X" * 70_000, "y"]],
    *["no colon here", " folded continuation"],
]
_TOKENS = {"json": _JSON_TOKENS, "toml": _TOML_TOKENS, "http": _JSON_TOKENS + _HTTP_TOKENS}
#: Bytes worth putting anywhere.
_BYTES = [
    *(bytes([byte]) for byte in b"\0\xff\x80\xc3\xb2\"\\{}[],:=\n #'"),
    *[b"\r\n", b"\r\n\r\n", b"\xed\xa0\x80", b"\xef\xbb\xbf"],
]
_DEPTHS = (2, 50, 99, 100, 101, 150, 1_000, 150_000)

_DELETE = object()


@attrs.frozen
class _Prepared:
    """A seed and what the mutator needs of it: every path in it, its keys and strings."""

    seed: Seed
    paths: tuple[tuple[Any, ...], ...]
    keys: tuple[str, ...]
    strings: tuple[str, ...]


def _prepare(seed: Seed) -> _Prepared:
    paths: list[tuple[Any, ...]] = []
    keys: dict[str, None] = {}
    strings: dict[str, None] = {}
    stack: list[tuple[Any, tuple[Any, ...]]] = [(seed.tree, ())]
    while stack:
        node, path = stack.pop()
        paths.append(path)
        if isinstance(node, dict):
            keys.update(dict.fromkeys(node))
            stack.extend((value, (*path, key)) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, (*path, i)) for i, value in enumerate(node))
        elif isinstance(node, str):
            strings[node] = None
    return _Prepared(seed, tuple(paths), tuple(keys), tuple(strings))


def _get(tree: Any, path: Sequence[Any]) -> Any:
    for step in path:
        tree = tree[step]
    return tree


def _put(tree: Any, path: Sequence[Any], value: Any) -> Any:
    """``tree`` with ``value`` at ``path`` (or that member gone, for :data:`_DELETE`):
    a copy along the path, the rest shared. Raises LookupError or TypeError when the
    path is no longer there (an earlier mutation changed it)."""
    if not path:
        return value
    step, rest = path[0], path[1:]
    if isinstance(tree, dict):
        copy: Any = dict(tree)
    elif isinstance(tree, list):
        copy = list(tree)
    else:
        raise TypeError("not a container")
    if not rest and value is _DELETE:
        del copy[step]
    else:
        copy[step] = _put(tree[step], rest, value)
    return copy


@attrs.frozen
class _Plan:
    """What one Hypothesis example gave: hostile values, texts and bytes to put in."""

    values: list[Any]
    texts: list[str]
    chunks: list[bytes]


@attrs.frozen
class _Corpus:
    """A target's seeds, prepared, and the keys found in any of them."""

    prepared: tuple[_Prepared, ...]
    keys: tuple[str, ...]


class _Mutator:
    """Cheap mutations of a target's seeds, drawn from ``rng``."""

    def __init__(self, corpus: _Corpus, rng: random.Random, plan: _Plan) -> None:
        self.prepared = corpus.prepared
        #: The seeds whose subtrees may go into another's.
        self.trees = [one for one in corpus.prepared if one.seed.writer != "bytes"]
        self.keys = corpus.keys
        self.rng = rng
        self.plan = plan

    def input(self) -> bytes:
        rng = self.rng
        chosen = rng.choice(self.prepared)
        if chosen.seed.writer == "bytes":  # not JSON to begin with: only its bytes change
            data = chosen.seed.tree
            for _ in range(1 + (rng.random() < 0.5)):
                data = self._mutate_bytes(data, "json")
            return data
        tree = chosen.seed.tree
        for _ in range(1 + (rng.random() < 0.5) + (rng.random() < 0.25) + (rng.random() < 0.1)):
            with contextlib.suppress(LookupError, TypeError):
                tree = self._mutate(chosen, tree)
        data = chosen.seed.write(tree, rng.random() < 0.85)
        if rng.random() < 0.33:
            for _ in range(1 + (rng.random() < 0.3)):
                data = self._mutate_bytes(data, chosen.seed.writer)
        return data

    def _mutate(self, chosen: _Prepared, tree: Any) -> Any:
        rng = self.rng
        if chosen.seed.writer == "http" and rng.random() < 0.2:
            return self._header(tree)
        path = rng.choice(chosen.paths)
        node = _get(tree, path)
        roll = rng.random()
        if roll < 0.35:
            return _put(tree, path, self.value(chosen))
        if roll < 0.47 and path:
            return _put(tree, path, _DELETE)
        if roll < 0.59:
            if isinstance(node, dict):
                key = self.key(chosen)
                return _put(tree, path, {**node, key: self.value(chosen)})
            if isinstance(node, list):
                return _put(tree, path, [*node, self.value(chosen)])
            return _put(tree, path, self.retyped(node))
        if roll < 0.71:
            return _put(tree, path, self.retyped(node))
        if roll < 0.81:
            tokens = _TOKENS[chosen.seed.writer]
            return _put(tree, path, _Raw(rng.choice(tokens)))
        if roll < 0.89:
            other = rng.choice(self.trees)
            return _put(tree, path, _get(other.seed.tree, rng.choice(other.paths)))
        if roll < 0.95 and isinstance(node, dict) and node:
            key = rng.choice(list(node))
            return _put(tree, path, _Twice(node, key, self.value(chosen)))
        depth = rng.choice(_DEPTHS)
        if chosen.seed.writer == "toml":
            depth = min(depth, 5_000)
        opening, closing = rng.choice([("[", "]"), ('{"a": ', "}")])
        if chosen.seed.writer == "toml" and opening != "[":
            opening = "{a = "
        return _put(tree, path, _Raw(opening * depth + "1" + closing * depth))

    def _header(self, request: Any) -> Any:
        """A request with a header of :data:`_HEADERS`, anywhere among its own."""
        headers = request.get("headers") if isinstance(request, dict) else None
        if not isinstance(headers, list):
            raise TypeError("no headers")
        at = self.rng.randrange(len(headers) + 1)
        return {**request, "headers": [*headers[:at], self.rng.choice(_HEADERS), *headers[at:]]}

    def key(self, chosen: _Prepared) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5 and self.keys:
            return rng.choice(self.keys)  # a key of the kind, in the wrong place
        if roll < 0.7 and self.plan.texts:
            return rng.choice(self.plan.texts)
        if roll < 0.85:
            return rng.choice(_STRINGS)
        return f"unknown{rng.randrange(100)}"

    def value(self, chosen: _Prepared) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25 and self.plan.values:
            return rng.choice(self.plan.values)
        if roll < 0.45:
            return rng.choice(_STRINGS)
        if roll < 0.6:
            return rng.choice(_NUMBERS)
        if roll < 0.7:
            return rng.choice(_SHAPES)
        if roll < 0.8 and chosen.strings:
            text = rng.choice(chosen.strings)
            return rng.choice([text + "\0", "/" + text, text.upper(), text * 2, text[:1]])
        if roll < 0.88 and self.plan.texts:
            return rng.choice(self.plan.texts)
        if roll < 0.94:
            return [self.value(chosen) for _ in range(rng.randrange(4))]
        return {self.key(chosen): self.value(chosen) for _ in range(rng.randrange(3))}

    def retyped(self, node: Any) -> Any:
        rng = self.rng
        if isinstance(node, bool):
            return rng.choice([int(node), str(node).lower(), None])
        if isinstance(node, int | float):
            bigger = node * 10**300 if abs(node) < 10**3000 else node  # json.dumps stops at 4300
            return rng.choice([str(node), [node], bigger, -node, True])
        if isinstance(node, str):
            return rng.choice(
                [[node], {node: node}, len(node), node.encode("utf-8", "surrogatepass").hex(), None]
            )
        if isinstance(node, list):
            as_object = {str(i): item for i, item in enumerate(node)}
            return rng.choice([as_object, node[:1], node * 3, len(node)])
        if isinstance(node, dict):
            return rng.choice([list(node.values()), list(node), _json_text(node), len(node)])
        return rng.choice(["", 0, [], {}])

    def _mutate_bytes(self, data: bytes, writer: str) -> bytes:
        rng = self.rng
        size = len(data)
        at = rng.randrange(size + 1)
        roll = rng.random()
        if roll < 0.2:
            return data[:at]
        if roll < 0.35 and size:
            at = min(at, size - 1)
            return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
        if roll < 0.6:
            piece = rng.choice(
                [*_BYTES, *self.plan.chunks, rng.choice(_TOKENS[writer]).encode("utf-8")]
            )
            return data[:at] + piece + data[at:]
        if roll < 0.7:
            return data[:at] + data[at + rng.randrange(1, 64) :]
        if roll < 0.8:
            end = min(size, at + rng.randrange(1, 256))
            return data[:end] + data[at:end] + data[end:]
        lines = data.split(b"\n")
        line = rng.randrange(len(lines))
        if roll < 0.9:
            lines.insert(line, lines[line])  # a key, a header, a table given twice
        elif len(lines) > 1:
            other = rng.randrange(len(lines))
            lines[line], lines[other] = lines[other], lines[line]
        return b"\n".join(lines)


# --- the parsers -----------------------------------------------------------------------

#: One input tried: returns if the parser answered or refused it as it should.
Attempt = Callable[[bytes], None]


@attrs.frozen
class Target:
    """A parser under fuzz: its seeds, the whole documents Hypothesis makes for it, and
    a session (what it needs set up: a directory, a running agent) giving the attempt."""

    name: str
    seeds: Callable[[], list[Seed]]
    documents: st.SearchStrategy[bytes]
    session: Callable[[], contextlib.AbstractContextManager[Attempt]]


def _one_line(error: MesosSecretsError) -> None:
    text = str(error)
    if "\n" in text or "\r" in text:
        raise Crash(f"{type(error).__name__} on more than one line: {printable(text, 120)}")


def _typed(call: Callable[[], object]) -> None:
    """Run ``call``; an error of ours is a clear refusal if it is one line."""
    try:
        call()
    except MesosSecretsError as error:
        _one_line(error)


def _attempting(attempt: Attempt) -> Callable[[], contextlib.AbstractContextManager[Attempt]]:
    return lambda: contextlib.nullcontext(attempt)


@contextlib.contextmanager
def _directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mesos-secrets-fuzz-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _spec_files() -> list[Path]:
    return sorted(
        path
        for kind in ("marathon", "marathon-wild")
        for path in (CONFORMANCE / kind).glob("*.json")
        if path.name != "expect.json"
    )


#: When the corpus is not beside the checkout: an app and a pod with secrets.
_FALLBACK_SPECS: list[Any] = [
    {
        "id": "/web",
        "cmd": "env",
        "cpus": 0.1,
        "mem": 32,
        "env": {"DB": {"secret": "db"}, "PLAIN": "x"},
        "secrets": {"db": {"source": "/app/db@password"}, "tls": {"source": "/app/tls"}},
        "container": {
            "type": "MESOS",
            "docker": {"image": "busybox", "pullConfig": {"secret": "tls"}},
            "volumes": [{"containerPath": "tls", "secret": "tls"}],
        },
    },
    {
        "id": "/pod",
        "containers": [
            {
                "name": "c",
                "resources": {"cpus": 0.1, "mem": 32},
                "exec": {"command": {"shell": "env"}},
                "environment": {"DB": {"secret": "db"}},
                "volumeMounts": [{"name": "v", "mountPath": "/s"}],
            }
        ],
        "volumes": [{"name": "v", "secret": "db"}],
        "secrets": {"db": {"source": "/app/db"}},
    },
]


def _marathon_seeds() -> list[Seed]:
    seeds = []
    for path in _spec_files():
        data = path.read_bytes()
        try:
            seeds.append(Seed(json.loads(data)))
        except ValueError:  # the corpus's malformed JSON, on purpose
            seeds.append(Seed(data, "bytes"))
    return seeds or [Seed(tree) for tree in _FALLBACK_SPECS]


def _fixed_ports(requests: Sequence[int | None]) -> list[int | None]:
    """Host ports without asking this host for free ones (the default binds sockets)."""
    return [20_000 + i if request == 0 else request for i, request in enumerate(requests)]


def _messages(spec: Any) -> list[Any]:
    """The Mesos messages ``task-info`` prints for ``spec``, made deterministically."""
    from mesos_secrets.marathon import App  # noqa: PLC0415
    from mesos_secrets.pods import Pod  # noqa: PLC0415
    from mesos_secrets.task_env import LaunchContext  # noqa: PLC0415

    context = LaunchContext(host="agent.example", version="2024-01-01T00:00:00.000Z")
    if isinstance(spec, App):
        return [spec.to_task_info("fuzz.1", context=context, ports=_fixed_ports)]
    if isinstance(spec, Pod):
        return list(spec.to_launch_group("fuzz", context=context, ports=_fixed_ports))
    return [
        app.to_task_info(f"fuzz.{i}", context=context, ports=_fixed_ports)
        for i, app in enumerate(spec.apps_in_order())
    ]


def _try_marathon(data: bytes) -> None:
    from mesos_secrets.marathon import load_spec  # noqa: PLC0415

    spec = load_spec(data)
    _typed(lambda: load_spec(data, strict=True))
    for message in _messages(spec):
        text = json.dumps(message.to_json(), allow_nan=False)
        type(message).from_json(text)  # what task-info prints reads back


def _mesos_seeds() -> list[Seed]:
    from mesos_secrets.marathon import load_spec  # noqa: PLC0415

    seeds = []
    # uuid4() as a counter and the random ports of PORT_* seeded: the ids and ports a
    # conversion makes are the same in every process, and so are the inputs made of them.
    counted = (uuid.UUID(int=number) for number in itertools.count(1))
    with (
        unittest.mock.patch("uuid.uuid4", side_effect=counted),
        unittest.mock.patch("mesos_secrets.networking.random", random.Random(0)),
    ):
        for seed in _marathon_seeds():
            if seed.writer != "json":
                continue
            try:
                messages = _messages(load_spec(json.dumps(seed.tree)))
            except MesosSecretsError:
                continue
            seeds += [Seed(message.to_json()) for message in messages]
    # The executor reads a task's kill policy first, apart from the rest; no spec of the
    # corpus sets taskKillGracePeriodSeconds, so a few tasks get one.
    policy = {"grace_period": {"nanoseconds": 3_000_000_000}}
    tasks = [seed.tree for seed in seeds if "task_id" in seed.tree][:20]
    return seeds + [Seed({**task, "kill_policy": policy}) for task in tasks]


def _try_mesos(data: bytes) -> None:
    from mesos_secrets.executor import _grace_period, _task_id  # noqa: PLC0415
    from mesos_secrets.mesos import TaskGroupInfo, TaskInfo  # noqa: PLC0415

    _typed(lambda: TaskInfo.from_json(data))
    _typed(lambda: TaskGroupInfo.from_json(data))
    try:  # a LAUNCH's task, or a LAUNCH_GROUP's tasks, as the driver decodes an event
        event = json.loads(data)
    except (ValueError, RecursionError):
        return
    group = isinstance(event, dict) and isinstance(event.get("tasks"), list)
    for raw in event["tasks"] if group else [event]:
        try:
            _task_id(raw)
            _grace_period(raw.get("kill_policy") if isinstance(raw, Mapping) else None)
            if isinstance(raw, dict):
                TaskInfo.from_json(dict(raw))
        except SecretValidationError as error:  # the executor catches this one alone
            _one_line(error)
        except Exception as error:
            message = f"the executor's reading of a LAUNCH: {type(error).__name__}: {error}"
            raise Crash(message) from error


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


#: The seeds' passwords: no error may hold one, as it is or encoded (a pull secret's
#: whole document is secret; an error names where it is wrong, never what it holds).
_PASSWORDS = ("CANARYfuzzPassword0pullSecret01", "CANARYfuzzPassword1pullSecret02")
_PASSWORD_NEEDLES: frozenset[bytes] = frozenset(
    needle for password in _PASSWORDS for needle in encodings(password)
)

_DOCKER_CONFIGS: list[Any] = [
    {"auths": {"registry.example.com": {"auth": _auth("user", _PASSWORDS[0])}}},
    {
        "auths": {
            "https://index.docker.io/v1/": {"auth": _auth("u", "p:q"), "email": "u@example.com"},
            "r.example:5000": {"username": "u", "password": _PASSWORDS[1]},
            "ghcr.io": {"identitytoken": "token"},
            "quay.io": {},
        },
        "credsStore": "desktop",
        "credHelpers": {"gcr.io": "gcloud"},
        "HttpHeaders": {"User-Agent": "Docker-Client/24.0"},
    },
    {"registry.example.com": {"auth": _auth("legacy", "pw"), "email": "x@example.com"}},
    {"auths": {}},
]


def _try_docker_config(data: bytes) -> None:
    from mesos_secrets.docker_config import parse_docker_config  # noqa: PLC0415
    from mesos_secrets.secretbytes import SecretBytes  # noqa: PLC0415

    try:
        config = parse_docker_config(SecretBytes(data), source="secret '/pull'")
        for registry in (*config.registries, "docker.io", "registry.example.com"):
            config.credentials_for(registry)
    except MesosSecretsError as error:
        text = str(error).encode("utf-8", "surrogateescape")
        if any(needle in text for needle in _PASSWORD_NEEDLES):
            raise Crash(f"{type(error).__name__} holds a password of the document") from None
        raise


_ACLS: list[Any] = [
    {
        "permissive": False,
        "access_secrets": [
            {"principals": {"values": ["ops"]}, "secrets": {"values": ["/ops/**", "/shared/*"]}},
            {"principals": {"values": ["dev"]}, "secrets": {"values": ["/dev/*/db"]}},
            {"principals": {"type": "ANY"}, "secrets": {"type": "NONE"}},
        ],
    },
    {
        "permissive": True,
        "access_secrets": [{"principals": {"values": ["ops"]}, "secrets": {"type": "ANY"}}],
    },
    {"access_secrets": []},
]


@contextlib.contextmanager
def _acls_session() -> Iterator[Attempt]:
    from mesos_secrets.acls import ACLs  # noqa: PLC0415

    with _directory() as directory:
        file = directory / "acls.json"

        def attempt(data: bytes) -> None:
            file.write_bytes(data)
            acls = ACLs.load(file)
            for principal in (None, "", "ops", "dev"):
                for secret in ("/ops/db", "shared/x", "/dev/web/db", "x", "/"):
                    acls.allows(principal, secret)

        yield attempt


_CONFIGS: list[Any] = [
    {
        "resolver": "local",
        "isolation": "environment_secret,volume_secret",
        "runtime_dir": "/run/mesos-secrets",
        "isolators": {"volume_secret": {"size": "1MiB", "noswap": True}},
        "resolvers": {
            "local": {
                "home": "/var/lib/mesos-secrets",
                "key_file": "/run/keys/mesos-secrets",
                "max_versions": 10,
            }
        },
    },
    {
        "resolver": "vault",
        "acls": "/etc/mesos-secrets/acls.json",
        "resolvers": {
            "vault": {"address": "https://vault.example:8200", "role_id": "r", "secret_id": "s"}
        },
        "agent": {
            "cache_ttl": 5,
            "max_stale": 300,
            "executor_secret_key": "/etc/mesos/executor-secret-key",
            "metrics_address": "127.0.0.1:9273",
            "socket": "/run/mesos-secrets/agent.sock",
            "socket_group": "mesos",
            "require_token": True,
            "executor_principals": ["ops"],
            "principals": {"0": "ops"},
            "cache_ttls": {"/db/**": 1.5},
        },
    },
    {
        "isolation": ["environment_secret", "volume_secret"],
        "containers": {
            "capabilities": ["NET_BIND_SERVICE", "CAP_CHOWN"],
            "read_only_host": True,
            "no_new_privileges": False,
        },
        "images": {
            "store": "/var/lib/mesos-secrets/images",
            "ca_bundle": "/etc/ssl/internal-ca.pem",
            "insecure_registries": ["localhost:5000"],
            "insecure_credentials": False,
            "timeout": 30,
            "registry": "mirror.internal:5000",
        },
        "fetcher": {
            "cache_dir": "/var/lib/mesos-secrets/fetcher",
            "cache_size": "2GiB",
            "timeout": 60,
            "ca_bundle": "/etc/ssl/internal-ca.pem",
        },
        "audit": {"file": "/var/log/mesos-secrets/audit.log", "logger": True},
    },
]
_MODULES: list[Any] = [
    {
        "libraries": [
            {
                "name": "mesos_secrets",
                "modules": [
                    {
                        "name": "local",
                        "parameters": [{"key": "home", "value": "/var/lib/mesos-secrets"}],
                    }
                ],
            }
        ]
    },
    {
        "libraries": [
            {
                "file": "/usr/lib/libsecrets.so",
                "modules": [
                    {
                        "name": "vault",
                        "parameters": [{"key": "address", "value": "https://vault:8200"}],
                    },
                    {"name": "org_apache_mesos_TestIsolator"},
                ],
            }
        ]
    },
]


@contextlib.contextmanager
def _config_session() -> Iterator[Attempt]:
    from mesos_secrets.agent.settings import AgentSettings  # noqa: PLC0415
    from mesos_secrets.config import load_config  # noqa: PLC0415
    from mesos_secrets.fetcher import Fetcher  # noqa: PLC0415
    from mesos_secrets.images import RegistryOptions  # noqa: PLC0415
    from mesos_secrets.registry import resolvers  # noqa: PLC0415
    from mesos_secrets.run import _container_options  # noqa: PLC0415

    known = resolvers.names()
    with _directory() as directory:
        file = directory / "config"

        def attempt(data: bytes) -> None:
            file.write_bytes(data)
            config = load_config(file, known=known)
            _typed(lambda: AgentSettings.from_table(config.agent, directory))
            _typed(lambda: RegistryOptions.from_config(config.images))
            _typed(lambda: Fetcher.from_config(config.fetcher))
            _typed(lambda: _container_options(config))

        yield attempt


def _config_seeds() -> list[Seed]:
    return [Seed(tree, "toml") for tree in _CONFIGS] + [Seed(tree) for tree in _MODULES]


# --- the node agent --------------------------------------------------------------------

#: The executor key of the agent under fuzz, and the tokens minted with it.
_KEY = b"fuzz-executor-secret-key-0123456789abcdef"


def _tokens() -> list[str]:
    from mesos_secrets.tokens import mint, mint_executor_token  # noqa: PLC0415

    return [
        mint_executor_token(_KEY, "fw-1", "ex-1", "ct-1"),
        mint({"fid": 1, "eid": ["e"], "cid": {"c": None}}, _KEY),
        mint({"fid": "fw-1"}, _KEY),
        mint({"fid": "fw", "eid": "ex", "cid": "ct"}, b"another key, as long as the agent's"),
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJmaWQiOiJmIn0.",
    ]


def _agent_seeds() -> list[Seed]:
    json_headers = [["Host", "localhost"], ["Content-Type", "application/json"]]
    resolve = {
        "references": [{"name": "/app/db", "key": "password"}, {"name": "/shared/x"}],
        "context": {"task_id": "web.1", "container_id": "ct-1", "principal": "ops"},
        "client": "fuzz",
    }
    requests: list[dict[str, Any]] = [
        {"method": "POST", "path": "/v1/resolve", "headers": json_headers, "body": resolve},
        {
            "method": "POST",
            "path": "/v1/resolve",
            "headers": [["Host", "localhost"]],
            "body": {"references": [{"name": "/ops/key"}, {"name": "app/db/", "key": "user"}]},
        },
        {
            "method": "POST",
            "path": "/v1/release",
            "headers": json_headers,
            "body": {"context": {"task_id": "web.1"}, "client": "fuzz"},
        },
        {"method": "GET", "path": "/v1/status", "headers": [["Host", "localhost"]]},
        {"method": "GET", "path": "/v1/health", "headers": []},
    ]
    for token in _tokens():
        requests.append(
            {
                "method": "POST",
                "path": "/v1/resolve",
                "headers": [*json_headers, ["Authorization", f"Bearer {token}"]],
                "body": resolve,
            }
        )
    return [Seed({"version": "HTTP/1.1", **request}, "http") for request in requests]


#: ``http.server``'s own refusals of malformed HTTP (``send_error``: an HTML page).
_STDLIB_REFUSALS = frozenset({400, 408, 414, 431, 501, 505})
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?")
#: ``send_error``'s page alone, as ``http.server`` answers a request line it could not
#: read a version from: the way of HTTP/0.9, without a status line or headers.
_BARE_REFUSAL = re.compile(rb"<!DOCTYPE HTML>\n.*<p>Error code: (\d{3})</p>.*</html>\n", re.S)


class _Response(NamedTuple):
    code: int
    headers: dict[str, str]
    body: bytes


def _responses(data: bytes, bodies: bool = True) -> tuple[list[_Response], bytes]:
    """The HTTP responses in ``data``, and what follows them that is not one. Without
    ``bodies`` (the answer to ``HEAD``) none has a body, whatever its headers say."""
    found = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = _STATUS_LINE.fullmatch(lines[0])
        if not separator or status is None:
            break
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                return found, data
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        code = int(status.group(1))
        length = headers.get("content-length", "0") if bodies and code >= 200 else "0"
        if not (length.isascii() and length.isdigit()) or len(rest) < int(length):
            break
        found.append(_Response(code, headers, rest[: int(length)]))
        data = rest[int(length) :]
    return found, data


def _request_line(request: bytes) -> list[str]:
    """The words of ``request``'s first line as ``http.server`` splits them (Latin-1)."""
    return str(request.split(b"\n", 1)[0], "iso-8859-1").rstrip("\r\n").split()


def judge_answer(request: bytes, answer: bytes) -> str | None:
    """What is wrong with the agent's ``answer`` to ``request`` (None: nothing).

    Every answer must be well-formed HTTP: JSON from the agent (``200``, or a ``4xx``
    with ``{"error": {"kind", "message"}}``, the message on one line), or the standard
    library's HTML refusal of malformed HTTP (bare, for a request line without a
    version it can read, which may follow other answers). HTTP/0.9 (``GET /path``, or a
    request that says ``HTTP/0.9``) is answered with a body alone. Nothing at all is an
    answer only to a request whose first line is blank, which ``http.server`` ignores.
    """
    words = _request_line(request)
    simple = (len(words) == 2 and words[0] == "GET") or words[2:] == ["HTTP/0.9"]
    if simple and not answer.startswith(b"HTTP/"):
        return _judge_simple(answer)
    found, rest = _responses(answer, bodies=words[:1] != ["HEAD"])
    bare = _BARE_REFUSAL.fullmatch(rest)
    if bare is not None and int(bare.group(1)) in _STDLIB_REFUSALS:
        return None  # what followed a request (its unread body, say) refused as one
    if rest:
        return f"an answer that is not HTTP: {printable(repr(rest), 80)}"
    final = [response for response in found if response.code >= 200]
    if not final:
        return "no answer to a request" if words else None
    for response in final:
        problem = _judge_response(response)
        if problem is not None:
            return problem
    return None


def _judge_simple(answer: bytes) -> str | None:
    """An answer to HTTP/0.9's ``GET /path``: the body alone, no status nor headers."""
    bare = _BARE_REFUSAL.fullmatch(answer)
    if bare is not None and int(bare.group(1)) in _STDLIB_REFUSALS:
        return None
    if not answer:
        return "no answer to a request"
    document = _json_object(answer)
    if document is None:
        return f"an HTTP/0.9 answer that is not a JSON object: {printable(repr(answer), 80)}"
    return _judge_error(document, "an HTTP/0.9 answer") if "error" in document else None


def _judge_response(response: _Response) -> str | None:
    code, headers, body = response
    kind = headers.get("content-type", "")
    if kind.startswith("text/html") and code in _STDLIB_REFUSALS:
        return None
    if kind != "application/json":
        return f"{code} with Content-Type {kind!r}"
    document = _json_object(body)
    if document is None:
        return f"{code} with a body that is not a JSON object"
    if code == 200:
        return None
    if not 400 <= code < 500:
        return f"{code} {printable(repr(body), 120)}"
    return _judge_error(document, str(code))


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _judge_error(document: dict[str, Any], what: str) -> str | None:
    error = document.get("error")
    if not (
        isinstance(error, dict)
        and isinstance(error.get("kind"), str)
        and isinstance(error.get("message"), str)
    ):
        return f"{what} with a body not of the protocol's error shape"
    if "\n" in error["message"]:
        return f"{what} with a message on more than one line"
    return None


class _Errors(logging.Handler):
    """The agent's log records at ERROR and above: a request whose handling raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.lines.append(printable(record.getMessage(), 160))

    def take(self) -> list[str]:
        with self._guard:
            lines, self.lines = self.lines, []
        return lines


class _AgentUnderFuzz:
    """A node agent serving in this process: the embedded store with a few secrets,
    ACLs, executor tokens checked, an audit file; restarted when its callers' holdings
    grow near the per-process limit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "run" / "agent.sock"
        self.errors = _Errors()
        self.running: Any = None
        self.tried = 0

    def start(self) -> None:
        from mesos_secrets.acls import ACLs  # noqa: PLC0415
        from mesos_secrets.agent.server import Agent, Running, bind_socket  # noqa: PLC0415
        from mesos_secrets.agent.settings import AgentSettings  # noqa: PLC0415
        from mesos_secrets.audit import AuditLog  # noqa: PLC0415
        from resolvers.local import LocalResolver, LocalStore  # noqa: PLC0415

        home = self.directory / "store"
        if not home.exists():
            store = LocalStore(home)
            store.put("/app/db", {"password": b"fuzz-password", "user": b"app"})
            store.put("/shared/x", {"value": b"shared"})
            store.put("/ops/key", {"value": b"\0\xff binary"})
        key = self.directory / "executor-key"
        key.write_bytes(_KEY)
        key.chmod(0o600)
        self.socket.parent.mkdir(mode=0o700, exist_ok=True)
        settings = AgentSettings.from_table(
            {
                "socket": str(self.socket),
                "cache_ttl": 5,
                "executor_secret_key": str(key),
                "executor_principals": ["ops"],
            },
            self.directory,
        )
        acls = ACLs.from_json(_ACLS[0])
        audit_file = self.directory / "audit.log"
        audit_file.unlink(missing_ok=True)
        agent = Agent(LocalResolver(home), settings, acls=acls, audit=AuditLog(audit_file))
        self.running = Running(agent, bind_socket(self.socket))

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    def exchange(self, request: bytes) -> bytes:
        """Send ``request`` on a new connection, then read until the agent closes it."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(ANSWER_WITHIN_S)
            sock.connect(str(self.socket))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(request)  # refused before it was all read: the answer says why
                sock.shutdown(socket.SHUT_WR)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except ConnectionResetError:
                pass
            except TimeoutError:
                raise Crash(f"no answer within {ANSWER_WITHIN_S:g} s") from None
        return b"".join(chunks)

    def healthy(self) -> bool:
        try:
            answer = self.exchange(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        except (OSError, Crash):
            return False
        found, _ = _responses(answer)
        return bool(found) and found[0].code == 200 and found[0].body == b'{"ok":true}'

    def attempt(self, data: bytes) -> None:
        self.tried += 1
        try:
            answer = self.exchange(data)
        finally:
            logged = self.errors.take()
        problem = judge_answer(data, answer)
        if logged:
            problem = f"the agent logged: {logged[0]}" + (f" ({problem})" if problem else "")
        if self.tried % HEALTH_EVERY == 0 and not self.healthy():
            problem = problem or f"the agent stopped answering within the last {HEALTH_EVERY}"
            self.stop()
            self.start()
        elif self.tried % 200 == 0 and len(self.running.agent.status()["containers"]) > 512:
            self.stop()  # every holding ends: room for this process's next 1024
            self.start()
        if problem is not None:
            raise Crash(problem)


@contextlib.contextmanager
def _agent_session() -> Iterator[Attempt]:
    logger = logging.getLogger("mesos_secrets.agent")
    with _directory() as directory:
        agent = _AgentUnderFuzz(directory)
        logger.addHandler(agent.errors)
        try:
            agent.start()
            yield agent.attempt
        finally:
            logger.removeHandler(agent.errors)
            agent.stop()


def _request(body: Any) -> bytes:
    return _write_http(
        {"method": "POST", "path": "/v1/resolve", "version": "HTTP/1.1", "body": body}
    )


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


TARGETS: dict[str, Target] = {
    "marathon": Target("marathon", _marathon_seeds, spec_documents, _attempting(_try_marathon)),
    "mesos": Target(
        "mesos",
        _mesos_seeds,
        spec_documents | tasks.map(lambda task: _dumps(task.to_json())),
        _attempting(_try_mesos),
    ),
    "docker-config": Target(
        "docker-config",
        lambda: [Seed(tree) for tree in _DOCKER_CONFIGS],
        st.binary()
        | deeply_nested
        | hostile_json.map(_dumps)
        | st.dictionaries(any_text, hostile_json, max_size=3).map(
            lambda auths: _dumps({"auths": auths})
        ),
        _attempting(_try_docker_config),
    ),
    "acls": Target(
        "acls",
        lambda: [Seed(tree) for tree in _ACLS],
        spec_documents
        | hostile_json.map(lambda rules: _dumps({"access_secrets": rules}))
        | st.lists(
            st.fixed_dictionaries({"principals": hostile_json, "secrets": hostile_json}),
            max_size=3,
        ).map(lambda rules: _dumps({"access_secrets": rules})),
        _acls_session,
    ),
    "config": Target(
        "config",
        _config_seeds,
        st.binary()
        | hostile_json.map(_write_toml)
        | st.dictionaries(
            st.sampled_from(["resolver", "agent", "images", "fetcher", "containers", "x"]),
            hostile_json,
            max_size=3,
        ).map(_write_toml)
        | hostile_json.map(lambda libraries: _dumps({"libraries": libraries})),
        _config_session,
    ),
    "agent-protocol": Target(
        "agent-protocol",
        _agent_seeds,
        st.binary() | hostile_json.map(_request),
        _agent_session,
    ),
}
#: The parsers, in the order the runner reports them.
PARSERS: tuple[str, ...] = tuple(TARGETS)

_CORPORA: dict[str, _Corpus] = {}


def _corpus(target: Target) -> _Corpus:
    """``target``'s seeds, prepared once per process."""
    corpus = _CORPORA.get(target.name)
    if corpus is None:
        prepared = tuple(_prepare(seed) for seed in target.seeds())
        keys = tuple(dict.fromkeys(key for one in prepared for key in one.keys))
        corpus = _CORPORA[target.name] = _Corpus(prepared, keys)
    return corpus


def _plans(target: Target) -> st.SearchStrategy[tuple[int, _Plan, bytes]]:
    return st.tuples(
        st.integers(0, 2**64 - 1),
        st.builds(
            _Plan,
            st.lists(hostile_json, max_size=3),
            st.lists(any_text, max_size=3),
            st.lists(st.binary(min_size=1, max_size=16), max_size=2),
        ),
        target.documents,
    )


@contextlib.contextmanager
def _no_local_constants() -> Iterator[None]:
    """Hypothesis also draws literals of the local modules this process has loaded (its
    "local constants"), which differ with what was imported before: none, so that a seed
    makes the same inputs in the runner, a test or a shell. (Hypothesis' internals: if
    they change, generation still works, only less reproducibly across processes.)"""
    try:
        from hypothesis.internal.conjecture import providers  # noqa: PLC0415
        from hypothesis.internal.constants_ast import Constants  # noqa: PLC0415
    except ImportError:
        yield
        return
    if not hasattr(providers, "_get_local_constants"):
        yield
        return
    providers.CONSTANTS_CACHE.cache.clear()  # what was drawn from the modules so far
    try:
        with unittest.mock.patch.object(
            providers, "_get_local_constants", return_value=Constants()
        ):
            yield
    finally:
        providers.CONSTANTS_CACHE.cache.clear()


def _generate(target: Target, count: int, seed: int, each: Callable[[bytes], None]) -> None:
    """Make ``count`` inputs for ``target`` from ``seed``, handing each to ``each``."""
    with _no_local_constants():
        _rounds(target, count, seed, each)


def _rounds(target: Target, count: int, seed: int, each: Callable[[bytes], None]) -> None:
    corpus = _corpus(target)
    plans = _plans(target)
    made = 0
    rounds = 0
    while made < count:  # one round, unless Hypothesis ends it early

        @hypothesis_seed(seed * 1_000_003 + rounds)
        @settings(
            max_examples=-(-(count - made) // PER_EXAMPLE),
            database=None,
            phases=[Phase.generate],
            derandomize=False,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )
        @given(plans)
        def run(plan: tuple[int, _Plan, bytes]) -> None:
            nonlocal made
            number, values, document = plan
            rng = random.Random(number)
            mutator = _Mutator(corpus, rng, values)
            for index in range(min(PER_EXAMPLE, count - made)):
                made += 1
                each(document if index == 0 else mutator.input())

        run()
        rounds += 1


def inputs(parser: str, count: int, *, seed: int = 0) -> list[bytes]:
    """The inputs :func:`fuzz` tries for ``parser`` (the same, for the same ``seed``)."""
    made: list[bytes] = []
    _generate(_target(parser), count, seed, made.append)
    return made


def _target(parser: str) -> Target:
    try:
        return TARGETS[parser]
    except KeyError:
        raise ValueError(f"no parser {parser!r} (known: {', '.join(TARGETS)})") from None


def _describe(error: BaseException, data: bytes) -> tuple[str, str]:
    """What kind of crash ``error`` is (its type, the last line of the project it passed
    through, the start of its message), and one line saying so with its input, cut short."""
    frames = [
        frame
        for frame in traceback.extract_tb((error.__cause__ or error).__traceback__)
        if Path(frame.filename).is_relative_to(ROOT)
        and not Path(frame.filename).is_relative_to(ROOT / "reliability")
    ]
    where = ""
    if frames:
        last = frames[-1]
        where = f" at {Path(last.filename).relative_to(ROOT)}:{last.lineno} ({last.name})"
    message = printable(str(error), 160)
    line = f"{type(error).__name__}{where}: {message} on {printable(repr(data), 200)}"
    return f"{type(error).__name__}{where}: {message[:40]}", line


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The library's log kept off the terminal: a line per ignored ``credsStore`` is
    100 000 lines (what a target must notice in it, it reads with a handler of its own)."""
    logger = logging.getLogger("mesos_secrets")
    silent = logging.NullHandler()
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(silent)
    try:
        yield
    finally:
        logger.removeHandler(silent)
        logger.propagate = propagate


def fuzz(
    parser: str,
    inputs: int,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> FuzzResult:
    """Try ``inputs`` inputs on ``parser`` (one of :data:`PARSERS`), made from ``seed``;
    every crash is counted, and the first of each kind described (:data:`EXAMPLES_KEPT`
    kinds at most)."""
    target = _target(parser)
    started = time.monotonic()
    tried = crashes = 0
    examples: dict[str, str] = {}  # the first of each kind of crash

    def crashed(error: BaseException, data: bytes) -> None:
        nonlocal crashes
        crashes += 1
        kind, line = _describe(error, data)
        if kind not in examples and len(examples) < EXAMPLES_KEPT:
            examples[kind] = line

    with _quiet(), target.session() as attempt:

        def each(data: bytes) -> None:
            nonlocal tried
            tried += 1
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # as in the tests
                    attempt(data)
            except MesosSecretsError as error:
                try:
                    _one_line(error)
                except Crash as crash:
                    crash.__traceback__ = error.__traceback__
                    crashed(crash, data)
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # noqa: BLE001 (what a parser must never raise)
                crashed(error, data)
            if progress is not None and tried % PROGRESS_EVERY == 0:
                progress(f"fuzz {parser}: {tried}/{inputs}, {crashes} crashes")

        _generate(target, inputs, seed, each)
    return FuzzResult(parser, tried, crashes, list(examples.values()), time.monotonic() - started)
