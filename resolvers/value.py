"""``value``: Mesos' ``DefaultSecretResolver``, which resolves VALUE secrets only."""

from __future__ import annotations

from mesos_secrets.errors import ResolverError
from mesos_secrets.resolver import ResolveContext, SecretResolver
from mesos_secrets.secret import Reference
from mesos_secrets.secretbytes import SecretBytes

__all__ = ["ValueResolver"]


class ValueResolver(SecretResolver):
    """Resolves inline VALUE secrets and refuses every reference, as Mesos' default does.

    Useful where secrets arrive inline (an executor's one-time bootstrap secret) and no
    store is configured.
    """

    name = "value"

    def resolve_reference(
        self, reference: Reference, context: ResolveContext | None = None
    ) -> SecretBytes:
        raise ResolverError(
            f"Default secret resolver cannot resolve references (secret '{reference}')",
            reference=reference.name,
            key=reference.key,
            resolver=self.name,
        )
