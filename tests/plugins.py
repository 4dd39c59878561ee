"""Third-party resolver plugins, installed as pip installs one: a module and its
dist-info with an entry point, in a directory a process gets on its PYTHONPATH."""

from __future__ import annotations

from pathlib import Path

#: A resolver whose bug raises an exception that quotes what it read (a value).
EXPLODING = """
from mesos_secrets.resolver import SecretResolver

class Resolver(SecretResolver):
    def resolve_reference(self, reference, context=None):
        raise RuntimeError("cannot parse the reply: " + open(reference.name).read())
"""

#: A resolver that takes ``seconds`` to answer, as a slow store does.
SLOW = """
import time

from mesos_secrets.resolver import SecretResolver
from mesos_secrets.secretbytes import SecretBytes

class Resolver(SecretResolver):
    def resolve_reference(self, reference, context=None):
        time.sleep({seconds})
        return SecretBytes(b"slow-value")
"""


def install_resolver(site: Path, name: str, source: str) -> None:
    """Install ``source`` (which defines ``Resolver``) as resolver ``name`` under ``site``."""
    site.mkdir(exist_ok=True)
    module = f"{name}_resolver"
    (site / f"{module}.py").write_text(source)
    install_entry_point(site, module, name, f"{module}:Resolver")


def install_entry_point(
    site: Path, dist: str, name: str, value: str, group: str = "mesos_secrets.resolvers"
) -> Path:
    """Install distribution ``dist`` under ``site``: only its dist-info, with one entry
    point (``name = value`` in ``group``). Returns the dist-info directory."""
    site.mkdir(exist_ok=True)
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {value}\n")
    return info
