"""Installed as a user installs it: ``python -m build`` makes the sdist and the wheel;
each, and the source tree, installs into a fresh virtualenv with plain pip and runs the
README's worked example there; the executor's extra installs with ``install-executor``.

Slow (fresh virtualenvs, pip): dependencies come from pip's cache after the first run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

pytestmark = pytest.mark.slow


def _copy_of_the_source(to: Path) -> Path:
    """The project's source, without what a checkout grows (virtualenv, caches, builds)."""
    ignored = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*_cache"
    )
    shutil.copytree(ROOT, to, ignore=ignored)
    return to


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(source copy, sdist, wheel), built with ``python -m build``."""
    base = tmp_path_factory.mktemp("packaging")
    source = _copy_of_the_source(base / "source")
    dist = base / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = dist.glob("mesos_secrets-*.tar.gz")
    (wheel,) = dist.glob("mesos_secrets-*-py3-none-any.whl")
    return source, sdist, wheel


class Env:
    """A fresh virtualenv (with pip, nothing else) and an embedded store of its own."""

    def __init__(self, path: Path) -> None:
        venv.EnvBuilder(with_pip=True).create(path)
        self.path = path
        self.bin = path / "bin"
        self.home = path / "store"
        self.env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(path),
            "MESOS_SECRETS_HOME": str(self.home),
        }

    def pip_install(self, *what: str) -> None:
        result = self.run(str(self.bin / "python"), "-m", "pip", "install", "-q", *what)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def run(
        self, *command: str, stdin: str = "", cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=cwd,
            check=False,
            timeout=600,
        )


def worked_example_app() -> dict[str, object]:
    """The app of the README's worked example, as the README shows it."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## A worked example") :]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    return json.loads(block.group(1))


def run_the_worked_example(env: Env, where: Path) -> None:
    """The README's commands: store a login, validate, task-info, run (as root)."""
    where.mkdir()
    (where / "user.txt").write_text("app")
    (where / "app.json").write_text(json.dumps(worked_example_app()))
    cli = str(env.bin / "mesos-secrets")
    put = env.run(
        cli, "secret", "put", "/myapp/db", "username=@user.txt", "password=-",
        stdin="pw-from-stdin", cwd=where,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert put.stdout + put.stderr == "stored /myapp/db version 1 (password, username)\n"
    assert env.run(cli, "secret", "get", "/myapp/db@username").stdout == "app"
    validate = env.run(cli, "validate", "app.json", cwd=where)
    assert validate.stderr == "app.json: valid app '/myapp/web'\n"
    task_info = env.run(cli, "task-info", "app.json", cwd=where)
    assert task_info.returncode == 0, task_info.stderr
    assert "pw-from-stdin" not in task_info.stdout
    assert json.loads(task_info.stdout)["name"] == "web.myapp"
    if os.geteuid() == 0:  # file secrets on a tmpfs need root (or a user namespace)
        run = env.run(cli, "run", "app.json", cwd=where)
        assert (run.returncode, run.stdout) == (0, "ok\n"), run.stderr


def test_the_wheel_in_a_fresh_virtualenv(built: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Plain ``pip install dist/*.whl``: the library, the commands, the worked example;
    the executor says what it lacks, in one line, until ``install-executor``."""
    _, _, wheel = built
    env = Env(tmp_path / "venv")
    env.pip_install(str(wheel))
    imported = env.run(
        str(env.bin / "python"), "-c", "import mesos_secrets, resolvers.vault, isolators.network"
    )
    assert imported.returncode == 0, imported.stderr
    run_the_worked_example(env, tmp_path / "example")
    executor = env.run(str(env.bin / "mesos-secrets-executor"))
    assert executor.returncode == 1
    assert executor.stderr.splitlines()[-1].startswith(
        "mesos-secrets-executor: pymesos does not import ("
    )
    assert "install it with 'mesos-secrets install-executor'" in executor.stderr
    assert "Traceback" not in executor.stderr


def test_the_source_tree_in_a_fresh_virtualenv(
    built: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Plain ``pip install .`` of the source."""
    source, _, _ = built
    env = Env(tmp_path / "venv")
    env.pip_install(str(source))
    run_the_worked_example(env, tmp_path / "example")


def test_the_sdist_then_the_executor(built: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The sdist installs too; ``install-executor`` then gives pymesos (on its
    pure-Python HTTP parser: http-parser's C extension does not build on 3.11), after
    which ``pip install '…[executor]'`` has nothing left to do, and the executor starts
    as far as it can without an agent."""
    _, sdist, _ = built
    env = Env(tmp_path / "venv")
    env.pip_install(str(sdist))
    cli = str(env.bin / "mesos-secrets")
    installed = env.run(cli, "install-executor")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "==> the executor's dependencies are installed" in installed.stderr
    parser = env.run(
        str(env.bin / "python"),
        "-c",
        "import http_parser.http as h; print(h.HttpParser.__module__)",
    )
    assert parser.stdout == "http_parser.pyparser\n"
    env.pip_install(f"{sdist}[executor]")
    again = env.run(cli, "install-executor")
    assert again.stdout.startswith("pymesos is installed and imports: nothing to do")
    executor = env.run(str(env.bin / "mesos-secrets-executor"))
    assert executor.returncode == 1
    assert "not started by a Mesos agent" in executor.stderr
    assert "Traceback" not in executor.stderr


def test_no_pymesos_in_the_library() -> None:
    """What does not run the executor never loads pymesos: a spec runs without it."""
    probe = (
        "import sys, mesos_secrets, mesos_secrets.run, mesos_secrets.cli, mesos_secrets.marathon; "
        "assert 'pymesos' not in sys.modules and 'http_parser' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
