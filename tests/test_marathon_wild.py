"""The ``marathon-wild`` corpus: real specs from public repositories, with Marathon's
verdict for each and the facts of the TaskInfo Marathon builds for each accepted one
(``../shared/conformance/marathon-wild``, scored as its ``INDEX.md`` says).

Every fact is read out of our TaskInfo JSON where ``INDEX.md`` says Marathon's is read
(:mod:`tests.wild_facts`): an app's TaskInfo, a pod's ``LAUNCH_GROUP`` shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets.marathon import App, SpecError, load_spec
from mesos_secrets.networking import free_ports

from .wild_facts import differences, executor_facts, task_facts

WILD = Path(__file__).parent.parent.parent / "shared" / "conformance" / "marathon-wild"
EXPECT: dict[str, Any] = json.loads((WILD / "expect.json").read_text()) if WILD.exists() else {}


def named(*kinds: str, valid: bool | None = None, conversion: bool = False) -> list[str]:
    return sorted(
        name
        for name, facts in EXPECT.items()
        if facts["kind"] in kinds
        and facts.get("certain", True)
        and (valid is None or facts["valid"] is valid)
        and (not conversion or "conversion" in facts)
    )


def test_corpus_is_there() -> None:
    assert len(named("app", conversion=True)) >= 140
    assert len(named("pod", conversion=True)) >= 30


@pytest.mark.parametrize("name", named("app", "pod", valid=True))
def test_accepted(name: str) -> None:
    """Marathon accepts it: so do we."""
    load_spec((WILD / name).read_bytes())


@pytest.mark.parametrize("name", named("app", "pod", valid=False))
def test_refused(name: str) -> None:
    """Marathon refuses it: so do we, with its path and message among our violations."""
    expected = EXPECT[name]
    with pytest.raises(SpecError) as caught:
        load_spec((WILD / name).read_bytes())
    found = caught.value.details
    wanted = [(expected.get("path"), expected.get("message"))]
    wanted += [(path, message) for path, message in expected.get("also", [])]
    for path, message in wanted:
        at_path = [text for p, text in found if path is None or p == path]
        if path is None:
            at_path.append(caught.value.message)
        assert at_path, f"nothing at {path}: {found}"
        if message is not None:
            assert any(message in text for text in at_path), (path, message, found)


@pytest.mark.parametrize("name", named("app", valid=True, conversion=True))
def test_app_facts(name: str) -> None:
    spec = load_spec((WILD / name).read_bytes())
    assert isinstance(spec, App)
    found = task_facts(spec.to_task_info().to_json(), "app")
    assert differences(EXPECT[name]["conversion"], found) == []


@pytest.mark.parametrize("name", named("pod", valid=True, conversion=True))
def test_pod_facts(name: str) -> None:
    spec = load_spec((WILD / name).read_bytes())
    assert not isinstance(spec, App)
    executor, group = spec.to_launch_group()
    tasks = {task.name: task.to_json() for task in group.tasks}
    conversion = EXPECT[name]["conversion"]
    wrong = differences(conversion["executor"], executor_facts(executor.to_json()))
    for container, facts in conversion["tasks"].items():
        wrong += [
            f"{container}: {line}"
            for line in differences(facts, task_facts(tasks[container], "pod"))
        ]
    assert wrong == []


def test_the_facts_checker_notices_a_difference() -> None:
    """A fact that differs is reported: the checker is not vacuous."""
    name = named("app", valid=True, conversion=True)[0]
    spec = load_spec((WILD / name).read_bytes())
    assert isinstance(spec, App)
    facts = task_facts(spec.to_task_info().to_json(), "app")
    expected = dict(EXPECT[name]["conversion"], command_shell=not facts["command_shell"])
    assert differences(expected, facts) == [
        f"command_shell: expected {expected['command_shell']!r}, found {facts['command_shell']!r}"
    ]


def test_fixed_host_ports_are_kept() -> None:
    """Fixed host ports are used as asked; ``0`` gets a free port of this host."""
    assert free_ports([8080, None])[:2] == [8080, None]
    port = free_ports([0])[0]
    assert isinstance(port, int)
    assert port > 0
