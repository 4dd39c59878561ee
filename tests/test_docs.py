"""The documentation's examples run: README code blocks and docstring examples."""

from __future__ import annotations

import doctest
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mesos_secrets
import mesos_secrets.secret
import mesos_secrets.secretbytes
from mesos_secrets.config import Config
from mesos_secrets.marathon import parse_app
from mesos_secrets.run import RunOptions, run_app
from resolvers.local import LocalStore

from .conftest import requires_root

ROOT = Path(__file__).parent.parent


def test_readme_python_blocks(home: Path) -> None:
    """Every ```python block of the README runs, in order, in one namespace."""
    LocalStore(home).put("/myapp/db", {"username": "app", "password": "pw"})
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    namespace: dict[str, object] = {}
    for block in blocks:
        if "class TestMyResolver" in block:
            continue  # a skeleton to fill in, not a runnable example
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["value"].reveal() == b"pw"  # type: ignore[attr-defined]


@pytest.mark.parametrize("module", [mesos_secrets, mesos_secrets.secret, mesos_secrets.secretbytes])
def test_docstring_examples(module: object) -> None:
    """The >>> examples in the public modules' docstrings are right."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0


@requires_root
def test_readme_app_runs(home: Path, tmp_path: Path) -> None:
    """The README's app spec is valid and runs as the README says."""
    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    specs = [
        json.loads(b)
        for b in blocks
        if '"id"' in b and '"containers"' not in b and '"apps"' not in b and '"fetch"' not in b
    ]
    assert len(specs) == 2
    for other in specs[1:]:
        parse_app(other)  # valid, at least; running it needs a registry
    spec = specs[0]
    LocalStore(home).put("/myapp/db", {"password": "pw"})
    options = RunOptions(work_dir=tmp_path / "w", runtime_dir=tmp_path / "r")
    assert run_app(parse_app(spec), Config(), options) == 0


@requires_root
def test_readme_pod_runs(home: Path, tmp_path: Path) -> None:
    """The README's pod spec is valid and runs."""
    from mesos_secrets.pods import parse_pod

    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (pod,) = [json.loads(b) for b in blocks if '"containers"' in b]
    LocalStore(home).put("/shop/db", {"password": "pw"})
    options = RunOptions(work_dir=tmp_path / "w", runtime_dir=tmp_path / "r")
    assert run_app(parse_pod(pod), Config(), options) == 0


@requires_root
def test_readme_group_runs(home: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The README's group is valid, ordered as it says, and runs."""
    from mesos_secrets.groups import parse_group

    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (group,) = [parse_group(json.loads(b)) for b in blocks if '"apps"' in b]
    assert [task.name for task in group.to_task_infos()] == ["db.shop", "web.shop"]
    LocalStore(home).put("/shop/db", {"password": "pw"})
    options = RunOptions(work_dir=tmp_path / "w", runtime_dir=tmp_path / "r")
    assert run_app(group, Config(), options) == 0
    assert sorted(capfd.readouterr().out.splitlines()) == ["db ready", "web up"]


def test_readme_toml_blocks(tmp_path: Path) -> None:
    """Every ```toml block of the README is a configuration file we accept."""
    from mesos_secrets.config import load_config
    from mesos_secrets.registry import resolvers
    from mesos_secrets.run import _container_options

    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert any("[containers]" in block for block in blocks)
    for i, block in enumerate(blocks):
        path = tmp_path / f"{i}.toml"
        path.write_text(block)
        config = load_config(path, known=resolvers.names())
        _container_options(config)


def test_resolve_example_prints_no_value_nor_digest(home: Path) -> None:
    """``examples/resolve_task_secrets.py`` shows lengths only: a digest prefix of a
    short value is enough to find it by guessing."""
    LocalStore(home).put("/demo/db", {"username": "ada", "password": "pin1"})
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "resolve_task_secrets.py"), "examples/task.json"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "DB_PASSWORD" in done.stdout
    assert "4 bytes" in done.stdout
    for value in ("ada", "pin1", "hello"):
        for text in (value, hashlib.sha256(value.encode()).hexdigest()[:6]):
            assert text not in done.stdout


@requires_root
def test_readme_fetch_app_runs(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The README's app with fetched artifacts gets them and prints what it says."""
    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (spec,) = [json.loads(b) for b in blocks if '"fetch"' in b]
    source = Path("/tmp/mesos-secrets-example")
    (source / "site").mkdir(parents=True, exist_ok=True)
    (source / "site" / "index.html").write_text("<h1>fetched and extracted</h1>\n")
    subprocess.run(["tar", "-czf", "site.tar.gz", "site"], cwd=source, check=True)
    (source / "greet.sh").write_text("#!/bin/sh\necho greetings from a fetched script\n")
    try:
        options = RunOptions(work_dir=tmp_path / "w", runtime_dir=tmp_path / "r")
        assert run_app(parse_app(spec), Config(), options) == 0
    finally:
        shutil.rmtree(source)
    shown = re.search(
        r"\$ mesos-secrets run report.json\n(.*?)```", (ROOT / "README.md").read_text(), re.S
    )
    assert shown is not None
    assert capfd.readouterr().out == shown.group(1)
