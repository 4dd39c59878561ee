"""Linux capabilities: the names Mesos uses, and the set a root task gets.

Mesos leaves a root task every capability unless its ``linux/capabilities`` isolator
is configured (``--effective_capabilities``, ``--bounding_capabilities``). Here a root
task gets a reduced set by default: Docker's default set without ``MKNOD`` (device
nodes on the host's filesystem) and ``NET_RAW`` (sniffing the node's traffic, where
store tokens travel). Above all it has no ``SYS_PTRACE``, ``SYS_ADMIN`` or
``DAC_READ_SEARCH``: it cannot read another process's memory or environment, mount,
leave its namespaces, or open files by handle. The same set bounds every task
(``PR_CAPBSET_DROP``), so a set-user-ID program cannot give a non-root task more.

Configured as ``[containers] capabilities = ["NET_BIND_SERVICE", …]`` (Mesos' names,
``CAP_`` prefix optional; ``["ALL"]`` keeps every capability, as Mesos does by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import ConfigError

__all__ = ["ALL", "DEFAULT", "NAMES", "describe", "parse"]

#: Capability numbers, from linux/capability.h; names as Mesos' CapabilityInfo spells them.
NAMES = {
    name: number
    for number, name in enumerate(
        (
            "CHOWN",
            "DAC_OVERRIDE",
            "DAC_READ_SEARCH",
            "FOWNER",
            "FSETID",
            "KILL",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "LINUX_IMMUTABLE",
            "NET_BIND_SERVICE",
            "NET_BROADCAST",
            "NET_ADMIN",
            "NET_RAW",
            "IPC_LOCK",
            "IPC_OWNER",
            "SYS_MODULE",
            "SYS_RAWIO",
            "SYS_CHROOT",
            "SYS_PTRACE",
            "SYS_PACCT",
            "SYS_ADMIN",
            "SYS_BOOT",
            "SYS_NICE",
            "SYS_RESOURCE",
            "SYS_TIME",
            "SYS_TTY_CONFIG",
            "MKNOD",
            "LEASE",
            "AUDIT_WRITE",
            "AUDIT_CONTROL",
            "SETFCAP",
            "MAC_OVERRIDE",
            "MAC_ADMIN",
            "SYSLOG",
            "WAKE_ALARM",
            "BLOCK_SUSPEND",
            "AUDIT_READ",
            "PERFMON",
            "BPF",
            "CHECKPOINT_RESTORE",
        )
    )
}
ALL = frozenset(NAMES.values())

#: What a root task keeps by default.
DEFAULT = frozenset(
    NAMES[name]
    for name in (
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    )
)


def parse(value: object, where: str = "capabilities") -> frozenset[int]:
    """A list of names (``"NET_RAW"``, ``"CAP_NET_RAW"``; ``"ALL"``) -> capability numbers.

    ``where`` names the setting in error messages.
    """
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a list of capability names, such as ["CHOWN"]')
    numbers = set()
    for item in value:
        name = item.strip().upper().removeprefix("CAP_")
        if name == "ALL":
            return ALL
        if name not in NAMES:
            raise ConfigError(
                f"{where}: unknown capability '{item}' (known: {', '.join(sorted(NAMES))})"
            )
        numbers.add(NAMES[name])
    return frozenset(numbers)


def describe(numbers: Iterable[int]) -> str:
    """As Mesos prints a set: ``{ CHOWN, NET_RAW }``."""
    by_number = {number: name for name, number in NAMES.items()}
    names: Sequence[str] = sorted(by_number.get(n, str(n)) for n in numbers)
    return "{ " + ", ".join(names) + " }" if names else "{ }"
