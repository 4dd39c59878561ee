"""Our labels (``mesos-secrets/…``): each checked where it acts, with its JSON path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mesos_secrets.labels import APP, POD, TASK, label_violations, labels_of
from mesos_secrets.marathon import load_spec
from mesos_secrets.mesos import TaskInfo
from mesos_secrets.spec_reader import SpecError

POD_SPEC: dict[str, Any] = {
    "id": "/pod",
    "containers": [
        {"name": "a", "resources": {"cpus": 0.1, "mem": 16}, "exec": {"command": {"shell": "true"}}}
    ],
}


@pytest.mark.parametrize("mode", ["host", "none", "bridge"])
def test_network_modes(mode: str) -> None:
    assert label_violations({"mesos-secrets/network": mode}) == []
    assert label_violations({"mesos-secrets/network": mode}, where=POD) == []


def test_a_bad_network_mode() -> None:
    assert label_violations({"mesos-secrets/network": "airgap"}) == [
        (
            "/labels/mesos-secrets/network",
            "'airgap' is not a network mode: host, none, bridge",
        )
    ]


def test_each_label_where_it_acts() -> None:
    """The network on an app or a pod, not a pod's container (which shares its pod's);
    rotation on a task (an app, a pod's container), not a pod."""
    assert label_violations({"mesos-secrets/network": "none"}, "/containers(0)/labels", TASK) == [
        (
            "/containers(0)/labels/mesos-secrets/network",
            "a pod's containers share its network: label the pod (/labels)",
        )
    ]
    ((path, message),) = label_violations({"mesos-secrets/on-change": "restart"}, where=POD)
    assert path == "/labels/mesos-secrets/on-change"
    assert "label the pod's containers" in message
    assert label_violations({"mesos-secrets/on-change": "restart"}, where=APP) == []


def test_a_pods_labels_are_checked_with_their_paths() -> None:
    spec = json.loads(json.dumps(POD_SPEC))
    spec["containers"][0]["labels"] = {"mesos-secrets/network": "none"}
    spec["labels"] = {"mesos-secrets/network": "airgap"}
    with pytest.raises(SpecError) as caught:
        load_spec(json.dumps(spec))
    assert [path for path, _ in caught.value.details] == [
        "/labels/mesos-secrets/network",
        "/containers(0)/labels/mesos-secrets/network",
    ]
    spec["labels"] = {"mesos-secrets/network": "none"}
    del spec["containers"][0]["labels"]
    load_spec(json.dumps(spec))


def test_an_apps_network_label() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec('{"id": "/a", "cmd": "true", "labels": {"mesos-secrets/network": "lan"}}')
    assert caught.value.details[0][0] == "/labels/mesos-secrets/network"


def test_labels_of_a_task_info() -> None:
    task = TaskInfo.from_json(
        {
            "name": "t",
            "task_id": {"value": "t"},
            "labels": {"labels": [{"key": "a", "value": "1"}, {"key": "b"}, {"value": "x"}]},
        }
    )
    assert labels_of(task) == {"a": "1", "b": ""}
    assert labels_of(None) == {}
