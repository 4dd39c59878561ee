"""The reliability suite's fuzzer (``reliability/fuzz.py``): a short run of every parser
finds nothing, the same seed makes the same inputs, and a crash, in a parser or in the
node agent, is counted and described rather than missed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import strategies as st

from mesos_secrets.agent import protocol
from mesos_secrets.errors import MesosSecretsError, SecretValidationError
from reliability import fuzz as fuzzer
from reliability.fuzz import PARSERS, FuzzResult, Seed, Target, fuzz, inputs, judge_answer


@pytest.mark.parametrize("parser", PARSERS)
def test_a_short_run_finds_no_crash(parser: str) -> None:
    started = time.monotonic()
    lines: list[str] = []
    result = fuzz(parser, 300, progress=lines.append)
    assert isinstance(result, FuzzResult)
    assert (result.parser, result.inputs) == (parser, 300)
    assert result.crashes == 0, result.examples
    assert result.examples == []
    assert 0 < result.seconds < time.monotonic() - started + 0.1
    assert lines == []  # a line every 10 000 inputs


def test_the_runner_hears_of_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzzer, "PROGRESS_EVERY", 100)
    lines: list[str] = []
    fuzz("docker-config", 250, progress=lines.append)
    assert lines == [
        "fuzz docker-config: 100/250, 0 crashes",
        "fuzz docker-config: 200/250, 0 crashes",
    ]


@pytest.mark.parametrize("parser", ["marathon", "config", "agent-protocol"])
def test_the_same_seed_makes_the_same_inputs(parser: str) -> None:
    first = inputs(parser, 100, seed=7)
    assert len(first) == 100
    assert inputs(parser, 100, seed=7) == first
    assert inputs(parser, 100, seed=8) != first
    assert len(set(first)) > 80  # mutations, not the seeds over and over


DIGESTS = """
import hashlib
from reliability.fuzz import PARSERS, inputs
for parser in PARSERS:
    print(hashlib.sha256(b"".join(inputs(parser, 200, seed=11))).hexdigest())
"""


def test_the_same_seed_makes_the_same_inputs_in_another_process() -> None:
    """What a run found, another run finds: nothing in the inputs hangs on this
    process (its hash seed, the ids and ports conversions draw)."""
    ours = [hashlib.sha256(b"".join(inputs(p, 200, seed=11))).hexdigest() for p in PARSERS]
    environment = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(fuzzer.ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", DIGESTS],
        check=True,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert done.stdout.split() == ours


def test_an_unknown_parser_is_named() -> None:
    with pytest.raises(ValueError, match=r"no parser 'yaml' \(known: marathon, mesos, "):
        fuzz("yaml", 1)


# --- a crash is noticed ----------------------------------------------------------------


def refuse_or_break(data: bytes) -> None:
    """A parser that refuses everything, as it should, but breaks on an ``a`` or a ``1``."""
    if b"a" in data:
        raise KeyError("a")
    if b"1" in data:
        raise TypeError("1")
    raise SecretValidationError("refused", "/")


def two_lines(data: bytes) -> None:
    raise MesosSecretsError("refused:\nwhere")


def register(monkeypatch: pytest.MonkeyPatch, attempt: Any) -> None:
    target = Target(
        "broken",
        lambda: [Seed({"key": "value", "list": [1, 2]})],
        st.binary(max_size=8),
        lambda: contextlib.nullcontext(attempt),
    )
    monkeypatch.setitem(fuzzer.TARGETS, "broken", target)


def test_every_crash_is_counted_and_each_kind_described(monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, refuse_or_break)
    made = inputs("broken", 400, seed=3)
    expected = sum(b"a" in data or b"1" in data for data in made)
    assert 0 < expected < 400
    result = fuzz("broken", 400, seed=3)
    assert (result.inputs, result.crashes) == (400, expected)
    first = refuse_or_break.__code__.co_firstlineno
    where = "tests/test_reliability_fuzz.py"
    assert sorted(example.split(" on b")[0] for example in result.examples) == [
        f"KeyError at {where}:{first + 3} (refuse_or_break): 'a'",
        f"TypeError at {where}:{first + 5} (refuse_or_break): 1",
    ]
    for example in result.examples:
        assert "\n" not in example
        assert len(example) < 400
    again = fuzz("broken", 400, seed=3)
    assert (again.crashes, again.examples) == (result.crashes, result.examples)


def test_no_more_kinds_described_than_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    def many_kinds(data: bytes) -> None:
        raise [KeyError, TypeError, ValueError, IndexError, OSError, RuntimeError][len(data) % 6]

    register(monkeypatch, many_kinds)
    result = fuzz("broken", 200)
    assert result.crashes == 200
    assert len(result.examples) == fuzzer.EXAMPLES_KEPT


def test_an_error_of_ours_on_two_lines_is_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch, two_lines)
    result = fuzz("broken", 50)
    assert result.crashes == 50
    line = two_lines.__code__.co_firstlineno + 1
    assert result.examples[0].startswith(
        f"Crash at tests/test_reliability_fuzz.py:{line} (two_lines): MesosSecretsError on "
        "more than one line: refused:\\nwhere on b"
    ), result.examples[0]


def test_an_error_in_the_agent_is_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request whose handling raises: the agent logs it and closes the connection."""

    def broken(raw: Any) -> Any:
        raise KeyError("references")

    monkeypatch.setattr(protocol, "references_from_json", broken)
    result = fuzz("agent-protocol", 100)
    assert result.crashes > 0
    assert any(
        example.startswith(
            "Crash: the agent logged: serving a request failed: KeyError (no answer to a "
            "request) on b'POST /v1/resolve HTTP/1.1"
        )
        for example in result.examples
    ), result.examples


# --- what the node agent may answer ----------------------------------------------------

RESOLVE = b"POST /v1/resolve HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"


def response(status: str, body: bytes, kind: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def page(code: int) -> bytes:
    return (
        b'<!DOCTYPE HTML>\n<html lang="en">\n    <head>\n        <title>Error response</title>'
        b"\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: "
        + str(code).encode()
        + b"</p>\n    </body>\n</html>\n"
    )


@pytest.mark.parametrize(
    ("request_", "answer", "verdict"),
    [
        (RESOLVE, response("200 OK", b'{"results":[]}'), None),
        (RESOLVE, response("400 Bad Request", b'{"error":{"kind":"k","message":"m"}}'), None),
        (RESOLVE, b"HTTP/1.1 100 Continue\r\n\r\n" + response("200 OK", b"{}"), None),
        (RESOLVE, response("400 Bad Request", page(400), "text/html;charset=utf-8"), None),
        (b"POST / x\r\n\r\n", page(400), None),  # no version read: answered as HTTP/0.9
        (
            RESOLVE,
            response("411 Length Required", b'{"error":{"kind":"k","message":"m"}}') + page(400),
            None,
        ),
        (b"GET /v1/health\r\n", b'{"ok":true}', None),  # HTTP/0.9
        (b"GET /v1/status HTTP/0.9\r\n\r\n", b'{"agent":{}}', None),
        (b"\r\n", b"", None),  # a blank line: http.server ignores it
        (RESOLVE, b"", "no answer to a request"),
        (b"GET", b"", "no answer to a request"),
        (RESOLVE, response("500 Internal Server Error", b"{}"), "500 b'{}'"),
        (
            RESOLVE,
            response("503 Service Unavailable", page(503), "text/html"),
            "503 with Content-Type",
        ),
        (
            RESOLVE,
            response("400 Bad Request", b'{"error":{"kind":"k","message":"a\\nb"}}'),
            "400 with a message on more than one line",
        ),
        (
            RESOLVE,
            response("400 Bad Request", b'{"error":"x"}'),
            "not of the protocol's error shape",
        ),
        (RESOLVE, response("200 OK", b"[]"), "200 with a body that is not a JSON object"),
        (RESOLVE, response("200 OK", b"{}", "text/plain"), "200 with Content-Type 'text/plain'"),
        (RESOLVE, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}", "an answer that is not HTTP"),
        (RESOLVE, b"Traceback (most recent call last):", "an answer that is not HTTP"),
        (b"GET /v1/health\r\n", b"oops", "an HTTP/0.9 answer that is not a JSON object"),
    ],
)
def test_what_the_agent_may_answer(request_: bytes, answer: bytes, verdict: str | None) -> None:
    found = judge_answer(request_, answer)
    if verdict is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(verdict) or verdict in found, found
