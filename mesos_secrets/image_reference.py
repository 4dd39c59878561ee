"""Docker image references: ``[REGISTRY_HOST[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST]``.

Read as Docker reads them, by the image provisioner to pull and by the spec converters
to refuse, when a spec is validated, a name no image could be pulled by.
"""

from __future__ import annotations

import re

import attrs

from .docker_config import DOCKER_HUB, canonical_registry
from .errors import ProvisionerError

__all__ = ["ImageReference"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@attrs.frozen
class ImageReference:
    """``[REGISTRY_HOST[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST]``, as Docker reads it."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, name: str) -> ImageReference:
        def fail(reason: str) -> ProvisionerError:
            return ProvisionerError(f"Failed to parse docker image '{name}': {reason}")

        if not name or name != name.strip() or "://" in name:
            raise fail("expected [REGISTRY/]REPOSITORY[:TAG|@DIGEST]")
        rest, digest = name, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST.fullmatch(digest):
                raise fail("the digest must be sha256:<64 hex digits>")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
        tag = None
        if ":" in path.rsplit("/", 1)[-1]:
            path, tag = path.rsplit(":", 1)
        if not path or not re.fullmatch(r"[a-z0-9]+([._/-]+[a-z0-9]+)*", path):
            raise fail("the repository name must be lower-case letters, digits and . _ - /")
        if tag is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
            raise fail("the tag is not valid")
        registry = canonical_registry(registry)
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        return cls(registry, path, tag if tag or digest else "latest", digest)

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
