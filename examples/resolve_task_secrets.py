"""Read a Mesos v1 TaskInfo, validate it, and resolve each of its secrets.

    python examples/resolve_task_secrets.py examples/task.json

The resolver is whatever is configured (MESOS_SECRETS_RESOLVER, MESOS_SECRETS_CONFIG),
the embedded store by default. Values are shown only as their length: even a demo
should not print secrets, nor a digest of one (for a short value, a digest prefix is
enough to guess it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mesos_secrets import MesosSecretsError, Secret, SecretBytes, TaskInfo, get_resolver


def main(path: str) -> int:
    try:
        task = TaskInfo.from_json(Path(path).read_text())
        with get_resolver() as resolver:
            print(f"resolver: {resolver.name}")
            environment = task.command.environment if task.command else None
            for variable in environment.secrets() if environment else ():
                assert variable.secret is not None
                value = resolver.resolve(variable.secret)
                print(f"  env  {variable.name:<12} <- {describe(variable.secret, value)}")
            for volume in task.container.secret_volumes() if task.container else ():
                assert volume.secret is not None
                value = resolver.resolve(volume.secret)
                print(f"  file {volume.container_path:<12} <- {describe(volume.secret, value)}")
                print(f"       repr of the value: {value!r}")
    except MesosSecretsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def describe(secret: Secret, value: SecretBytes) -> str:
    return f"{secret.describe():<28} {len(value)} bytes"


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
