"""The ``marathon-wild`` corpus: real specs from public repositories, with the facts of
the TaskInfo Marathon builds for each (``../shared/conformance/marathon-wild``).

Checked so far: the command each app and pod container gets (``command_shell``,
``command_value``, ``arguments``, ``user``), as ``TaskBuilder.commandInfo`` and
``TaskGroupBuilder.computeCommandInfo`` build it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets.marathon import App, load_spec
from mesos_secrets.mesos import CommandInfo

WILD = Path(__file__).parent.parent.parent / "shared" / "conformance" / "marathon-wild"
EXPECT: dict[str, Any] = json.loads((WILD / "expect.json").read_text()) if WILD.exists() else {}
COMMAND_FACTS = ("command_shell", "command_value", "arguments", "user")


def converted(kind: str) -> list[str]:
    return sorted(
        name
        for name, facts in EXPECT.items()
        if facts.get("kind") == kind and facts.get("valid") and "conversion" in facts
    )


def command_facts(command: CommandInfo | None) -> dict[str, Any]:
    return {
        "command_shell": command.shell if command else True,
        "command_value": command.value if command else None,
        "arguments": list(command.arguments) if command else [],
        "user": command.user if command else None,
    }


def test_corpus_is_there() -> None:
    assert len(converted("app")) >= 100
    assert len(converted("pod")) >= 20


@pytest.mark.parametrize("name", converted("app"))
def test_app_command(name: str) -> None:
    spec = load_spec((WILD / name).read_bytes())
    assert isinstance(spec, App)
    expected = {k: v for k, v in EXPECT[name]["conversion"].items() if k in COMMAND_FACTS}
    found = command_facts(spec.to_task_info().command)
    assert {k: found[k] for k in expected} == expected


@pytest.mark.parametrize("name", converted("pod"))
def test_pod_commands(name: str) -> None:
    spec = load_spec((WILD / name).read_bytes())
    assert not isinstance(spec, App)
    tasks = {task.name: task for task in spec.to_task_group().tasks}
    for container, facts in EXPECT[name]["conversion"]["tasks"].items():
        expected = {k: v for k, v in facts.items() if k in COMMAND_FACTS}
        found = command_facts(tasks[container].command)
        assert {k: found[k] for k in expected} == expected, container
