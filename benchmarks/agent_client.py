"""One launch's secrets from the node agent, for ``benchmarks.compare``: a fresh process
that does what a task's front end does with ``MESOS_SECRETS_RESOLVER=agent``, no more:
imports the ``agent`` resolver, resolves ``PREFIX{0..N-1}@v`` with ``resolve_all`` (one
request on the agent's socket), closes it (the agent's holdings end), and checks the
values against a SHA-256 of them (joined by NUL) so that no value is on its command line.

    python benchmarks/agent_client.py SOCKET PREFIX N SHA256

Exit status 0 when every value came and matched, 1 otherwise (the reason on stderr).
"""

from __future__ import annotations

import hashlib
import sys

from mesos_secrets import Secret
from mesos_secrets.resolver import resolve_all
from resolvers.agent import AgentResolver


def main(argv: list[str]) -> int:
    socket, prefix, count, digest = argv[1], argv[2], int(argv[3]), argv[4]
    secrets = [Secret.for_reference(f"{prefix}{i}", "v") for i in range(count)]
    with AgentResolver(socket=socket) as resolver:
        results = resolve_all(resolver, secrets)
    values = []
    for result in results:
        if isinstance(result, Exception):
            print(f"agent_client: {result}", file=sys.stderr)
            return 1
        values.append(result.reveal())
    if hashlib.sha256(b"\0".join(values)).hexdigest() != digest:
        print("agent_client: wrong values", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
