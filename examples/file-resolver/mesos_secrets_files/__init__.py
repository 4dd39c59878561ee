"""``files``: resolve references from files under a root directory.

``/myapp/db`` with key ``password`` is ``<root>/myapp/db/password``; without a key, the
secret directory must hold exactly one file.
"""

from __future__ import annotations

from pathlib import Path

from mesos_secrets import (
    Reference,
    ResolveContext,
    ResolverError,
    SecretBytes,
    SecretNotFoundError,
    SecretResolver,
)
from mesos_secrets.names import normalize_name
from mesos_secrets.resolver import select_field

__all__ = ["FilesResolver"]


class FilesResolver(SecretResolver):
    """Secrets as files: one directory per secret, one file per key."""

    name = "files"

    def __init__(self, root: Path = Path("/run/secrets")) -> None:
        self.root = Path(root)

    def resolve_reference(
        self, reference: Reference, context: ResolveContext | None = None
    ) -> SecretBytes:
        # normalize_name refuses '..' and empty components: no escaping the root.
        directory = self.root / normalize_name(reference.name).lstrip("/")
        if not directory.is_dir():
            raise SecretNotFoundError(
                f"secret '{reference.name}' not found under '{self.root}'",
                reference=reference.name,
                resolver=self.name,
            )
        fields = {
            path.name: SecretBytes(path.read_bytes())
            for path in directory.iterdir()
            if path.is_file() and not path.is_symlink()
        }
        return select_field(reference, fields, resolver=self.name, where=f"'{self.root}'")

    def check(self) -> None:
        if not self.root.is_dir():
            raise ResolverError(f"secret root '{self.root}' is not a directory", resolver=self.name)
