"""Redacted task output: every value a task was given, and its base64 and URL encodings,
replaced in its stdout and stderr however the task split its writes; nothing held back
for long."""

from __future__ import annotations

import base64
import os
import select
import signal
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesos_secrets.redacted_output import (
    HOLD_S,
    KEPT_PER_NAME,
    MIN_LENGTH,
    OutputRedaction,
    Pump,
    Redactor,
)
from mesos_secrets.secretbytes import SecretBytes
from mesos_secrets.testing import canary

from .bao import Bao
from .conftest import requires_root
from .test_executor import Setup, app_task, put, wait
from .test_run import Runner


def redactor(**values: bytes) -> Redactor:
    return Redactor([(name, SecretBytes(value)) for name, value in values.items()])


def streamed(redactor: Redactor, text: bytes, cuts: list[int]) -> bytes:
    """``text`` fed in pieces cut at ``cuts``, then flushed."""
    out = b""
    last = 0
    for cut in sorted({c for c in cuts if 0 < c < len(text)}):
        out += redactor.feed(text[last:cut])
        last = cut
    return out + redactor.feed(text[last:]) + redactor.flush()


def encodings(value: bytes) -> list[bytes]:
    b64 = base64.b64encode(value)
    return [
        value,
        b64,
        b64.rstrip(b"="),
        base64.urlsafe_b64encode(value),
        urllib.parse.quote(value, safe="").encode(),
        urllib.parse.quote_plus(value, safe="").encode(),
    ]


values = st.binary(min_size=MIN_LENGTH, max_size=48).filter(lambda v: len(set(v)) > 2)
noise = st.binary(max_size=40)


@settings(max_examples=400, deadline=None)
@given(values, st.lists(noise, min_size=2, max_size=5), st.lists(st.integers(0, 400)))
def test_every_encoding_replaced_however_split(
    value: bytes, around: list[bytes], cuts: list[int]
) -> None:
    """The value and each encoding of it, between arbitrary bytes, fed in arbitrary
    pieces: none of them is left, and the output is what one write would give."""
    forms = encodings(value)
    text = b"".join(part + forms[i % len(forms)] for i, part in enumerate(around)) + around[0]
    whole = streamed(redactor(DB=value), text, [])
    pieces = streamed(redactor(DB=value), text, cuts)
    assert pieces == whole
    assert pieces.count(b"[redacted:DB]") >= len(around)
    assert value not in pieces.replace(b"[redacted:DB]", b"\0")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300)))
def test_output_without_values_passes_unchanged(text: bytes, cuts: list[int]) -> None:
    secret = b"\xff\xfe" + canary().encode()  # bytes no generated text will hold
    assert streamed(redactor(X=secret), text, cuts) == text


def test_a_values_start_is_held_until_known() -> None:
    r = redactor(DB=b"hunter2-horse")
    assert r.feed(b"password: hunt") == b"password: "
    assert r.holding
    assert r.feed(b"er2-horse\n") == b"[redacted:DB]\n"
    assert r.feed(b"the hunt is on") == b"the hunt is on"


def test_what_is_held_goes_out_on_flush() -> None:
    """After the hold, a start of MIN_LENGTH or more bytes goes as the marker, a shorter
    one as it is: at most MIN_LENGTH - 1 bytes of a value can show."""
    r = redactor(DB=b"hunter2-horse")
    assert r.feed(b"x hunter") == b"x "
    assert r.flush() == b"[redacted:DB]"
    assert r.feed(b"y hun") == b"y "
    assert r.flush() == b"hun"


def test_the_longer_of_two_values_wins() -> None:
    """One value the start of another: the longer is waited for, and replaced whole."""
    r = redactor(SHORT=b"abcd", LONG=b"abcdefgh")
    assert r.feed(b"1 abcd") == b"1 "
    assert r.feed(b"efgh 2 abcd 3") == b"[redacted:LONG] 2 [redacted:SHORT] 3"


def test_short_values_are_not_replaced_and_named() -> None:
    r = redactor(PIN=b"123", DB=b"long-enough")
    assert r.too_short == ["PIN"]
    assert r.feed(b"123 long-enough\n") == b"123 [redacted:DB]\n"


def test_never_shows_its_values() -> None:
    value = canary()
    r = redactor(DB=value.encode())
    assert value not in repr(r)
    assert value not in repr(vars(r))


class TestPump:
    def _pump(self, value: bytes) -> tuple[int, int, Pump]:
        task_read, task_write = os.pipe()
        out_read, out_write = os.pipe()
        pump = Pump(task_read, out_write, redactor(DB=value), "stdout", close_destination=True)
        pump.start()
        return task_write, out_read, pump

    @staticmethod
    def _read_until(fd: int, want: bytes, timeout: float = 10) -> bytes:
        got = b""
        deadline = time.monotonic() + timeout
        while want not in got and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                got += os.read(fd, 4096)
        return got

    def test_split_writes(self) -> None:
        value = canary().encode()
        write, read, pump = self._pump(value)
        for piece in (b"db=" + value[:3], value[3:9], value[9:] + b"\n"):
            os.write(write, piece)
            time.sleep(HOLD_S / 4)
        os.close(write)
        assert pump.join(timeout=10)
        assert os.read(read, 4096) == b"db=[redacted:DB]\n"
        os.close(read)

    def test_a_held_start_goes_out_without_more_output(self) -> None:
        """The task writes the start of a value and then nothing: the pump lets it out
        (as the marker) without waiting for more output or for the end."""
        value = canary().encode()
        write, read, pump = self._pump(value)
        os.write(write, b"prompt " + value[:8])
        assert self._read_until(read, b"[redacted:DB]") == b"prompt [redacted:DB]"
        os.close(write)
        assert pump.join(timeout=10)
        os.close(read)

    def test_a_closed_destination_does_not_block_the_task(self) -> None:
        write, read, pump = self._pump(canary().encode())
        os.close(read)
        for _ in range(64):  # far more than a pipe holds: drained, not blocked
            os.write(write, b"x" * 4096)
        os.close(write)
        assert pump.join(timeout=10)


RUN_PRINTS = (
    'printf "env: %s" "$(printf %s "$DB" | cut -c1-5)"; sleep 0.01; '
    'printf "%s\\n" "$(printf %s "$DB" | cut -c6-)"; '
    'printf "b64: %s\\n" "$(printf %s "$DB" | base64 -w0)"; '
    'printf "file: %s\\n" "$(cat secrets/db)" >&2'
)


@requires_root
class TestRun:
    def _spec(self, runner: Runner, value: str, **more: object) -> dict[str, object]:
        runner.store.put("/app/db", {"password": value})
        return {
            "cmd": RUN_PRINTS,
            "env": {"DB": {"secret": "db"}},
            "secrets": {"db": {"source": "/app/db@password"}},
            "container": {
                "type": "MESOS",
                "volumes": [{"containerPath": "secrets/db", "secret": "db"}],
            },
            **more,
        }

    def test_redact_output(self, tmp_path: Path, home: Path) -> None:
        """run --redact-output: the value, split across writes, and its base64 are
        replaced on stdout; on stderr, the file's."""
        runner = Runner(tmp_path, home)
        value = canary()
        result = runner.run(self._spec(runner, value), "--redact-output")
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b"env: [redacted:DB]\nb64: [redacted:DB]\n"
        assert b"file: [redacted:DB]\n" in result.stderr  # env and file: the same value
        assert value.encode() not in result.stdout + result.stderr

    def test_without_it_the_output_is_the_tasks(self, tmp_path: Path, home: Path) -> None:
        """The test above would pass without redaction only if the task printed nothing."""
        runner = Runner(tmp_path, home)
        value = canary()
        result = runner.run(self._spec(runner, value))
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout.decode().startswith(f"env: {value}\n")

    def test_a_tasks_label_and_the_configuration(self, tmp_path: Path, home: Path) -> None:
        runner = Runner(tmp_path, home)
        runner.config = tmp_path / "config.toml"
        runner.config.write_text("[containers]\nredact_output = true\n")
        value = canary()
        result = runner.run(self._spec(runner, value))
        assert value.encode() not in result.stdout + result.stderr
        opted_out = self._spec(runner, value, labels={"mesos-secrets/redact-output": "false"})
        result = runner.run(opted_out)
        assert value.encode() in result.stdout


@requires_root
def test_the_executor_redacts_by_label(tmp_path: Path, bao: Bao) -> None:
    """Through the executor, a task labelled mesos-secrets/redact-output: true has its
    sandbox's stdout redacted; its sibling without the label does not."""
    setup = Setup(tmp_path, bao)
    try:
        value = canary()
        put(setup.bao, "exec/db", {"password": value})
        bootstrap = setup.bootstrap()
        agent = setup.agent(bootstrap=bootstrap)
        setup.start(agent, bootstrap=bootstrap)
        assert agent.subscribed.wait(30), setup.log()
        prints: dict[str, object] = {
            "cmd": 'echo "db=$DB"',
            "env": {"DB": {"secret": "db"}},
            "secrets": {"db": {"source": "/exec/db@password"}},
        }
        labelled = dict(prints, labels={"mesos-secrets/redact-output": "true"})
        agent.launch(app_task(labelled, agent, "r-1"))
        agent.launch(app_task(prints, agent, "r-2"))
        for task_id in ("r-1", "r-2"):
            agent.wait_for(task_id, "TASK_FINISHED")
        tasks = setup.tmp / "sandbox" / "tasks"
        (one,) = tasks.glob("r-1.*/stdout")
        (two,) = tasks.glob("r-2.*/stdout")
        wait(lambda: one.read_text().endswith("db=[redacted:DB]\n"))
        assert value not in one.read_text()
        assert f"db={value}\n" in two.read_text()
    finally:
        setup.close()


def test_the_rest_of_a_value_after_a_pause() -> None:
    """A value's start let out after the hold (as the marker), the rest coming later:
    the rest is swallowed, not shown; a start too short for a marker shows, its rest
    does not."""
    r = redactor(T=b"s3cr3t-token-value")
    assert r.feed(b"key=s3cr3t-tok") == b"key="
    assert r.flush() == b"[redacted:T]"
    assert r.feed(b"en-value\n") == b"\n"
    assert r.feed(b"key=s3c") == b"key="
    assert r.flush() == b"s3c"
    assert r.feed(b"r3t-tok") == b""
    assert r.flush() == b"[redacted:T]"  # now 4 bytes or more of it
    assert r.feed(b"en-value and more") == b" and more"
    assert r.feed(b"x s3cr") == b"x "
    assert r.flush() == b"[redacted:T]"
    assert r.feed(b"oll on") == b"oll on"  # not the value after all: as it came


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=40), st.data())
def test_one_value_inside_another(outer: bytes, data: st.DataObject) -> None:
    """One value part of another (a password inside a connection string): however the
    output is split, it is replaced as one write would be, and neither shows."""
    first = data.draw(st.integers(0, len(outer) - MIN_LENGTH))
    inner = outer[first : data.draw(st.integers(first + MIN_LENGTH, len(outer)))]
    text = b"<" + outer + b"|" + inner + b">"
    cuts = data.draw(st.lists(st.integers(0, len(text))))
    whole = streamed(redactor(OUTER=outer, INNER=inner), text, [])
    assert streamed(redactor(OUTER=outer, INNER=inner), text, cuts) == whole
    assert outer not in whole
    assert inner not in whole.replace(b"[redacted:INNER]", b"").replace(b"[redacted:OUTER]", b"")


def test_a_large_value_in_a_large_output() -> None:
    """A 256 KiB file secret, 2 MiB of output in 64 KiB reads: linear work (this took
    minutes when every end of every read was compared with every start of the value)."""
    value = os.urandom(256 * 1024)
    r = redactor(CA=value)
    noise = os.urandom(2 * 1024 * 1024)
    out = b"".join(r.feed(noise[i : i + 65536]) for i in range(0, len(noise), 65536))
    out += r.flush()
    assert out == noise


def test_values_added_later_are_replaced_in_every_stream() -> None:
    """A value learned while output flows (a rotation's) is replaced from then on, in
    the redactors made for the other stream too; a short one is named."""
    first = redactor(a=b"first-value")
    other = first.fresh()
    assert first.feed(b"second-value\n") == b"second-value\n"
    assert first.add([("b", SecretBytes(b"second-value")), ("c", SecretBytes(b"ab"))]) == ["c"]
    assert first.feed(b"second-value\n") == b"[redacted:b]\n"
    assert other.feed(b"x second-value\n") == b"x [redacted:b]\n"
    assert "c" in other.too_short


def test_of_one_name_the_newest_values_are_kept() -> None:
    """A secret rotated again and again does not grow the filter: of one name, the
    newest :data:`KEPT_PER_NAME` values are replaced; a short one is named once."""
    r = redactor()
    olds = [f"value-{n:02d}".encode() for n in range(KEPT_PER_NAME + 2)]
    for value in olds:
        r.add([("pw", SecretBytes(value))])
    r.add([("pin", SecretBytes(b"12")), ("pin", SecretBytes(b"34"))])
    out = r.feed(b" ".join(olds) + b"\n") + r.flush()
    assert out == b" ".join([*olds[:2], *[b"[redacted:pw]"] * KEPT_PER_NAME]) + b"\n"
    assert r.too_short == ["pin"]


def test_what_is_learned_before_the_redactor_comes_is_replaced() -> None:
    redaction = OutputRedaction("c1")
    redaction.learn([("later", SecretBytes(b"learned-early"))])
    r = redactor(now=b"given-at-launch")
    redaction.attach(r)
    assert r.feed(b"learned-early given-at-launch\n") == b"[redacted:later] [redacted:now]\n"
    assert "learned" not in repr(redaction)


class _Watching(OutputRedaction):
    """Says which generation the task could read when it learned each value."""

    def __init__(self, container_id: str, generation: Callable[[], int]) -> None:
        super().__init__(container_id)
        self.generation = generation
        self.seen: list[int] = []

    def learn(self, values: Iterable[tuple[str, SecretBytes]]) -> None:
        self.seen.append(self.generation())
        super().learn(values)


@requires_root
def test_a_rotated_value_is_redacted_before_the_task_can_read_it(
    tmp_path: Path, home: Path
) -> None:
    """A task printing its secret file all along, whose (optional) secret is missing at
    launch, so nothing is redacted yet: its output goes through the filter all the same,
    and the volume isolator tells it each new value before the task can read it (while
    ``..data`` still names the old generation). Neither value ever shows."""
    from mesos_secrets.mesos import CommandInfo, ContainerInfo, TaskInfo
    from resolvers.local import LocalResolver

    from .test_rotation_volumes import DB, Rig, file_at
    from .test_run import wait_until

    first, second = canary(), canary()
    out = tmp_path / "out"
    loop = (
        "while true; do "
        'printf "%s gen=%s\\n" "$(cat a/b/pw 2>/dev/null)" "$(readlink .mesos-secrets/..data)"; '
        "sleep 0.02; done"
    )
    task = TaskInfo(
        name="printing",
        task_id="printing",
        command=CommandInfo(value=loop, user="nobody"),
        container=ContainerInfo(type=ContainerInfo.Type.MESOS, volumes=(file_at("a/b/pw"),)),
    )
    with LocalResolver(home=home) as resolver, out.open("wb") as sink:
        rig = Rig(tmp_path, resolver)
        (isolator,) = [
            i for i in rig.containerizer.isolators.isolators if i.name == "volume_secret"
        ]
        watching: list[_Watching] = []

        def redaction(container_id: str) -> OutputRedaction:
            def generation() -> int:
                return int(isolator._containers[container_id].generation)

            watching.append(_Watching(container_id, generation))
            return watching[-1]

        pipeline = "mesos_secrets.containerizer.pipeline._redaction"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pipeline, redaction)
            container = rig.containerizer.launch(
                task, rig.sandbox, stdout=sink, redact=True, optional={DB}
            )
        with container:
            wait_until(lambda: b" gen=..1" in out.read_bytes())
            for number, value in enumerate((first, second), start=2):
                rig.put(value)
                assert rig.refresh(container, DB).updated
                wait_until(lambda n=number: f"gen=..{n}".encode() in out.read_bytes())
            container.kill(signal.SIGKILL)
            container.wait()
    printed = out.read_bytes()
    assert b"[redacted:a/b/pw] gen=..3\n" in printed
    assert first.encode() not in printed
    assert second.encode() not in printed
    assert watching[0].seen == [1, 2]  # each learned while the task still read the old
