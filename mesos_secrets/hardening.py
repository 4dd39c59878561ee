"""Front-end process hardening: nothing of ours readable through ``/proc`` or a core file.

``mesos-secrets`` and ``mesos-secrets-executor`` hold store tokens and resolved values
in memory. :func:`protect_process`, called first thing by each:

- makes the process not dumpable (``PR_SET_DUMPABLE`` 0): no core file, and its
  ``/proc/<pid>/environ``, ``mem``, ``maps``… readable only with ``CAP_SYS_PTRACE``,
  not by other processes of the same user;
- sets ``RLIMIT_CORE`` to 0, soft and hard, so that no core is written even if
  something makes the process dumpable again (and the tasks it starts inherit that:
  a task's core would hold its secrets, on disk);
- blanks the tokens in the kernel's copy of the environment. ``/proc/<pid>/environ``
  shows the process's original environment block, which ``os.environ.pop`` does not
  touch; Mesos' executor library erases the token from its environment "so that it is
  not visible to other processes", and this is the way that holds. The values stay
  readable to this process through :data:`os.environ`, and never reach a child: they
  are taken out of the C environment that child processes inherit.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

from . import linux

__all__ = ["SENSITIVE_VARIABLES", "protect_process", "scrub_environment"]

#: Variables whose values are credentials: blanked from /proc/<pid>/environ.
SENSITIVE_VARIABLES = (
    "VAULT_TOKEN",
    "BAO_TOKEN",
    "MESOS_EXECUTOR_AUTHENTICATION_TOKEN",
    "MESOS_SECRETS_VAULT_WRAPPED_TOKEN",
)


def protect_process(sensitive: Iterable[str] = SENSITIVE_VARIABLES) -> None:
    """Not dumpable, no core files, credentials gone from the kernel's environment."""
    linux.set_dumpable(False)
    linux.disable_core_dumps()
    scrub_environment(sensitive)


def scrub_environment(names: Iterable[str]) -> None:
    """Blank ``NAME=value`` in the environment block the kernel shows, for each name.

    The block is where ``/proc/self/stat`` says it is (``env_start``, ``env_end``); its
    bytes are overwritten in place with NULs, and the names are unset in the C
    environment. Python's :data:`os.environ` keeps the values.
    """
    wanted = {os.fsencode(name) for name in names}
    start, end = _environment_block()
    if start == 0 or end <= start:
        return
    block = ctypes.string_at(start, end - start)
    offset = 0
    for entry in block.split(b"\0"):
        name = entry.split(b"=", 1)[0]
        if name in wanted and b"=" in entry:
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1
    for name in wanted:
        if name in os.environb:
            os.unsetenv(name)  # the C environment only: os.environ keeps it


def _environment_block() -> tuple[int, int]:
    with open("/proc/self/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # Fields 50 and 51 of proc(5) (env_start, env_end), counted after the command name.
    return int(fields[47]), int(fields[48])
