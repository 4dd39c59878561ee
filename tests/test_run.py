"""`mesos-secrets run` end to end: a real store, real tmpfs, real processes."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets.testing import canary, leaks
from resolvers.local import LocalStore

from .conftest import mounts_under, requires_root
from .residue import processes_holding

pytestmark = requires_root
BIN = Path(sys.executable).parent / "mesos-secrets"


def sha(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


class Runner:
    """Runs specs through the real command, in directories of the test's own."""

    def __init__(self, tmp_path: Path, home: Path) -> None:
        self.tmp = tmp_path
        self.home = home
        self.work = tmp_path / "work"
        self.runtime = tmp_path / "runtime"
        self.store = LocalStore(home)
        #: The configuration file runs are given (None: none).
        self.config: Path | None = None

    def spec(self, spec: dict[str, Any]) -> Path:
        path = self.tmp / "app.json"
        path.write_text(json.dumps({"id": "/test/app", **spec}))
        return path

    def command(self, spec: dict[str, Any], *extra: str) -> list[str]:
        return [
            str(BIN),
            *(["--config", str(self.config)] if self.config is not None else []),
            "-vv",
            "run",
            str(self.spec(spec)),
            "--work-dir",
            str(self.work),
            "--runtime-dir",
            str(self.runtime),
            *extra,
        ]

    def run(self, spec: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.command(spec, *extra), capture_output=True, timeout=120, check=False
        )

    def run_quiet(self, spec: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
        """Without -vv, which logs even a typed error's traceback: what a user sees."""
        command = [part for part in self.command(spec) if part != "-vv"]
        return subprocess.run(command, capture_output=True, timeout=120, check=False)

    def start(self, spec: dict[str, Any], *extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command(spec, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def assert_no_residue(self) -> None:
        """No mount under the test's directories, no runtime state (the autouse fixture
        checks processes, namespaces, host mounts and cgroups after every test)."""
        assert not mounts_under(self.tmp)
        for kind in ("containers", "sandboxes"):
            claims = self.runtime / kind
            assert not claims.exists() or list(claims.iterdir()) == []

    def files_contain(self, value: str) -> list[Path]:
        found = []
        for root in (self.work, self.runtime, self.home):
            for path in root.rglob("*") if root.exists() else ():
                if path.is_file() and not path.is_symlink() and leaks(value, path.read_bytes()):
                    found.append(path)
        return found


@pytest.fixture
def runner(tmp_path: Path, home: Path) -> Runner:
    return Runner(tmp_path, home)


def checking_app(env_value: str, file_value: str, *, user: str | None = None) -> dict[str, Any]:
    """An app whose task checks its env secret, its file secret, the file's mode, owner and fs."""
    owner = user or pwd.getpwuid(os.geteuid()).pw_name
    script = "; ".join(
        [
            "set -e",
            f'test "$(printf %s "$DB_PASSWORD" | sha256sum | cut -c1-64)" = {sha(env_value)}',
            f'test "$(sha256sum < secrets/db | cut -c1-64)" = {sha(file_value)}',
            'test "$(stat -L -c %a secrets/db)" = 400',
            f'test "$(stat -L -c %U secrets/db)" = {owner}',
            'test "$(stat -L -f -c %T secrets/db)" = tmpfs',
            'test "$(readlink secrets/db)" = ../.mesos-secrets/..data/0',
            "if chmod 600 secrets/db 2>/dev/null; then echo writable; exit 1; fi",
            "echo all-checks-passed",
        ]
    )
    spec: dict[str, Any] = {
        "cmd": script,
        "env": {"DB_PASSWORD": {"secret": "db"}, "MODE": "test"},
        "secrets": {"db": {"source": "/myapp/db@password"}},
        "container": {
            "type": "MESOS",
            "volumes": [{"containerPath": "secrets/db", "secret": "db"}],
        },
    }
    if user:
        spec["user"] = user
    return spec


class TestMarathonEnvironment:
    def test_ports_and_marathon_variables(self, runner: Runner) -> None:
        """The task gets what Marathon gives it: a free host port per port definition
        (PORT0, PORT_<NAME>, PORT, PORTS), HOST, MARATHON_APP_*, MESOS_TASK_ID."""
        script = "; ".join(
            [
                'test -n "$PORT0"',
                'test "$PORT0" = "$PORT_HTTP"',
                'test "$PORT" = "$PORT0"',
                'test "$PORTS" = "$PORT0,$PORT1"',
                'test "$HOST" = "$(hostname)"',
                'test "$MARATHON_APP_ID" = /test/app',
                'test "$MARATHON_APP_LABEL_TEAM" = shop',
                'test "$MARATHON_APP_RESOURCE_CPUS" = 0.5',
                'case "$MESOS_TASK_ID" in test_app.instance-*) ;; *) exit 3;; esac',
                'python3 -c \'import os, socket; socket.socket().bind(("", int(os.environ["PORT0"])))\'',
                "echo all-checks-passed",
            ]
        )
        spec = {
            "cmd": script,
            "cpus": 0.5,
            "labels": {"team": "shop"},
            "portDefinitions": [{"port": 0, "name": "http"}, {"port": 0}],
        }
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        assert b"all-checks-passed" in result.stdout

    def test_an_unhealthy_task_is_killed(self, runner: Runner) -> None:
        """A Mesos health check runs under ``run`` as under the executor: a task that
        stays unhealthy is killed."""
        check = {
            "protocol": "COMMAND",
            "command": {"value": "test -e healthy"},
            "gracePeriodSeconds": 0,
            "intervalSeconds": 1,
            "timeoutSeconds": 1,
            "delaySeconds": 0,
            "maxConsecutiveFailures": 2,
        }
        result = runner.run({"cmd": "sleep 60", "healthChecks": [check]})
        assert result.returncode == 128 + signal.SIGTERM, result.stderr.decode()
        assert b"stayed unhealthy" in result.stderr
        runner.assert_no_residue()

    def test_a_healthy_task_says_so(self, runner: Runner) -> None:
        check = {
            "protocol": "COMMAND",
            "command": {"value": "test -e healthy"},
            "gracePeriodSeconds": 0,
            "intervalSeconds": 1,
            "delaySeconds": 0,
        }
        result = runner.run({"cmd": "touch healthy; sleep 3", "healthChecks": [check]})
        assert result.returncode == 0, result.stderr.decode()
        assert b"is healthy" in result.stderr


class TestDelivery:
    def test_env_and_file(self, runner: Runner) -> None:
        """The task sees its secret in its environment and as a 0400 file on a tmpfs."""
        value = canary()
        runner.store.put("/myapp/db", {"password": value})
        result = runner.run(checking_app(value, value))
        assert result.returncode == 0, result.stderr.decode()
        assert b"all-checks-passed" in result.stdout
        runner.assert_no_residue()
        assert not leaks(value, result.stdout, result.stderr)
        assert runner.files_contain(value) == []

    def test_wrong_content_fails(self, runner: Runner) -> None:
        """The same task with other expectations exits non-zero, and that is run's status."""
        runner.store.put("/myapp/db", {"password": "actual"})
        result = runner.run(checking_app("expected", "expected"))
        assert result.returncode == 1
        runner.assert_no_residue()

    def test_as_another_user(self, runner: Runner) -> None:
        """As root, the task runs as its `user`, who owns the secret file."""
        runner.store.put("/myapp/db", {"password": "pw"})
        result = runner.run(checking_app("pw", "pw", user="nobody"))
        assert result.returncode == 0, result.stderr.decode()
        runner.assert_no_residue()

    def test_exit_status_passes_through(self, runner: Runner) -> None:
        result = runner.run({"cmd": "echo out; echo err >&2; exit 7"})
        assert result.returncode == 7
        assert result.stdout == b"out\n"
        assert b"err\n" in result.stderr

    def test_args_with_a_container(self, runner: Runner) -> None:
        """``args`` with a container: Marathon leaves the command's value unset (an
        image's entrypoint would come first); without an image, the first argument is
        the program, run with all of them, not twice."""
        spec = {"args": ["/bin/sh", "-c", 'echo "$0" "$#"'], "container": {"type": "MESOS"}}
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b"/bin/sh 0\n"

    def test_no_command_at_all_says_so(self, runner: Runner) -> None:
        result = runner.run({"container": {"type": "MESOS"}})
        assert result.returncode == 1
        assert b"the task has no command to run" in result.stderr

    def test_environment_is_clean(self, runner: Runner) -> None:
        """The task does not inherit the caller's environment (a VAULT_TOKEN stays out)."""
        env = {**os.environ, "VAULT_TOKEN": "caller-token"}
        spec = runner.spec({"args": ["/usr/bin/env"]})
        result = subprocess.run(
            [str(BIN), "run", str(spec), "--runtime-dir", str(runner.runtime)],
            env=env,
            capture_output=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert b"VAULT_TOKEN" not in result.stdout
        assert b"MESOS_SANDBOX=" in result.stdout

    def test_temporary_sandbox_is_removed(self, runner: Runner, tmp_path: Path) -> None:
        """Without --work-dir the sandbox is a temporary directory, removed afterwards."""
        spec = runner.spec({"cmd": "pwd"})
        result = subprocess.run(
            [str(BIN), "run", str(spec), "--runtime-dir", str(runner.runtime)],
            capture_output=True,
            check=False,
        )
        assert result.returncode == 0
        assert not Path(result.stdout.decode().strip()).exists()

    def test_no_value_on_any_command_line(self, runner: Runner) -> None:
        """While the task runs, no process's command line holds the value."""
        value = canary()
        runner.store.put("/myapp/db", {"password": value})
        spec = {
            "cmd": "cat /proc/[0-9]*/cmdline > cmdlines 2>/dev/null; true",
            "env": {"S": {"secret": "db"}},
            "secrets": {"db": {"source": "/myapp/db@password"}},
            "container": {"type": "MESOS", "volumes": [{"containerPath": "f", "secret": "db"}]},
        }
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        cmdlines = (runner.work / "cmdlines").read_bytes()
        assert b"sh\0-c" in cmdlines  # the task's own line is there
        assert not leaks(value, cmdlines)


class TestMesosConformance:
    """reference/mesos.md §11, volume/secret without an image."""

    @pytest.mark.parametrize(
        "path", ["my_secret", "some/my_secret", "etc/my_secret", "etc/some/my_secret"]
    )
    def test_relative_paths(self, runner: Runner, path: str) -> None:
        runner.store.put("/s", {"v": "password"})
        spec = {
            "cmd": f'test "$(cat {path})" = password && ! (echo abc > {path}) 2>/dev/null',
            "secrets": {"s": {"source": "/s"}},
            "container": {"type": "MESOS", "volumes": [{"containerPath": path, "secret": "s"}]},
        }
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        runner.assert_no_residue()
        assert list(runner.work.iterdir()) == []  # placeholders removed too

    def test_absolute_path_must_exist(self, runner: Runner) -> None:
        runner.store.put("/s", {"v": "password"})
        spec = {
            "cmd": "true",
            "secrets": {"s": {"source": "/s"}},
            "container": {
                "type": "MESOS",
                "volumes": [{"containerPath": "/no/such/file", "secret": "s"}],
            },
        }
        result = runner.run(spec)
        assert result.returncode == 1
        assert b"Absolute container path '/no/such/file' does not exist" in result.stderr
        runner.assert_no_residue()

    def test_absolute_existing_path(self, runner: Runner, tmp_path: Path) -> None:
        """An existing host file is bound over in the task's namespace only."""
        host = tmp_path / "host-file"
        host.write_text("host content")
        runner.store.put("/s", {"v": "password"})
        spec = {
            "cmd": f'test "$(cat {host})" = password',
            "secrets": {"s": {"source": "/s"}},
            "container": {
                "type": "MESOS",
                "volumes": [{"containerPath": str(host), "secret": "s"}],
            },
        }
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        assert host.read_text() == "host content"
        runner.assert_no_residue()


class TestFaults:
    def test_missing_secret(self, runner: Runner) -> None:
        runner.store.put("/present", {"v": "x"})
        spec = {
            "cmd": "true",
            "env": {"A": {"secret": "a"}},
            "secrets": {"a": {"source": "/absent"}},
        }
        result = runner.run(spec)
        assert result.returncode == 1
        assert b"environment variable 'A' (secret '/absent')" in result.stderr
        runner.assert_no_residue()

    def test_store_cannot_be_opened(self, runner: Runner) -> None:
        runner.store.put("/s", {"v": "x"})
        (runner.home / "key").chmod(0o644)
        spec = {"cmd": "true", "env": {"A": {"secret": "a"}}, "secrets": {"a": {"source": "/s"}}}
        result = runner.run(spec)
        assert result.returncode == 1
        assert b"chmod 600" in result.stderr
        runner.assert_no_residue()

    def test_invalid_path(self, runner: Runner) -> None:
        spec = {
            "cmd": "true",
            "secrets": {"s": {"source": "/s"}},
            "container": {
                "type": "MESOS",
                "volumes": [{"containerPath": "../escape", "secret": "s"}],
            },
        }
        result = runner.run(spec)
        assert result.returncode == 1
        assert b"container_path '../escape' must not contain '..'" in result.stderr
        assert not (runner.tmp / "escape").exists()
        runner.assert_no_residue()

    def test_oversize_secret(self, runner: Runner) -> None:
        runner.store.put("/big", {"v": b"x" * (1 << 20 | 1)})
        spec = {
            "cmd": "true",
            "secrets": {"s": {"source": "/big"}},
            "container": {"type": "MESOS", "volumes": [{"containerPath": "big", "secret": "s"}]},
        }
        result = runner.run(spec)
        assert result.returncode == 1
        assert (
            b"volume 'big' (secret '/big') is 1 MiB, more than the secret volume size cap"
            in result.stderr
        )
        runner.assert_no_residue()
        assert list(runner.work.iterdir()) == []

    def test_invalid_spec(self, runner: Runner) -> None:
        result = runner.run({"cmd": "true", "env": {"A": {"secret": "undefined"}}})
        assert result.returncode == 1
        assert b"/env/A/secret: references an undefined secret" in result.stderr

    def test_task_cannot_start(self, runner: Runner) -> None:
        result = runner.run({"args": ["/no/such/program"]})
        assert result.returncode == 1
        assert (
            b"cannot start the task: No such file or directory: '/no/such/program'" in result.stderr
        )
        runner.assert_no_residue()

    def test_unknown_user(self, runner: Runner) -> None:
        result = runner.run({"cmd": "true", "user": "no-such-user-here"})
        assert result.returncode == 1
        assert b"user 'no-such-user-here' does not exist" in result.stderr
        runner.assert_no_residue()

    def test_task_killed_by_signal(self, runner: Runner) -> None:
        runner.store.put("/s", {"v": "x"})
        spec = {
            "cmd": "kill -KILL $$",
            "secrets": {"s": {"source": "/s"}},
            "container": {"type": "MESOS", "volumes": [{"containerPath": "f", "secret": "s"}]},
        }
        result = runner.run(spec)
        assert result.returncode == 128 + signal.SIGKILL
        assert b"was killed by SIGKILL" in result.stderr
        runner.assert_no_residue()

    def test_sigterm_is_passed_on(self, runner: Runner) -> None:
        """SIGTERM to run reaches the task; run exits with the task's status, clean."""
        runner.store.put("/s", {"v": "x"})
        spec = {
            "cmd": "trap 'echo got-term; exit 3' TERM; touch started; while :; do sleep 0.05; done",
            "secrets": {"s": {"source": "/s"}},
            "container": {"type": "MESOS", "volumes": [{"containerPath": "f", "secret": "s"}]},
        }
        process = runner.start(spec)
        wait_running(process)
        wait_for(runner.work / "started")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 3, err.decode()
        assert b"got-term" in out
        runner.assert_no_residue()

    def test_sigterm_just_as_the_task_starts(self, runner: Runner) -> None:
        """A SIGTERM that comes once the task's process exists, before run has started
        its checks, is passed on to the task: it is no interrupted launch, whose
        container nobody would then destroy."""
        spec = {"cmd": "trap 'exit 3' TERM; while :; do sleep 0.05; done"}
        # run itself, with a SIGTERM sent to it in that very moment
        at_the_moment = (
            "import os, signal, sys\n"
            "from mesos_secrets import cli, run\n"
            "checks = run._start_checks\n"
            "def start_checks(*args, **kwargs):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return checks(*args, **kwargs)\n"
            "run._start_checks = start_checks\n"
            "sys.exit(cli.main(sys.argv[1:]))\n"
        )
        command = [sys.executable, "-c", at_the_moment, *runner.command(spec)[1:]]
        result = subprocess.run(command, capture_output=True, timeout=60, check=False)
        err = result.stderr.decode()
        assert "interrupted while launching" not in err
        # the task's own status: its trap's, or SIGTERM's if the trap was not set yet
        assert result.returncode in (3, 128 + signal.SIGTERM), err
        assert "passing SIGTERM to the task(s)" in err
        runner.assert_no_residue()

    def test_grace_period_then_kill(self, runner: Runner) -> None:
        """A task that ignores SIGTERM is killed once the grace period is over."""
        spec = {"cmd": "trap '' TERM; touch started; while :; do sleep 0.05; done"}
        process = runner.start(spec, "--grace-period", "0.5")
        wait_running(process)
        wait_for(runner.work / "started")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 128 + signal.SIGKILL, err.decode()
        runner.assert_no_residue()

    def test_run_killed_then_recovered(self, runner: Runner) -> None:
        """run dies by SIGKILL: its task, and what the task started, die with it at once
        (nobody kills them by hand); its state is orphaned, and the next run removes it."""
        value = canary()
        runner.store.put("/s", {"v": value})
        spec = {
            "cmd": "sleep 60 & touch started; sleep 60",
            "env": {"S": {"secret": "s"}},
            "secrets": {"s": {"source": "/s"}},
            "container": {"type": "MESOS", "volumes": [{"containerPath": "f", "secret": "s"}]},
        }
        process = runner.start(spec)
        wait_for(runner.work / "started")
        assert len(processes_holding(value)) >= 2
        process.kill()
        process.wait()  # not communicate(): a surviving task would hold its pipes open
        wait_until(lambda: not processes_holding(value), timeout=10)
        process.communicate()
        assert list((runner.runtime / "containers").iterdir())
        result = runner.run({"cmd": "true"})
        assert result.returncode == 0
        assert b"cleaning up orphaned container" in result.stderr
        runner.assert_no_residue()


def wait_running(process: subprocess.Popen[bytes]) -> None:
    """Until `run` (started with -v) says the task runs and signals are passed on to it."""
    assert process.stderr is not None
    for line in process.stderr:
        if b" is running (container " in line:
            return
    raise AssertionError("run ended before its task was running")


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


class TestContainerizer:
    """The pipeline used directly, for what a Marathon app cannot say."""

    def test_rw_volume(self, tmp_path: Path, home: Path) -> None:
        """An RW secret volume is writable by the task; writes stay on its tmpfs."""
        from mesos_secrets import CommandInfo, ContainerInfo, Secret, TaskInfo, Volume
        from mesos_secrets.containerizer import Containerizer
        from mesos_secrets.containerizer.launcher import PosixLauncher
        from mesos_secrets.isolator import create_isolators
        from mesos_secrets.mesos import VolumeMode
        from resolvers.local import LocalResolver

        LocalStore(home).put("/s", {"v": "password"})
        sandbox = tmp_path / "sandbox"
        sandbox.mkdir()
        runtime = tmp_path / "runtime"
        volume = Volume.for_secret("my_secret", Secret.for_reference("/s"), VolumeMode.RW)
        task = TaskInfo(
            name="rw",
            task_id="rw",
            command=CommandInfo(
                value='test "$(cat my_secret)" = password && echo abc > my_secret && test "$(cat my_secret)" = abc'
            ),
            container=ContainerInfo(type=ContainerInfo.Type.MESOS, volumes=(volume,)),
        )
        with LocalResolver(home=home) as resolver:
            containerizer = Containerizer(
                create_isolators(None, resolver, runtime), PosixLauncher(), runtime
            )
            with containerizer.launch(task, sandbox) as container:
                assert not mounts_under(runtime)  # detached from the host while it runs
                assert container.wait().status == 0
        assert not mounts_under(tmp_path)
        assert list(sandbox.iterdir()) == []
