"""``environment_secret``: SECRET environment variables, resolved into the task's environment.

Mesos' ``environment_secret`` isolator (``reference/mesos.md`` §5): every SECRET variable
of the command is resolved, concurrently, and handed to the launcher as environment;
one failure fails the whole prepare. Two differences: a resolved value containing a NUL
byte is refused (Mesos checks inline values only), and a name defined both as SECRET
and VALUE never reaches here (the model refuses it).
"""

from __future__ import annotations

from mesos_secrets.errors import IsolatorError
from mesos_secrets.isolator import ENVIRONMENT_SECRETS, ContainerConfig, Isolator, LaunchInfo
from mesos_secrets.secretbytes import SecretBytes

__all__ = ["EnvironmentSecretIsolator"]


class EnvironmentSecretIsolator(Isolator):
    """Resolves the command's SECRET variables; keeps nothing on disk."""

    name = "environment_secret"
    provides = frozenset({ENVIRONMENT_SECRETS})

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
            if b"\0" in value.reveal():
                raise IsolatorError(
                    f"Environment variable '{variable.name}' ({variable.secret.describe()}) "
                    "resolved to a value containing null bytes, which is not allowed in the "
                    "environment",
                    isolator=self.name,
                    container_id=config.container_id,
                )
            resolved[variable.name] = value
        return LaunchInfo(environment=resolved)
