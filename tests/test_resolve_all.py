"""resolve_all: order kept, failures in place, threads only where the resolver says they pay."""

from __future__ import annotations

import threading
import time

import pytest

from mesos_secrets import ResolverError, Secret, SecretBytes, SecretResolver
from mesos_secrets.resolver import ResolveContext, resolve_all
from mesos_secrets.secret import Reference


class Slow(SecretResolver):
    """Answers each reference after a pause, counting who asked and how many at once."""

    name = "slow"

    def __init__(self, concurrency: int = 2, *, at_once: bool = False) -> None:
        self.concurrency = concurrency
        self.at_once = at_once
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.asked: list[str] = []
        self.threads: set[str] = set()

    def answers_at_once(self, reference: Reference) -> bool:
        return self.at_once

    def resolve_reference(
        self, reference: Reference, context: ResolveContext | None = None
    ) -> SecretBytes:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.asked.append(f"{reference.name}@{reference.key}")
            self.threads.add(threading.current_thread().name)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        if reference.name == "/bad":
            raise ResolverError("no such secret", reference=reference.name, resolver=self.name)
        if reference.name == "/bug":
            raise RuntimeError("a bug, not a resolution failure")
        return SecretBytes(f"{reference.name}@{reference.key}".encode())


def refs(*names: str) -> list[Secret]:
    return [Secret.for_reference(*name.split("@")) for name in names]


def test_order_and_failures_in_place() -> None:
    got = resolve_all(Slow(), refs("/a@k", "/bad@k", "/c@k", "/d@k"))
    assert isinstance(got[1], ResolverError)
    assert [g.reveal() for g in got if isinstance(g, SecretBytes)] == [b"/a@k", b"/c@k", b"/d@k"]


@pytest.mark.parametrize("concurrency", [1, 2, 3])
def test_no_more_at_once_than_the_resolver_says(concurrency: int) -> None:
    resolver = Slow(concurrency)
    resolve_all(resolver, refs(*(f"/s{i}@k" for i in range(7))))
    assert resolver.most == concurrency
    assert threading.current_thread().name in resolver.threads  # the caller works too


def test_keys_of_one_secret_follow_its_first_read() -> None:
    resolver = Slow(4)
    resolve_all(resolver, refs("/a@x", "/b@x", "/a@y", "/c@x"))
    assert resolver.asked.index("/a@y") == 3  # after /a@x, /b@x and /c@x


def test_answers_at_once_stay_in_the_calling_thread() -> None:
    resolver = Slow(4, at_once=True)
    resolve_all(resolver, refs("/a@k", "/b@k", "/c@k"))
    assert resolver.threads == {threading.current_thread().name}


def test_a_bug_is_raised_not_swallowed() -> None:
    with pytest.raises(RuntimeError, match="a bug"):
        resolve_all(Slow(2), refs("/a@k", "/bug@k", "/c@k"))
