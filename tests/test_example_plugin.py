"""The example third-party plugin in examples/file-resolver passes the contract suite."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesos_secrets import SecretResolver, get_resolver, register_resolver
from mesos_secrets.registry import resolvers
from mesos_secrets.testing import ResolverContract

sys.path.insert(0, str(Path(__file__).parent.parent / "examples" / "file-resolver"))

from mesos_secrets_files import FilesResolver


class TestFilesResolver(ResolverContract):
    @pytest.fixture
    def resolver(self, tmp_path: Path) -> Iterator[SecretResolver]:
        register_resolver("files", FilesResolver)
        try:
            # Built the way a deployment builds it: by name, options as text.
            yield get_resolver("files", root=str(tmp_path))
        finally:
            resolvers.unregister("files")

    def store(self, resolver: SecretResolver, name: str, fields: dict[str, bytes]) -> None:
        assert isinstance(resolver, FilesResolver)
        directory = resolver.root / name.lstrip("/")
        directory.mkdir(parents=True)
        for key, value in fields.items():
            (directory / key).write_bytes(value)
