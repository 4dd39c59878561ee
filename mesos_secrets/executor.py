"""``mesos-secrets-executor``: the Mesos executor (not available in this release yet)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Refuse to start, clearly, rather than half-work inside a cluster."""
    print(
        "mesos-secrets-executor: the executor is not available in this release yet; "
        "use 'mesos-secrets run' to run a spec locally",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
