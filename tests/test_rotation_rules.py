"""The rules of rotation without a store: the labels (read, refused with their path),
the agent's plan of when to read a secret again (interval, jitter, leases), and its
rollouts (a few tasks at a time, stopping at the first that is not healthy)."""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from typing import Any

import pytest

from mesos_secrets import audit
from mesos_secrets.agent.cache import NodeCache
from mesos_secrets.agent.events import EventLog
from mesos_secrets.agent.poller import JITTER, MAX_READS, Poller
from mesos_secrets.agent.rollouts import GRACE_S, Rollouts
from mesos_secrets.agent.server import _hung_up
from mesos_secrets.containerizer.launcher import Termination
from mesos_secrets.errors import SecretAccessDeniedError, SecretValidationError
from mesos_secrets.labels import label_violations
from mesos_secrets.marathon import load_spec
from mesos_secrets.mesos import TaskInfo
from mesos_secrets.resolver import ResolveContext, SecretResolver
from mesos_secrets.rotation import OnChange, RotationPolicy, Rotator
from mesos_secrets.run import RunOptions, _Slot
from mesos_secrets.secret import Reference
from mesos_secrets.secretbytes import SecretBytes
from mesos_secrets.spec_reader import SpecError
from mesos_secrets.watcher import Watcher

# --- labels -------------------------------------------------------------------------


def test_defaults() -> None:
    policy = RotationPolicy.from_labels({"team": "web"})
    assert policy == RotationPolicy()
    assert policy.on_change == OnChange("noop")
    assert not policy.is_optional("/db")
    assert not policy.fails_on_refresh_error("/db")


def test_every_label() -> None:
    policy = RotationPolicy.from_labels(
        {
            "mesos-secrets/refresh-interval": "2.5",
            "mesos-secrets/on-change": "signal:usr1",
            "mesos-secrets/restart-batch": "3",
            "mesos-secrets/restart-timeout": "30",
            "mesos-secrets/optional": "db/password, /api",
            "mesos-secrets/fail-on-refresh-error": "*",
        }
    )
    assert policy.refresh_interval == 2.5
    assert policy.on_change == OnChange("signal", int(signal.SIGUSR1))
    assert str(policy.on_change) == "signal:SIGUSR1"
    assert (policy.restart_batch, policy.restart_timeout) == (3, 30.0)
    assert policy.is_optional("/db/password")
    assert policy.is_optional("api")
    assert not policy.is_optional("/other")
    assert policy.fails_on_refresh_error("/anything")
    assert RotationPolicy.from_labels({"mesos-secrets/on-change": "signal"}).on_change == OnChange(
        "signal", int(signal.SIGHUP)
    )
    assert RotationPolicy.from_labels({"mesos-secrets/on-change": "restart"}) != RotationPolicy()


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("mesos-secrets/refresh-interval", "0.5", "from 1 to 86400"),
        ("mesos-secrets/refresh-interval", "nan", "from 1 to 86400"),
        ("mesos-secrets/refresh-interval", "soon", "from 1 to 86400"),
        ("mesos-secrets/on-change", "signal:SIGKILL", "not SIGKILL or SIGSTOP"),
        ("mesos-secrets/on-change", "signal:SIGNOPE", "noop, restart or signal"),
        ("mesos-secrets/on-change", "reload", "noop, restart or signal"),
        ("mesos-secrets/restart-batch", "0", "from 1 to 1000"),
        ("mesos-secrets/restart-timeout", "-1", "from 1 to 86400"),
        ("mesos-secrets/optional", " , ", "comma-separated"),
        ("mesos-secrets/fail-on-refresh-error", "", "comma-separated"),
        ("mesos-secrets/on-chnage", "noop", "unknown label of mesos-secrets"),
    ],
)
def test_bad_label_is_named(key: str, value: str, says: str) -> None:
    (found,) = label_violations({key: value})
    assert found[0] == f"/labels/{key}"
    assert says in found[1]
    with pytest.raises(SecretValidationError) as caught:
        RotationPolicy.from_labels({key: value})
    assert str(caught.value).startswith(f"/labels/{key}: ")


def test_validate_refuses_bad_labels_with_their_path() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(
            '{"id": "/web", "cmd": "sleep 1", "labels": {"mesos-secrets/on-change": "reboot"}}'
        )
    assert caught.value.details[0][0] == "/labels/mesos-secrets/on-change"
    load_spec('{"id": "/web", "cmd": "sleep 1", "labels": {"other/label": "anything"}}')


def test_a_label_value_is_never_echoed_unprintable() -> None:
    (found,) = label_violations({"mesos-secrets/on-change": "\x1b[31mred"})
    assert "\x1b" not in found[1]


# --- when the agent reads again ---------------------------------------------------------


class _Cache:
    def __init__(self) -> None:
        self.leases: dict[str, float] = {}
        self.dynamic_names: set[str] = set()

    def read_again(self) -> dict[str, tuple[float | None, bool]]:
        names = set(self.leases) | self.dynamic_names
        return {n: (self.leases.get(n), n in self.dynamic_names) for n in names}


class _Agent:
    """What the poller asks of the agent, recording its reads."""

    def __init__(self) -> None:
        self.cache = _Cache()
        self.intervals: dict[str, float] = {}
        self.held: set[str] = set()
        self.reads: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.release.set()

    def polled(self) -> dict[str, float]:
        return dict(self.intervals)

    def held_names(self) -> set[str]:
        return set(self.held)

    def poll(self, name: str, why: str) -> str:
        self.reads.append((name, why))
        self.release.wait(10)
        return "same"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _settle(poller: Poller) -> None:
    deadline = time.monotonic() + 5
    while poller.reading() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_interval_with_jitter() -> None:
    agent, clock = _Agent(), _Clock()
    draws: list[tuple[float, float]] = []

    def draw(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    poller = Poller(agent, clock=clock, draw=draw)  # type: ignore[arg-type]
    agent.held = {"/a"}
    agent.intervals = {"/a": 10.0}
    assert poller.tick() == []  # planned, not due
    assert draws == [(JITTER * 10.0, 10.0)]
    clock.now += 9.9
    assert poller.tick() == []
    clock.now += 0.2
    assert poller.tick() == ["/a"]
    _settle(poller)
    assert agent.reads == [("/a", "interval")]
    poller.tick()  # the next one is planned from the end of the last
    clock.now += 10.1
    assert poller.tick() == ["/a"]


def test_jitter_spreads_reads() -> None:
    agent, clock = _Agent(), _Clock()
    poller = Poller(agent, clock=clock)  # type: ignore[arg-type]
    agent.intervals = {f"/s{i}": 10.0 for i in range(200)}
    agent.held = set(agent.intervals)
    poller.tick()
    dues = [when - clock.now for when, _ in poller._due.values()]
    assert min(dues) >= JITTER * 10
    assert max(dues) <= 10
    assert max(dues) - min(dues) > 1.0  # not all at once


def test_unheld_and_uninterested_are_never_read() -> None:
    agent, clock = _Agent(), _Clock()
    poller = Poller(agent, clock=clock)  # type: ignore[arg-type]
    agent.held = {"/no-interval"}
    agent.intervals = {"/not-held": 1.0}
    for _ in range(5):
        clock.now += 100
        assert poller.tick() == []
    assert agent.reads == []


def test_a_lease_is_read_before_it_ends_even_without_an_interval() -> None:
    agent, clock = _Agent(), _Clock()
    poller = Poller(agent, clock=clock)  # type: ignore[arg-type]
    agent.held = {"/creds"}
    agent.cache.leases["/creds"] = clock.now + 20
    agent.cache.dynamic_names.add("/creds")
    agent.intervals = {"/creds": 1.0}  # a dynamic secret: its interval does not apply
    clock.now += 19
    assert poller.tick() == []
    clock.now += 1.5
    assert poller.tick() == ["/creds"]
    _settle(poller)
    assert agent.reads == [("/creds", "lease")]


def test_a_slow_store_is_not_asked_twice_nor_too_much_at_once() -> None:
    agent, clock = _Agent(), _Clock()
    poller = Poller(agent, clock=clock, draw=lambda low, high: low)  # type: ignore[arg-type]
    agent.release.clear()  # every read hangs
    agent.intervals = {f"/s{i}": 1.0 for i in range(MAX_READS + 5)}
    agent.held = set(agent.intervals)
    poller.tick()
    clock.now += 2
    first = poller.tick()
    assert len(first) == MAX_READS
    clock.now += 2
    second = poller.tick()
    assert not set(first) & set(second)
    assert poller.reading() == MAX_READS
    agent.release.set()
    _settle(poller)


# --- rollouts -------------------------------------------------------------------------


def _begin(rollouts: Rollouts, task: str, batch: int = 1, wait: float = 0.0) -> Any:
    return rollouts.begin(("alice", "/web", "v2"), task, batch, 60.0, wait)


def test_one_at_a_time_and_the_next_once_healthy() -> None:
    rollouts = Rollouts()
    key = ("alice", "/web", "v2")
    assert _begin(rollouts, "a") == (True, "")
    assert _begin(rollouts, "b") == (None, "")  # not yet
    assert _begin(rollouts, "a") == (True, "")  # asked again: still its turn
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(_begin(rollouts, "b", wait=5)))
    waiter.start()
    time.sleep(0.1)
    assert not got
    rollouts.end(key, "a", healthy=True)
    waiter.join(5)
    assert got == [(True, "")]
    assert rollouts.status()[0]["healthy"] == ["a"]


def test_an_unhealthy_task_stops_the_rollout() -> None:
    stops: list[Any] = []
    rollouts = Rollouts(stopped=lambda key, why: stops.append((key, why)))
    key = ("alice", "/web", "v2")
    assert _begin(rollouts, "a", batch=2) == (True, "")
    assert _begin(rollouts, "b", batch=2) == (True, "")
    rollouts.end(key, "a", healthy=False)
    go, why = _begin(rollouts, "c", batch=2)
    assert go is False
    assert "task a did not become healthy" in why
    assert stops == [(key, why)]
    rollouts.end(key, "b", healthy=True)  # b was under way: it finishes; nothing more starts
    assert _begin(rollouts, "d", batch=2)[0] is False
    assert rollouts.status()[0]["stopped"] == why


def test_other_apps_versions_and_principals_are_apart() -> None:
    rollouts = Rollouts()
    assert rollouts.begin(("alice", "/web", "v2"), "a", 1, 60, 0) == (True, "")
    assert rollouts.begin(("alice", "/api", "v2"), "x", 1, 60, 0) == (True, "")
    assert rollouts.begin(("alice", "/web", "v3"), "a", 1, 60, 0) == (True, "")
    assert rollouts.begin(("mallory", "/web", "v2"), "m", 1, 60, 0) == (True, "")


def test_a_task_that_never_reports_stops_the_rollout() -> None:
    clock = _Clock()
    rollouts = Rollouts(clock=clock)
    assert rollouts.begin(("alice", "/web", "v2"), "a", 1, 10.0, 0) == (True, "")
    clock.now += 10 + GRACE_S + 1
    go, why = rollouts.begin(("alice", "/web", "v2"), "b", 1, 10.0, 0)
    assert go is False
    assert "did not say how its restart went" in why


# --- the agent's cache remembers what kind of secret it read ------------------------------


def test_a_dynamic_secret_stays_dynamic_once_its_value_expired() -> None:
    """Read on an interval, a dynamic secret would make new credentials each time."""

    class Dynamic(SecretResolver):
        name = "dynamic"
        reads = 0

        def resolve_reference(self, reference: Any, context: Any = None) -> SecretBytes:
            raise NotImplementedError

        def resolve_fields(self, name: str, context: Any = None) -> dict[str, SecretBytes]:
            Dynamic.reads += 1
            audit.note(dynamic=True, lease_seconds=30)
            return {"password": SecretBytes(f"p{Dynamic.reads}")}

    clock = _Clock()
    cache = NodeCache(Dynamic(), ttl=5.0, max_stale=0.0, clock=clock)
    cache.get(Reference("/creds", "password"))
    clock.now += 6
    cache.expire()  # the value is gone from the cache
    assert list(cache.entries()) == []
    assert cache.read_again() == {"/creds": (1000.0 + 20.0, True)}
    agent = _Agent()
    agent.cache = cache  # type: ignore[assignment]
    agent.held, agent.intervals = {"/creds"}, {"/creds": 1.0}
    poller = Poller(agent, clock=clock, draw=lambda low, high: high)  # type: ignore[arg-type]
    for _ in range(5):
        clock.now += 1.0
        poller.tick()
    _settle(poller)
    assert agent.reads == []  # not on the interval
    clock.now = 1000.0 + 20.5
    assert poller.tick() == ["/creds"]  # before its lease ends
    _settle(poller)
    assert agent.reads == [("/creds", "lease")]
    cache.forget(Reference("/creds"))  # given up: nothing more to plan for it
    assert cache.read_again() == {}


# --- a front end's rotator --------------------------------------------------------------


class _Running:
    """A task as the rotator sees it; its restarts recorded."""

    def __init__(self) -> None:
        self.task = TaskInfo.from_json(
            {
                "name": "web",
                "task_id": {"value": "web.1"},
                "agent_id": {"value": "a"},
                "command": {"value": "true"},
                "labels": {"labels": [{"key": "mesos-secrets/on-change", "value": "restart"}]},
            }
        )
        self.container_id = "c1"
        self.restarts: list[str] = []

    def signal(self, signum: int) -> None:
        raise AssertionError("not for a restart")

    def restart(self, why: str, timeout: float) -> bool | None:
        self.restarts.append(why)
        time.sleep(0.2)
        return True

    def fail(self, why: str) -> None:
        raise AssertionError("not for a restart")


class _Rollouts:
    """The agent's side of the rollout, recorded; the first turn comes late."""

    name = "agent"

    def __init__(self) -> None:
        self.begun: list[str] = []
        self.ended: list[tuple[str, bool | None]] = []

    def rollout_begin(self, app: str, change: str, task: str, batch: int, timeout: float) -> Any:
        self.begun.append(change)
        if change == "v2":
            time.sleep(0.3)  # v3 becomes known while v2 waits its turn
        return True, ""

    def rollout_end(self, app: str, change: str, task: str, healthy: bool | None) -> None:
        self.ended.append((change, healthy))


def test_a_version_known_before_a_restart_began_is_in_that_restart() -> None:
    running, rollouts = _Running(), _Rollouts()
    rotator = Rotator(rollouts, None, lambda task_id: running)  # type: ignore[arg-type]
    rotator.changed({"task_id": "web.1"}, ("/db",), "v2")
    time.sleep(0.1)
    rotator.changed({"task_id": "web.1"}, ("/db",), "v3")
    deadline = time.monotonic() + 5
    while len(rollouts.ended) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(running.restarts) == 1  # one restart, never two at once
    assert sorted(rollouts.ended) == [("v2", True), ("v3", True)]


def test_a_version_known_after_a_restart_began_restarts_it_again() -> None:
    running, rollouts = _Running(), _Rollouts()
    rotator = Rotator(rollouts, None, lambda task_id: running)  # type: ignore[arg-type]
    rotator.changed({"task_id": "web.1"}, ("/db",), "v1")
    time.sleep(0.1)  # v1's restart is under way: it may have read the old value
    rotator.changed({"task_id": "web.1"}, ("/db",), "v3")
    deadline = time.monotonic() + 5
    while len(rollouts.ended) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(running.restarts) == 2
    assert rollouts.ended == [("v1", True), ("v3", True)]


def test_a_kill_while_a_task_is_launched_again_reaches_the_new_container(tmp_path: Any) -> None:
    """run: a signal that lands while a restart launches the task again is not lost on
    the old, dead container."""

    class Container:
        def __init__(self) -> None:
            self.id = str(uuid.uuid4())
            self.ended = threading.Event()
            self.signals: list[int] = []

        def kill(self, sig: int = signal.SIGTERM) -> None:
            self.signals.append(sig)
            self.ended.set()

        def poll(self) -> Any:
            return Termination.from_returncode(-9) if self.ended.is_set() else None

        def wait(self) -> Any:
            self.ended.wait()
            return Termination.from_returncode(-9)

        def destroy(self) -> None:
            self.ended.set()

    class Containerizer:
        isolators = None
        delay = 0.0

        def __init__(self) -> None:
            self.launched: list[Container] = []

        def launch(self, task: Any, sandbox: Any, **kwargs: Any) -> Container:
            time.sleep(self.delay)
            self.launched.append(Container())
            return self.launched[-1]

    task = TaskInfo.from_json(
        {
            "name": "t",
            "task_id": {"value": "t.1"},
            "agent_id": {"value": "a"},
            "command": {"value": "true"},
        }
    )
    containerizer = Containerizer()
    slot = _Slot(
        containerizer,  # type: ignore[arg-type]
        task,
        tmp_path,
        options=RunOptions(grace_period=1.0),
        resolver=None,
        stopped={},
    )
    slot.launch()
    containerizer.delay = 0.5
    threading.Thread(target=slot.wait, daemon=True).start()
    threading.Thread(target=slot.restart, args=("a new version", 5), daemon=True).start()
    time.sleep(0.2)  # launching again
    slot.kill(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while len(containerizer.launched) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert containerizer.launched[-1].signals  # the new one was stopped too


def test_a_watch_whose_client_went_away_ends_within_a_second() -> None:
    """Else it holds one of its user's connections for the whole wait (25 s): a node
    whose front ends come and go would run out of them."""
    ours, theirs = socket.socketpair()
    try:
        assert not _hung_up(ours)
        log = EventLog()
        started = time.monotonic()
        threading.Timer(0.2, theirs.close).start()
        assert log.wait(lambda holder: True, 0, 25, gone=lambda: _hung_up(ours))[1] == []
        assert time.monotonic() - started < 2.5
        assert _hung_up(ours)
    finally:
        ours.close()


def test_missed_events_are_asked_for_again() -> None:
    """A front end that fell behind the agent's events may have missed a revocation:
    it asks again for its tasks' secrets, and the agent's refusal says so."""

    class Behind:
        name = "agent"
        watches = True

        def __init__(self) -> None:
            self.answers = iter(
                [
                    {"epoch": "e", "seq": 5, "events": []},
                    {"epoch": "e", "seq": 9000, "events": [], "missed": True},
                ]
            )

        def watch(self, after: Any, wait: float) -> Any:
            try:
                return next(self.answers)
            except StopIteration:
                time.sleep(0.05)
                return {"epoch": "e", "seq": 9000, "events": []}

        def stop_watching(self) -> None:
            pass

        def resolve_references(self, references: Any, context: Any) -> Any:
            raise SecretAccessDeniedError(
                "the node agent refused the request: the secrets of this task were revoked "
                "(revoked by root: secret '/db' (leaked))"
            )

    task = TaskInfo.from_json(
        {
            "name": "t",
            "task_id": {"value": "t.1"},
            "agent_id": {"value": "a"},
            "command": {
                "value": "true",
                "environment": {
                    "variables": [
                        {
                            "name": "DB",
                            "type": "SECRET",
                            "secret": {"type": "REFERENCE", "reference": {"name": "/db"}},
                        }
                    ]
                },
            },
        }
    )
    revoked: list[Any] = []
    watcher = Watcher(
        Behind(),  # type: ignore[arg-type]
        revoked=lambda context, why: revoked.append((dict(context), why)),
        held=lambda: [(task, ResolveContext(task_id="t.1"))],
    )
    with watcher:
        deadline = time.monotonic() + 5
        while not revoked and time.monotonic() < deadline:
            time.sleep(0.01)
    assert revoked == [({"task_id": "t.1"}, "revoked by root: secret '/db' (leaked)")]
