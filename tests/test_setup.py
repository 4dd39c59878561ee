"""What `make setup` promises: every dependency importable, the commands installed."""

from __future__ import annotations

import importlib
import shutil
import sys
from importlib import metadata
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "module", ["attrs", "cryptography", "hvac", "jwt", "pyroute2", "pymesos", "http_parser.http"]
)
def test_dependency_imports(module: str) -> None:
    """Each run-time dependency imports, the executor's pymesos included."""
    importlib.import_module(module)


def test_http_parser_is_the_pure_python_one() -> None:
    """pymesos parses the agent's HTTP with http-parser's pure-Python parser, as users
    get it from `mesos-secrets install-executor`: the tests run what they run."""
    http = importlib.import_module("http_parser.http")
    assert http.HttpParser.__module__ == "http_parser.pyparser"


@pytest.mark.parametrize("command", ["mesos-secrets", "mesos-secrets-executor"])
def test_console_scripts(command: str) -> None:
    """Both commands are installed beside the interpreter."""
    assert shutil.which(command, path=str(Path(sys.executable).parent))


def test_entry_point_groups() -> None:
    """The distribution declares the resolver group its built-ins use."""
    groups = {ep.group for ep in metadata.distribution("mesos-secrets").entry_points}
    assert {"console_scripts", "mesos_secrets.resolvers"} <= groups
