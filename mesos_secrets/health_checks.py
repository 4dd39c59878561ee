"""Marathon health checks, read as Marathon reads them and turned into Mesos' ``HealthCheck``.

Apps list ``healthChecks``; only the ``COMMAND``, ``MESOS_HTTP``, ``MESOS_HTTPS`` and
``MESOS_TCP`` ones reach the TaskInfo (Marathon itself runs ``HTTP``, ``HTTPS`` and
``TCP`` checks, from outside the task: those are kept here as Marathon-only and not
run). A pod container has one ``healthCheck`` (``http``, ``tcp`` or ``exec``), always a
Mesos check. Mesos takes one health check per task: the first (``TaskBuilder``).
The executor and ``run`` run the result through :mod:`mesos_secrets.checks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .spec_reader import SpecReader

__all__ = ["MarathonHealthCheck", "read_app_health_checks", "read_pod_health_check"]

MESOS_PROTOCOLS = ("COMMAND", "MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP")
MARATHON_PROTOCOLS = ("HTTP", "HTTPS", "TCP")
#: RAML defaults: seconds, and failures.
TIMINGS = {
    "gracePeriodSeconds": ("grace_period_seconds", 300),
    "intervalSeconds": ("interval_seconds", 60),
    "timeoutSeconds": ("timeout_seconds", 20),
    "delaySeconds": ("delay_seconds", 15),
    "maxConsecutiveFailures": ("consecutive_failures", 3),
}


@attrs.frozen
class MarathonHealthCheck:
    """One health check: ``protocol`` is Marathon's (pods: ``MESOS_HTTP``…), the port
    fixed (``port``) or by reference (``port_index``, or a pod's ``endpoint`` name)."""

    protocol: str
    timings: Mapping[str, float] = attrs.field(factory=dict)
    path: str | None = None
    port: int | None = None
    port_index: int | None = None
    endpoint: str | None = None
    command: str | None = None
    argv: tuple[str, ...] | None = None
    ipv6: bool = False

    @property
    def mesos(self) -> bool:
        """Whether Mesos runs it (it is in the TaskInfo) rather than Marathon."""
        return self.protocol in MESOS_PROTOCOLS

    def to_mesos(
        self, assignments: Sequence[tuple[str | None, int | None]]
    ) -> dict[str, Any] | None:
        """Mesos ``HealthCheck`` JSON; None for a Marathon-only check or a port that
        cannot be found. ``assignments`` are (port name, port a check probes)."""
        if not self.mesos:
            return None
        check: dict[str, Any] = dict(self.timings)
        if self.protocol == "COMMAND":
            if self.argv is not None:
                command: dict[str, Any] = {"shell": False, "arguments": list(self.argv)}
                if self.argv:
                    command["value"] = self.argv[0]
            else:
                command = {"shell": True, "value": self.command}
            check.update(type="COMMAND", command=command)
            return check
        port = self._port(assignments)
        if port is None:
            return None
        protocol = "IPv6" if self.ipv6 else "IPv4"
        if self.protocol == "MESOS_TCP":
            check.update(type="TCP", tcp={"port": port, "protocol": protocol})
        else:
            http: dict[str, Any] = {
                "scheme": "https" if self.protocol == "MESOS_HTTPS" else "http",
                "port": port,
                "protocol": protocol,
            }
            if self.path is not None:
                http["path"] = self.path
            check.update(type="HTTP", http=http)
        return check

    def _port(self, assignments: Sequence[tuple[str | None, int | None]]) -> int | None:
        if self.port is not None:
            return self.port
        if self.endpoint is not None:
            found = [port for name, port in assignments if name == self.endpoint]
            return found[0] if found else None
        if self.port_index is not None and self.port_index < len(assignments):
            return assignments[self.port_index][1]
        return None


def _timings(read: SpecReader, raw: Mapping[str, Any], path: str) -> dict[str, float]:
    timings: dict[str, float] = {}
    for field, (name, default) in TIMINGS.items():
        value = read.number(raw, field, float(default), path)
        timings[name] = int(value) if name == "consecutive_failures" else value
    return timings


def read_app_health_checks(
    read: SpecReader, raw: Any, *, has_ports: bool
) -> tuple[MarathonHealthCheck, ...]:
    """``healthChecks``; a check without ``port`` or ``portIndex`` probes port index 0
    when the app declares ports (``AppNormalization.normalizeHealthChecks``)."""
    found = []
    for where, item in read.objects(raw, "/healthChecks"):
        protocol = read.string(item, "protocol", where) or "HTTP"
        if protocol not in MESOS_PROTOCOLS + MARATHON_PROTOCOLS:
            read.fail(f"{where}/protocol", "error.unknown.enum.literal")
            continue
        value = None
        if protocol == "COMMAND":
            command = read.optional_obj(item.get("command"), f"{where}/command")
            value = read.string(command, "value", f"{where}/command", required=True)
        port = read.number(item, "port", -1.0, where)
        index = read.number(item, "portIndex", -1.0, where)
        port_index = int(index) if index >= 0 else None
        if protocol != "COMMAND" and port < 0 and port_index is None and has_ports:
            port_index = 0
        found.append(
            MarathonHealthCheck(
                protocol=protocol,
                timings=_timings(read, item, where),
                path=read.string(item, "path", where),
                port=int(port) if port >= 0 else None,
                port_index=port_index,
                command=value,
                ipv6=item.get("ipProtocol") == "IPv6",
            )
        )
    return tuple(found)


def read_pod_health_check(read: SpecReader, raw: Any, path: str) -> MarathonHealthCheck | None:
    """A pod container's ``healthCheck``: ``http``, ``tcp`` or ``exec``."""
    if raw is None or read.obj(raw, path) is None:
        return None
    timings = _timings(read, raw, path)
    http, tcp, exec_ = raw.get("http"), raw.get("tcp"), raw.get("exec")
    if isinstance(http, dict):
        scheme = read.string(http, "scheme", f"{path}/http") or "HTTP"
        return MarathonHealthCheck(
            protocol="MESOS_HTTPS" if scheme.upper() == "HTTPS" else "MESOS_HTTP",
            timings=timings,
            path=read.string(http, "path", f"{path}/http"),
            endpoint=read.string(http, "endpoint", f"{path}/http", required=True),
        )
    if isinstance(tcp, dict):
        return MarathonHealthCheck(
            protocol="MESOS_TCP",
            timings=timings,
            endpoint=read.string(tcp, "endpoint", f"{path}/tcp", required=True),
        )
    if isinstance(exec_, dict):
        return _exec_check(read, exec_, timings, f"{path}/exec/command")
    return None


def _exec_check(
    read: SpecReader, exec_: Mapping[str, Any], timings: dict[str, float], path: str
) -> MarathonHealthCheck | None:
    command = read.obj(exec_.get("command"), path)
    if command is None:
        return None
    if "shell" in command:
        shell = read.string(command, "shell", path, required=True)
        return MarathonHealthCheck(protocol="COMMAND", timings=timings, command=shell)
    argv = read.array(command.get("argv"), f"{path}/argv", required=True)
    return MarathonHealthCheck(
        protocol="COMMAND", timings=timings, argv=tuple(a for a in argv if isinstance(a, str))
    )


def pod_health_check_violations(check: MarathonHealthCheck, path: str) -> list[tuple[str, str]]:
    """``PodsValidation.healthCheckValidator``'s timing rules."""
    found = []
    timeout = check.timings["timeout_seconds"]
    interval = check.timings["interval_seconds"]
    if timeout >= interval:
        found.append(
            (f"{path}/timeoutSeconds", f"got {timeout:g}, expected less than {interval:g}")
        )
    for name, field in (
        ("grace_period_seconds", "gracePeriodSeconds"),
        ("interval_seconds", "intervalSeconds"),
        ("consecutive_failures", "maxConsecutiveFailures"),
        ("timeout_seconds", "timeoutSeconds"),
        ("delay_seconds", "delaySeconds"),
    ):
        if check.timings[name] < 0:
            found.append((f"{path}/{field}", f"got {check.timings[name]:g}, expected 0 or more"))
    return found
