"""``environment_secret``: SECRET environment variables, resolved into the task's environment.

Mesos' ``environment_secret`` isolator (``reference/mesos.md`` §5): every SECRET variable
of the command is resolved, concurrently, and handed to the launcher as environment;
one failure fails the whole prepare. Two differences: a resolved value containing a NUL
byte is refused (Mesos checks inline values only), and a name defined both as SECRET
and VALUE never reaches here (the model refuses it).

A secret the container's ``optional`` names that cannot be resolved leaves its variable
unset. A process's environment cannot change once it runs: a refresh reports the
variables that hold a secret named as ``fixed``.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from mesos_secrets.errors import IsolatorError
from mesos_secrets.isolator import (
    ENVIRONMENT_SECRETS,
    ContainerConfig,
    Isolator,
    LaunchInfo,
    Refreshed,
)
from mesos_secrets.names import agent_name
from mesos_secrets.resolver import SecretResolver
from mesos_secrets.secretbytes import SecretBytes

__all__ = ["EnvironmentSecretIsolator"]


class EnvironmentSecretIsolator(Isolator):
    """Resolves the command's SECRET variables; keeps nothing on disk."""

    name = "environment_secret"
    provides = frozenset({ENVIRONMENT_SECRETS})

    def __init__(self, resolver: SecretResolver, runtime_dir: Path) -> None:
        super().__init__(resolver, runtime_dir)
        #: Of each container: (the variable's description, its secret's reference name).
        self._variables: dict[str, tuple[tuple[str, str], ...]] = {}

    def prepare(self, config: ContainerConfig) -> LaunchInfo | None:
        environment = config.command.environment if config.command else None
        variables = environment.secrets() if environment else ()
        if not variables:
            return None
        wanted = [
            (f"environment variable '{v.name}' ({v.secret.describe()})", v.secret)
            for v in variables
            if v.secret is not None
        ]
        resolved: dict[str, SecretBytes] = {}
        for variable, value in zip(variables, self.resolve_each(config, wanted), strict=True):
            assert variable.secret is not None
            if value is None:  # optional, and not resolved: the variable stays unset
                continue
            if b"\0" in value.reveal():
                raise IsolatorError(
                    f"Environment variable '{variable.name}' ({variable.secret.describe()}) "
                    "resolved to a value containing null bytes, which is not allowed in the "
                    "environment",
                    isolator=self.name,
                    container_id=config.container_id,
                )
            resolved[variable.name] = value
        self._variables[config.container_id] = tuple(
            (what, secret.reference.name) for what, secret in wanted if secret.reference
        )
        return LaunchInfo(environment=resolved)

    def refresh(self, container_id: str, names: Collection[str]) -> Refreshed | None:
        """The variables holding a secret named: fixed for as long as the task runs."""
        wanted = {agent_name(name) for name in names}
        fixed = tuple(
            what
            for what, name in self._variables.get(container_id, ())
            if agent_name(name) in wanted
        )
        return Refreshed(fixed=fixed) if fixed else None

    def cleanup(self, container_id: str) -> None:
        self._variables.pop(container_id, None)
