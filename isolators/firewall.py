"""The nftables rules of a task bridge (:mod:`isolators.bridge`), written as ``nft``'s JSON.

One table per bridge, ``inet mesos-secrets-<bridge>``, made with the bridge and deleted
with it, holds everything:

- ``tasks``, a verdict map from a task's address to its chain ``task-<address>``, whose
  rules reject what the task may not reach (the ``blocked`` addresses and ports). Base
  chains on the input and forward hooks send every packet that comes in through the bridge
  to its sender's chain, and drop those whose source is no task's address (nothing on
  the bridge can speak for another address, or from outside its range);
- ``ports``, a map from a host port (protocol and port) to a task's address and container
  port, which the ``dnat`` chains (prerouting, and output for connections made on this
  host) translate to: Marathon's ``portMappings``;
- masquerading out of the bridge's range, and for connections translated into it (from
  another task through a host port, or from the host's loopback);
- a ``raw`` chain that drops what comes in through the bridge for the host's loopback
  (the bridge has ``route_localnet`` on, so that ``127.0.0.1:<host port>`` works from the
  host) and every IPv6 packet (tasks on a bridge have IPv4 only).

A task's rules are added, and removed, in one ``nft`` transaction each: its chain, its
``tasks`` element, its ``ports`` elements.

Why ``nft``'s JSON (``nft -j -f -``, libnftables-json(5)) and not pyroute2's nftables
module: pyroute2 (0.9) builds rules as raw nf_tables expressions with helpers for
addresses, masquerading and verdicts only; port matches, interface names, maps,
``dnat`` to a concatenation and batches would be hand-written bytecode. ``nft``'s JSON is
the documented, stable interface, checked by ``nft`` itself, and a whole input is one
transaction: a task's rules are all there or none are. It costs one ``nft`` process per
task launch and cleanup (a few milliseconds); its input goes through a pipe, and rules
hold no value.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

__all__ = [
    "FAMILY",
    "PortRule",
    "Reject",
    "add_task",
    "addresses",
    "bridge_commands",
    "delete_table",
    "nat_chain",
    "nft",
    "remove_task",
    "table_exists",
    "table_name",
    "tables",
    "task_chain",
]

FAMILY = "inet"
#: The start of our tables' names.
TABLE_PREFIX = "mesos-secrets-"
#: How long one ``nft`` may take.
TIMEOUT_S = 30.0


@attrs.frozen
class PortRule:
    """A host port translated to the task's address: ``protocol`` ``tcp`` or ``udp``."""

    protocol: str
    host_port: int
    container_port: int


@attrs.frozen
class Reject:
    """What a task may not reach: an IPv4 network, on one port or (None) all; ``local``
    when it is this host (a loopback or one of the host's own addresses), where every
    address of the host is closed to the task on that port."""

    network: ipaddress.IPv4Network
    port: int | None = None
    local: bool = False


def table_name(bridge: str) -> str:
    return TABLE_PREFIX + bridge


def task_chain(address: ipaddress.IPv4Address) -> str:
    """The chain of what the task at ``address`` may not reach."""
    return "task-" + str(address).replace(".", "-")


def nat_chain(address: ipaddress.IPv4Address) -> str:
    """The chain that translates the task's host ports to it."""
    return "nat-" + str(address).replace(".", "-")


def nft(commands: Sequence[dict[str, Any]] | None = None, *, listing: str = "") -> Any:
    """Run ``nft -j``: apply ``commands`` in one transaction, or run ``listing`` (``list
    tables``, …) and return its decoded output. OSError naming nft's first complaint."""
    program = shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if program is None:
        raise OSError(2, "nft is not installed (Debian: apt-get install nftables)")
    if listing:
        argv, given = [program, "-j", *listing.split()], None
    else:
        argv, given = [program, "-j", "-f", "-"], json.dumps({"nftables": list(commands or ())})
    done = subprocess.run(  # noqa: S603 (nft; the rules go by pipe)
        argv, input=given, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        why = lines[0].removeprefix("Error: ") if lines else f"exit status {done.returncode}"
        raise OSError(0, f"nft: {why}")
    return json.loads(done.stdout) if listing and done.stdout.strip() else None


def tables() -> list[str]:
    """The names of our tables (``inet mesos-secrets-*``)."""
    found = nft(listing="list tables") or {}
    return sorted(
        entry["table"]["name"]
        for entry in found.get("nftables", ())
        if "table" in entry
        and entry["table"].get("family") == FAMILY
        and entry["table"].get("name", "").startswith(TABLE_PREFIX)
    )


def table_exists(table: str) -> bool:
    return table in tables()


def _listed(table: str) -> list[dict[str, Any]]:
    try:
        found = nft(listing=f"list table {FAMILY} {table}") or {}
    except OSError:
        return []  # no such table
    return list(found.get("nftables", ()))


# Expressions of the JSON syntax


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _field(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _prefix(network: ipaddress.IPv4Network) -> Any:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


_LOCAL = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
_DROP: dict[str, Any] = {"drop": None}
_REJECT: dict[str, Any] = {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}
_TO_TASK = {
    "vmap": {
        "key": {"concat": [_meta("l4proto"), _field("th", "dport")]},
        "data": "@ports",
    }
}


def _add(kind: str, **fields: Any) -> dict[str, Any]:
    return {"add": {kind: {"family": FAMILY, **fields}}}


def _rule(table: str, chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
    return _add("rule", table=table, chain=chain, expr=list(expr))


def bridge_commands(table: str, bridge: str, subnet: ipaddress.IPv4Network) -> list[dict[str, Any]]:
    """The table of ``bridge``, its maps and base chains (see the module)."""
    on_bridge = _match(_meta("iifname"), bridge)
    out_of_bridge = _match(_meta("oifname"), bridge)
    commands = [
        _add("table", name=table),
        _add(
            "map",
            table=table,
            name="ports",
            type=["inet_proto", "inet_service"],
            map="verdict",
        ),
        _add("map", table=table, name="tasks", type="ipv4_addr", map="verdict"),
    ]
    chains = {
        "raw": ("filter", "prerouting", -300),
        "dnat": ("nat", "prerouting", -100),
        "dnat-here": ("nat", "output", -100),
        "snat": ("nat", "postrouting", 100),
        "to-host": ("filter", "input", 0),
        "through-host": ("filter", "forward", 0),
    }
    for name, (kind, hook, priority) in chains.items():
        commands.append(
            _add(
                "chain",
                table=table,
                name=name,
                type=kind,
                hook=hook,
                prio=priority,
                policy="accept",
            )
        )
    commands += [
        _rule(table, "raw", on_bridge, _match(_meta("nfproto"), "ipv6"), _DROP),
        _rule(
            table,
            "raw",
            on_bridge,
            _match(_field("ip", "daddr"), _prefix(ipaddress.IPv4Network("127.0.0.0/8"))),
            _DROP,
        ),
        _rule(table, "raw", on_bridge, _match(_field("ip", "saddr"), _prefix(subnet), "!="), _DROP),
        _rule(table, "dnat", _LOCAL, _TO_TASK),
        _rule(table, "dnat-here", _LOCAL, _TO_TASK),
        _rule(
            table,
            "snat",
            _match(_field("ip", "saddr"), _prefix(subnet)),
            _match(_meta("oifname"), bridge, "!="),
            {"masquerade": None},
        ),
        _rule(
            table,
            "snat",
            out_of_bridge,
            _match({"ct": {"key": "status"}}, "dnat", "in"),
            {"masquerade": None},
        ),
    ]
    for chain in ("to-host", "through-host"):
        commands += [
            _rule(
                table, chain, on_bridge, {"vmap": {"key": _field("ip", "saddr"), "data": "@tasks"}}
            ),
            _rule(table, chain, on_bridge, _DROP),
        ]
    return commands


def add_task(
    table: str,
    address: ipaddress.IPv4Address,
    rejects: Iterable[Reject],
    ports: Iterable[PortRule],
) -> None:
    """The task's chains and its ``tasks`` and ``ports`` elements, in one transaction; a
    host port mapped already (to another task) fails it whole."""
    chain, nat = task_chain(address), nat_chain(address)
    commands = [_add("chain", table=table, name=chain)]
    transport = _match(_meta("l4proto"), {"set": ["tcp", "udp"]})
    for reject in rejects:
        port = [transport, _match(_field("th", "dport"), reject.port)] if reject.port else []
        to = _match(_field("ip", "daddr"), _prefix(reject.network))
        commands.append(_rule(table, chain, to, *port, _REJECT))
        if reject.local:
            commands.append(_rule(table, chain, _LOCAL, *port, _REJECT))
    to_chain = {"goto": {"target": chain}}
    commands.append(_add("element", table=table, name="tasks", elem=[[str(address), to_chain]]))
    ports = list(ports)
    if ports:
        commands.append(_add("chain", table=table, name=nat))
        for rule in ports:
            match = [
                _match(_meta("l4proto"), rule.protocol),
                _match(_field("th", "dport"), rule.host_port),
            ]
            to_task = {"dnat": {"family": "ip", "addr": str(address), "port": rule.container_port}}
            commands.append(_rule(table, nat, *match, to_task))
        elements = [
            [{"concat": [rule.protocol, rule.host_port]}, {"goto": {"target": nat}}]
            for rule in ports
        ]
        # "create": a host port another task has fails, where "add" would keep the old one
        ports_map = {"family": FAMILY, "table": table, "name": "ports", "elem": elements}
        commands.append({"create": {"element": ports_map}})
    nft(commands)


def remove_task(table: str, address: ipaddress.IPv4Address) -> bool:
    """Remove what :func:`add_task` added for ``address`` (whatever of it is there);
    False if nothing was."""
    chains = {task_chain(address), nat_chain(address)}
    commands: list[dict[str, Any]] = []
    listed = _listed(table)
    for entry in listed:
        found = entry.get("map")
        if not found or found.get("name") not in ("tasks", "ports"):
            continue
        mine = [e[0] for e in found.get("elem", ()) if _goto(e) in chains]
        if mine:
            where = {"family": FAMILY, "table": table, "name": found["name"], "elem": mine}
            commands.append({"delete": {"element": where}})
    for entry in listed:
        name = entry.get("chain", {}).get("name")
        if name in chains:
            where = {"family": FAMILY, "table": table, "name": name}
            commands += [{"flush": {"chain": where}}, {"delete": {"chain": where}}]
    if commands:
        nft(commands)
    return bool(commands)


def _goto(element: Any) -> str | None:
    """The chain a map element sends to."""
    try:
        return str(element[1]["goto"]["target"])
    except (IndexError, KeyError, TypeError):
        return None


def addresses(table: str) -> list[ipaddress.IPv4Address]:
    """The task addresses the table has rules for."""
    found = set()
    for entry in _listed(table):
        name = entry.get("chain", {}).get("name", "")
        for prefix in ("task-", "nat-"):
            if name.startswith(prefix):
                try:
                    found.add(ipaddress.IPv4Address(name.removeprefix(prefix).replace("-", ".")))
                except ValueError:
                    continue
    return sorted(found)


def delete_table(table: str) -> bool:
    """Delete the table and all in it; False if there was none."""
    if not table_exists(table):
        return False
    nft([{"delete": {"table": {"family": FAMILY, "name": table}}}])
    return True
