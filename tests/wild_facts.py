"""Reads the conversion facts of ``marathon-wild/expect.json`` out of our TaskInfo JSON.

Each fact is read where ``marathon-wild/INDEX.md`` says (its "read from the TaskInfo
JSON" column); ``"#"`` stands for a number known only at launch and, at the end of a
string, for any suffix.
"""

from __future__ import annotations

import re
from typing import Any

APP_MARATHON_ENV = re.compile(r"^(MARATHON_.*|MESOS_TASK_ID|MESOS_EXECUTOR_ID|HOST)$")
APP_PORT_ENV = re.compile(r"^PORT(S|[0-9]+|_.+)?$")
POD_PORT_ENV = re.compile(r"^(ENDPOINT_|EP_HOST_|EP_CONTAINER_).+$")
HEALTH_TIMINGS = (
    "interval_seconds",
    "timeout_seconds",
    "grace_period_seconds",
    "delay_seconds",
    "consecutive_failures",
)


def matches(expected: Any, found: Any) -> bool:
    """``expected`` with its ``#`` wildcards against ``found``."""
    if expected == "#":
        return isinstance(found, int) and not isinstance(found, bool)
    if isinstance(expected, str) and expected.endswith("#"):
        return isinstance(found, str) and found.startswith(expected[:-1])
    if isinstance(expected, float | int) and not isinstance(expected, bool):
        return isinstance(found, float | int) and not isinstance(found, bool) and found == expected
    if isinstance(expected, list):
        return (
            isinstance(found, list)
            and len(found) == len(expected)
            and all(matches(e, f) for e, f in zip(expected, found, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(found, dict)
            and set(found) == set(expected)
            and all(matches(v, found[k]) for k, v in expected.items())
        )
    return bool(expected == found)


def multiset_matches(expected: list[Any], found: list[Any]) -> bool:
    """Every expected item matched by a distinct found item, nothing left over."""
    left = list(found)
    for item in expected:
        for i, candidate in enumerate(left):
            if matches(item, candidate):
                del left[i]
                break
        else:
            return False
    return not left


def _variables(task: dict[str, Any]) -> dict[str, str]:
    variables = task.get("command", {}).get("environment", {}).get("variables", [])
    return {v["name"]: v.get("value", "") for v in variables if v.get("type") != "SECRET"}


def _names_match(expected: list[str], found: set[str]) -> bool:
    """Names, with ``PORT_#`` standing for one ``PORT_<digits>``."""
    fixed = {name for name in expected if name != "PORT_#"}
    rest = found - fixed
    wild = [name for name in expected if name == "PORT_#"]
    return (
        fixed <= found
        and len(rest) == len(wild)
        and all(re.fullmatch(r"PORT_\d+", n) for n in rest)
    )


def _network_mode(container: dict[str, Any] | None) -> str:
    if container is None:
        return "none"
    if container.get("type") == "DOCKER":
        return str(container.get("docker", {}).get("network", "HOST"))
    names = [info.get("name") for info in container.get("network_infos", [])]
    if not names:
        return "none"
    return "BRIDGE" if "mesos-bridge" in names else "USER"


def _port_mappings(container: dict[str, Any] | None) -> list[dict[str, Any]]:
    if container is None:
        return []
    found = list(container.get("docker", {}).get("port_mappings", []))
    for info in container.get("network_infos", []):
        found.extend(info.get("port_mappings", []))
    return [{k: m[k] for k in ("container_port", "host_port", "protocol") if k in m} for m in found]


def _host_ports(resources: list[dict[str, Any]]) -> int:
    return sum(
        r["end"] - r["begin"] + 1
        for resource in resources
        if resource.get("name") == "ports"
        for r in resource.get("ranges", {}).get("range", [])
    )


def _resources(resources: list[dict[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for resource in resources:
        if resource.get("type", "SCALAR") != "SCALAR" or "scalar" not in resource:
            continue
        if resource.get("disk", {}).get("persistence"):
            continue
        totals[resource["name"]] = totals.get(resource["name"], 0.0) + resource["scalar"]["value"]
    return totals


def _persistent(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "container_path": r["disk"]["volume"]["container_path"],
            "size": r["scalar"]["value"],
        }
        for r in resources
        if r.get("disk", {}).get("persistence")
    ]


def _volumes(container: dict[str, Any] | None) -> list[dict[str, Any]]:
    found = []
    for volume in (container or {}).get("volumes", []):
        source = volume.get("source", {})
        if source.get("type") == "SECRET":
            continue
        item = {"container_path": volume["container_path"], "mode": volume.get("mode", "RW")}
        if "host_path" in volume:
            item["host_path"] = volume["host_path"]
        if source.get("type") == "SANDBOX_PATH":
            item["sandbox_path"] = source["sandbox_path"]["path"]
        found.append(item)
    return found


def _uris(command: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for uri in command.get("uris", []):
        item = {
            "value": uri["value"],
            "extract": uri.get("extract", True),
            "executable": uri.get("executable", False),
            "cache": uri.get("cache", False),
        }
        if "output_file" in uri:
            item["output_file"] = uri["output_file"]
        found.append(item)
    return found


def _health_check(check: dict[str, Any] | None) -> dict[str, Any] | None:
    if check is None:
        return None
    found: dict[str, Any] = {"type": check.get("type")}
    for key in HEALTH_TIMINGS:
        if key in check:
            found[key] = check[key]
    if "http" in check:
        found["scheme"] = check["http"].get("scheme", "http")
        if "path" in check["http"]:
            found["path"] = check["http"]["path"]
        found["port"] = check["http"].get("port")
    if "tcp" in check:
        found["port"] = check["tcp"].get("port")
    if "command" in check:
        command = check["command"]
        if command.get("shell", True):
            found["command"] = command.get("value")
        else:
            found["command_argv"] = list(command.get("arguments", []))
    return found


def task_facts(task: dict[str, Any], kind: str) -> dict[str, Any]:
    """Every fact of one TaskInfo (``kind``: ``app`` or ``pod``)."""
    command = task.get("command", {})
    container = task.get("container")
    docker = (container or {}).get("docker", {})
    image = (container or {}).get("mesos", {}).get("image")
    variables = _variables(task)
    port_env = APP_PORT_ENV if kind == "app" else POD_PORT_ENV
    facts: dict[str, Any] = {
        "command_shell": command.get("shell", True),
        "command_value": command.get("value"),
        "arguments": list(command.get("arguments", [])),
        "user": command.get("user"),
        "env": variables,
        "marathon_env": {n for n in variables if APP_MARATHON_ENV.match(n)},
        "port_env": {n for n in variables if port_env.match(n)},
        "container_type": container.get("type") if container else None,
        "docker_image": docker.get("image") or (image or {}).get("docker", {}).get("name"),
        "force_pull_image": (
            docker.get("force_pull_image", False)
            if container and container.get("type") == "DOCKER"
            else not (image or {}).get("cached", True)
        ),
        "docker_privileged": docker.get("privileged", False),
        "docker_parameters": [[p["key"], p["value"]] for p in docker.get("parameters", [])],
        "network_mode": _network_mode(container),
        "network_names": sorted(i.get("name") for i in (container or {}).get("network_infos", [])),
        "port_mappings": _port_mappings(container),
        "host_ports": _host_ports(task.get("resources", [])),
        "uris": _uris(command),
        "health_check": _health_check(task.get("health_check")),
        "labels": sorted(label["key"] for label in task.get("labels", {}).get("labels", [])),
        "kill_grace_period_seconds": (
            task["kill_policy"]["grace_period"]["nanoseconds"] / 1e9
            if "kill_policy" in task
            else None
        ),
        "resources": _resources(task.get("resources", [])),
        "volumes": _volumes(container),
        "persistent_volumes": _persistent(task.get("resources", [])),
        "tty": bool((container or {}).get("tty_info") is not None),
        "discovery_name": task.get("discovery", {}).get("name"),
    }
    return facts


def executor_facts(executor: dict[str, Any]) -> dict[str, Any]:
    container = executor.get("container")
    resources = executor.get("resources", [])
    return {
        "host_ports": _host_ports(resources),
        "labels": sorted(label["key"] for label in executor.get("labels", {}).get("labels", [])),
        "network_mode": _network_mode(container),
        "network_names": sorted(i.get("name") for i in (container or {}).get("network_infos", [])),
        "resources": _resources(resources),
        "persistent_volumes": _persistent(resources),
    }


def differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """The facts of ``expected`` that ``found`` does not match, one line each."""
    wrong = []
    for key, value in expected.items():
        got = found.get(key)
        if key in ("marathon_env", "port_env"):
            ok = _names_match(value, got) if key == "port_env" else set(value) == got
        elif key in ("port_mappings", "volumes", "persistent_volumes"):
            ok = multiset_matches(value, got)
        elif key == "resources":
            ok = {k: float(v) for k, v in value.items()} == got
        elif key == "env":
            ok = all(k in got and matches(v, got[k]) for k, v in value.items())
        else:
            ok = matches(value, got)
        if not ok:
            shown = sorted(got) if isinstance(got, set) else got
            wrong.append(f"{key}: expected {value!r}, found {shown!r}")
    return wrong
