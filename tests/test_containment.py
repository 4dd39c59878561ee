"""Containment, tried as an attacker would: one test per way out, each with a task that
still gets its own secrets.

1. a second task of the same user (or root) reads the first one's secrets through /proc;
2. processes that outlive their task (a background process, a killed front end);
3. links a task plants for the cleanup, which runs as root;
4. a runtime directory another user planted;
5. mounts copied into other mount namespaces while containers launch;
6. concurrent front ends and recover on one runtime directory;
7. tokens in a front end's /proc/<pid>/environ;
8. core dumps;
9. absolute paths through links, leftovers of dead front ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets import CommandInfo, ContainerInfo, Secret, TaskInfo, Volume
from mesos_secrets.containerizer import Containerizer, cgroups
from mesos_secrets.containerizer import capabilities as caps
from mesos_secrets.containerizer.launcher import PosixLauncher
from mesos_secrets.containerizer.runtime import RuntimeDir
from mesos_secrets.errors import ConfigError
from mesos_secrets.isolator import create_isolators
from mesos_secrets.testing import canary, leaks
from resolvers.local import LocalResolver, LocalStore

from .conftest import requires_root
from .residue import host_mount_changes, processes_holding
from .test_run import BIN, Runner, sha, wait_for, wait_until

pytestmark = requires_root

NOBODY = pwd.getpwnam("nobody")


def secret_app(value_ref: str, cmd: str, **more: Any) -> dict[str, Any]:
    """An app with one secret as an environment variable and as the file secrets/db."""
    return {
        "cmd": cmd,
        "env": {"DB": {"secret": "db"}},
        "secrets": {"db": {"source": value_ref}},
        "container": {
            "type": "MESOS",
            "volumes": [{"containerPath": "secrets/db", "secret": "db"}],
        },
        **more,
    }


def holds_own_secret(value: str) -> str:
    """Shell that fails unless the task has ``value`` in $DB and in secrets/db."""
    return (
        f'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = {sha(value)} && '
        f'test "$(sha256sum < secrets/db | cut -c1-64)" = {sha(value)}'
    )


@pytest.fixture
def shared(tmp_path: Path, home: Path) -> Path:
    """Two runners' common runtime directory."""
    return tmp_path / "runtime"


def runner_in(tmp_path: Path, home: Path, name: str, runtime: Path) -> Runner:
    runner = Runner(tmp_path / name, home)
    runner.tmp.mkdir(exist_ok=True)
    runner.runtime = runtime
    return runner


# --- 1. task <-> task -----------------------------------------------------------------


class TestTaskToTask:
    @pytest.mark.parametrize("user", ["nobody", "root"])
    def test_second_task_cannot_read_the_first(
        self, tmp_path: Path, home: Path, shared: Path, user: str
    ) -> None:
        """B (same user, no secrets; the ACLs deny it A's) looks for A's secret through
        every /proc door: all processes' environments, A's host pid, A's root directory
        seen through /proc. It sees its own processes only, and nothing of A's."""
        value = canary()
        LocalStore(home).put("/a/db", {"password": value})
        acls = tmp_path / "acls.json"
        acls.write_text(
            json.dumps(
                {
                    "access_secrets": [
                        {"principals": {"values": ["a"]}, "secrets": {"values": ["/a/**"]}},
                        {"principals": {"values": ["b"]}, "secrets": {"values": ["/b/**"]}},
                    ]
                }
            )
        )
        a = runner_in(tmp_path, home, "a", shared)
        b = runner_in(tmp_path, home, "b", shared)
        with_acls = ("--acls", str(acls), "--principal")
        first = a.start(
            secret_app(
                "/a/db@password",
                f"{holds_own_secret(value)} && touch started && exec sleep 60",
                user=user,
            ),
            *with_acls,
            "a",
        )
        try:
            wait_for(a.work / "started")
            (a_pid,) = processes_holding(value)
            denied = b.run(secret_app("/a/db@password", "true", user=user), *with_acls, "b")
            assert denied.returncode == 1
            assert b"Secret /a/db is not accessible to principal 'b'" in denied.stderr
            sandbox = a.work.resolve()
            attack = "; ".join(
                [
                    "cat /proc/[0-9]*/environ",
                    f"cat /proc/{a_pid}/environ /proc/{a_pid}/root{sandbox}/secrets/db",
                    f"for p in /proc/[0-9]*; do cat $p/root{sandbox}/secrets/db; done",
                    f"cat {sandbox}/secrets/db",
                    "echo visible: $(cat /proc/[0-9]*/comm)",
                    "true",
                ]
            )
            result = b.run({"cmd": f"({attack}) 2>/dev/null", "user": user}, *with_acls, "b")
            assert result.returncode == 0, result.stderr.decode()
            assert not leaks(value, result.stdout)
            visible = result.stdout.split(b"visible:")[1].split()
            assert b"sleep" not in visible  # A's task: not even its name
            assert visible[0] == b"mesos-init"  # its own init, PID 1
        finally:
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=30)
        assert first.returncode == 128 + signal.SIGTERM
        a.assert_no_residue()

    def test_second_task_cannot_find_the_first_ones_sandbox(self, runner: Runner) -> None:
        """Two runs as nobody with temporary sandboxes: B cannot list or guess A's
        sandbox (what A wrote there, a rendered configuration say, stays A's)."""
        marker = canary()
        env = {**os.environ, "MESOS_SECRETS_HOME": str(runner.home)}

        def command(spec: dict[str, Any], name: str) -> list[str]:
            path = runner.tmp / f"{name}.json"
            path.write_text(json.dumps({"id": f"/{name}", "user": "nobody", **spec}))
            return [str(BIN), "run", str(path), "--runtime-dir", str(runner.runtime)]

        first = subprocess.Popen(
            command({"cmd": f"echo {marker} > mine; echo $MESOS_SANDBOX >&2; sleep 60"}, "a"),
            env=env,
            stderr=subprocess.PIPE,
        )
        try:
            assert first.stderr is not None
            sandbox = Path(first.stderr.readline().decode().strip())
            wait_for(sandbox / "mine")
            hunt = "ls /tmp/mesos-secrets-sandbox-*/; cat /tmp/mesos-secrets-sandbox-*/*/mine"
            second = subprocess.run(
                command({"cmd": f"({hunt}) 2>&1; true"}, "b"),
                env=env,
                capture_output=True,
                check=False,
            )
            assert second.returncode == 0, second.stderr.decode()
            assert marker.encode() not in second.stdout
            assert sandbox.name.encode() not in second.stdout
        finally:
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=30)

    def test_pod_containers_do_not_see_each_other(self, runner: Runner) -> None:
        """A pod's containers, as Mesos' nested containers by default: each in a PID
        namespace of its own (neither the host's nor its sibling's), so one container
        sees none of the other's processes, nor their environment, through /proc."""
        value = canary()
        runner.store.put("/pod/db", {"password": value})
        look = "echo visible: $(cat /proc/[0-9]*/comm); cat /proc/[0-9]*/cmdline"
        spec = {
            "id": "/pod",
            "environment": {"DB": {"secret": "db"}},
            "secrets": {"db": {"source": "/pod/db@password"}},
            "containers": [
                {
                    "name": "web",
                    "resources": {"cpus": 0.1, "mem": 16},
                    "exec": {"command": {"shell": "touch started; exec sleep 61"}},
                },
                {
                    "name": "worker",
                    "resources": {"cpus": 0.1, "mem": 16},
                    "exec": {
                        "command": {
                            "shell": "touch started; while [ ! -e go ]; do sleep 0.05; done; "
                            f"({look}) > seen.new 2>/dev/null; mv seen.new seen; exec sleep 60"
                        }
                    },
                },
            ],
        }
        process = runner.start(spec)
        try:
            for name in ("web", "worker"):
                wait_for(runner.work / name / "started")
            namespaces = set()
            for pid in processes_holding(value):  # web's sleep, worker's shell (its sleeps)
                with contextlib.suppress(FileNotFoundError):
                    namespaces.add(os.readlink(f"/proc/{pid}/ns/pid"))
            assert len(namespaces) == 2
            assert os.readlink("/proc/self/ns/pid") not in namespaces
            (runner.work / "worker" / "go").touch()
            wait_for(runner.work / "worker" / "seen")
            seen = (runner.work / "worker" / "seen").read_bytes()
            visible = seen.split(b"visible:")[1].split(b"\n")[0].split()
            assert visible[0] == b"mesos-init"  # its own init, PID 1
            assert b"sleep" not in visible  # web's task: not even its name
            assert b"61" not in seen  # nor its command line
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
        runner.assert_no_residue()

    def test_root_task_cannot_leave(self, runner: Runner, tmp_path: Path) -> None:
        """A root task has a reduced capability set (no mount to see the host's /proc
        again, no ptrace, no raw sockets), cannot read what the launcher hides, and cannot
        take the node: the host's files, kernel settings, disks and cgroups are out of
        its reach (any of them would make it root on the node, and so give it every
        other task's secrets). Its sandbox and its own /tmp are writable."""
        host_file = tmp_path / "host-file"
        host_file.write_text("host")
        escape = Path(f"/etc/mesos-secrets-escape-{canary(8)}")  # removed, should it appear
        cgroup_procs = next(Path("/sys/fs/cgroup").glob("*/cgroup.procs"))
        disks = [p.name for p in Path("/dev").iterdir() if p.is_block_device()]
        script = "; ".join(
            [
                "grep CapEff /proc/self/status",
                "mkdir -p p; mount -t proc proc p && echo MOUNTED",
                "umount /proc && echo UNMOUNTED",
                f"cat {runner.home}/key >/dev/null && echo READ-KEY",
                f"ls -A {runner.runtime}",
                "echo '|/bin/true' > /proc/sys/kernel/core_pattern && echo CORE-PATTERN",
                f"echo x > {escape} && echo WROTE-ETC",
                f"echo x >> {host_file} && echo WROTE-HOST",
                f"echo $$ > {cgroup_procs} && echo LEFT-CGROUP",
                "echo ls-dev $(ls /dev)",
                "echo x > /tmp/own && echo OWN-TMP",
                "echo x > own && echo OWN-SANDBOX",
                "true",
            ]
        )
        try:
            result = runner.run({"cmd": f"({script}) 2>&1"})
        finally:
            written = escape.exists()
            escape.unlink(missing_ok=True)
        assert not written
        assert result.returncode == 0, result.stderr.decode()
        out = result.stdout.decode()
        effective = int(out.split("CapEff:")[1].split()[0], 16)
        assert effective == sum(1 << c for c in caps.DEFAULT)
        for word in ("MOUNTED", "UNMOUNTED", "READ-KEY", "containers", "CORE-PATTERN"):
            assert word not in out, out
        for word in ("WROTE-ETC", "LEFT-CGROUP"):  # the host file is in /tmp: its own
            assert word not in out, out
        assert host_file.read_text() == "host"
        devices = out.split("ls-dev")[1].splitlines()[0].split()
        assert not set(devices) & set(disks)
        assert {"null", "zero", "urandom", "tty"} <= set(devices)
        assert "OWN-TMP" in out
        assert "OWN-SANDBOX" in out
        assert (runner.work / "own").exists()


@pytest.fixture
def runner(tmp_path: Path, home: Path) -> Runner:
    LocalStore(home).put("/s", {"v": "x"})
    return Runner(tmp_path, home)


def with_config(
    runner: Runner, tmp_path: Path, toml: str, spec: dict[str, Any]
) -> subprocess.CompletedProcess[bytes]:
    config = tmp_path / "config.toml"
    config.write_text(toml)
    command = runner.command(spec)
    return subprocess.run(
        [command[0], "--config", str(config), *command[1:]],
        capture_output=True,
        timeout=120,
        check=False,
    )


class TestCapabilities:
    def test_configurable(self, runner: Runner, tmp_path: Path) -> None:
        toml = '[containers]\ncapabilities = ["CAP_NET_BIND_SERVICE", "chown"]\n'
        result = with_config(runner, tmp_path, toml, {"cmd": "grep CapEff /proc/self/status"})
        assert result.returncode == 0, result.stderr.decode()
        wanted = (1 << caps.NAMES["NET_BIND_SERVICE"]) | (1 << caps.NAMES["CHOWN"])
        assert int(result.stdout.split()[1], 16) == wanted

    def test_all(self, runner: Runner, tmp_path: Path) -> None:
        toml = '[containers]\ncapabilities = ["ALL"]\n'
        result = with_config(runner, tmp_path, toml, {"cmd": "grep CapBnd /proc/self/status"})
        assert int(result.stdout.split()[1], 16) == int(
            Path("/proc/self/status").read_text().split("CapBnd:")[1].split()[0], 16
        )

    def test_unknown_name(self, runner: Runner, tmp_path: Path) -> None:
        toml = '[containers]\ncapabilities = ["FLY"]\n'
        result = with_config(runner, tmp_path, toml, {"cmd": "true"})
        assert result.returncode == 1
        last = result.stderr.decode().strip().splitlines()[-1]
        assert last.startswith("mesos-secrets: error: configuration file '")
        assert "[containers] capabilities: unknown capability 'FLY'" in last

    def test_non_root_task_is_bounded(self, runner: Runner) -> None:
        """A set-user-ID program cannot give a non-root task more than the set."""
        result = runner.run({"cmd": "grep CapBnd /proc/self/status", "user": "nobody"})
        assert int(result.stdout.split()[1], 16) == sum(1 << c for c in caps.DEFAULT)

    def test_read_only_host_can_be_turned_off(self, runner: Runner, tmp_path: Path) -> None:
        """`read_only_host = false` gives a root task the host's files, as Mesos does."""
        host_file = tmp_path / "host-file"
        host_file.write_text("host")
        toml = "[containers]\nread_only_host = false\n"
        result = with_config(runner, tmp_path, toml, {"cmd": f"echo x >> {host_file}"})
        assert result.returncode == 0, result.stderr.decode()
        assert host_file.read_text() == "hostx\n"

    def test_bad_setting(self, runner: Runner, tmp_path: Path) -> None:
        result = with_config(runner, tmp_path, '[containers]\nread_only = "yes"\n', {"cmd": "true"})
        assert result.returncode == 1
        assert b"[containers]: unknown setting 'read_only'" in result.stderr


def test_set_user_id_program_gives_nothing(world: Path, tmp_path: Path, home: Path) -> None:
    """A non-root task runs a set-user-ID root program: no new privileges, by default."""
    program = world / "suid-id"
    subprocess.run(["cp", "/usr/bin/id", str(program)], check=True)
    program.chmod(0o4755)
    runner = Runner(tmp_path, home)
    result = runner.run({"cmd": f"{program} -u", "user": "nobody"})
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.strip() == str(NOBODY.pw_uid).encode()
    toml = "[containers]\nno_new_privileges = false\n"
    allowed = with_config(runner, tmp_path, toml, {"cmd": f"{program} -u", "user": "nobody"})
    assert allowed.stdout.strip() == b"0"  # what the default keeps from happening


# --- 2. processes that outlive their task ----------------------------------------------


class TestNothingOutlivesTheTask:
    def test_background_process(self, runner: Runner) -> None:
        """`sleep 40 & exit 0`: run exits 0, and the sleep (with the secret) is gone the
        moment run has exited. Its output goes to files, not pipes: a sleep left running
        would hold pipes open, and waiting for their end would wait for the sleep to end
        by itself (40s later, gone by then: the check would pass with the leak)."""
        value = canary()
        runner.store.put("/bg", {"v": value})
        with (runner.tmp / "out").open("wb") as out, (runner.tmp / "err").open("wb") as err:
            process = subprocess.Popen(
                runner.command(secret_app("/bg", "sleep 40 & exit 0")), stdout=out, stderr=err
            )
            assert process.wait(timeout=30) == 0, (runner.tmp / "err").read_text()
        assert processes_holding(value) == []
        runner.assert_no_residue()

    def test_killed_while_frozen_mid_destroy(self, tmp_path: Path, home: Path) -> None:
        """A front end that dies between freezing a container and killing it leaves
        frozen processes that no parent-death signal can reach: recover kills them."""
        host = cgroups.detect()
        if not isinstance(host, cgroups.V1Cgroups):
            pytest.skip("the freezer of cgroup v1 is what can be left frozen")
        value = canary()
        LocalStore(home).put("/f", {"v": value})
        runner = Runner(tmp_path, home)
        process = runner.start(secret_app("/f", "touch started; sleep 60"))
        wait_for(runner.work / "started")
        (container,) = os.listdir(runner.runtime / "containers")
        host.freeze(container)
        process.kill()
        process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]
        time.sleep(0.5)
        assert processes_holding(value)  # frozen: SIGKILL pending, not delivered
        result = runner.run({"cmd": "true"})
        assert result.returncode == 0, result.stderr.decode()
        assert processes_holding(value) == []
        runner.assert_no_residue()

    def test_recover_kills_a_survivor_without_cgroups(self, tmp_path: Path, home: Path) -> None:
        """Without cgroups (a front end that is not root, or a host without a freezer),
        a container still running after its front end let go of it is killed by
        recover, through its init's recorded pid and start time."""
        value = canary()
        runtime = tmp_path / "runtime"
        sandbox = tmp_path / "sandbox"
        sandbox.mkdir()
        command = CommandInfo(value=f"touch started; sleep 60; echo {value}")
        task = TaskInfo(name="o", task_id="o", command=command)
        with LocalResolver(home=home) as resolver:
            chain = create_isolators(None, resolver, runtime)
            first = Containerizer(chain, PosixLauncher(), runtime, cgroups=None)
            container = first.launch(task, sandbox)
            try:
                wait_for(sandbox / "started")
                # Its claim goes as its front end's death would, but the container lives
                # on: what a parent-death signal missed.
                first._claims.pop(container.id).release()
                assert processes_holding(value)
                again = Containerizer(chain, PosixLauncher(), runtime, cgroups=None)
                assert again.recover() == [container.id]
                wait_until(lambda: not processes_holding(value), timeout=10)
                assert container.wait().signal == signal.SIGKILL
            finally:
                container.process.kill(signal.SIGKILL)
                container.process.wait()
                container.process.close()
        assert os.listdir(runtime / "containers") == []


# --- 3. links planted for the cleanup --------------------------------------------------


def test_cleanup_follows_no_planted_link(runner: Runner, tmp_path: Path) -> None:
    """The task (nobody) swaps its secrets/ directory for a link to a root-owned
    directory holding a file of the same name; cleanup, as root, leaves it alone."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "db").write_bytes(b"")
    value = canary()
    runner.store.put("/l", {"v": value})
    cmd = f"{holds_own_secret(value)} && mv secrets moved && ln -s {victim} secrets"
    result = runner.run(secret_app("/l", cmd, user="nobody"))
    assert result.returncode == 0, result.stderr.decode()
    assert (victim / "db").exists()
    assert (runner.work / "secrets").is_symlink()
    runner.assert_no_residue()


# --- 4. a planted runtime directory ----------------------------------------------------


#: This checkout, which the commands run as nobody import (not whichever checkout the
#: virtualenv was installed from: its environment is not this process's).
ROOT = Path(__file__).resolve().parents[1]


def nobody_env(env: dict[str, str]) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Path]:
    """A directory everyone can reach (pytest's are root's alone)."""
    if not all(p.stat().st_mode & 0o001 for p in Path(sys.executable).parents):
        pytest.skip("this checkout's virtualenv is not reachable by user nobody")
    if not all(p.stat().st_mode & 0o001 for p in (ROOT, *ROOT.parents)):
        pytest.skip("this checkout is not reachable by user nobody")
    base = Path(tempfile.mkdtemp(prefix="mesos-secrets-test-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


NOBODY_PREFIX = (
    "setpriv",
    f"--reuid={NOBODY.pw_uid}",
    f"--regid={NOBODY.pw_gid}",
    "--clear-groups",
)


def as_nobody(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*NOBODY_PREFIX, str(BIN), *args],
        env=nobody_env(env),
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_planted_runtime_directory_is_refused(world: Path) -> None:
    """Another user's /tmp/mesos-secrets-<uid>, whose containers/ is a link to the
    victim's own files: refused, and nothing of the victim's is deleted."""
    tmp = world / "tmp"
    tmp.mkdir(mode=0o1777)
    tmp.chmod(0o1777)
    planted = tmp / f"mesos-secrets-{NOBODY.pw_uid}"
    planted.mkdir()
    victim = world / "victim"
    for name in ("a", "b"):
        (victim / name).mkdir(parents=True)
    subprocess.run(["chown", "-R", "nobody", str(victim)], check=True)
    (planted / "containers").symlink_to(victim)
    os.chown(planted, 1, 1)  # daemon: another user
    app = world / "app.json"
    app.write_text(json.dumps({"id": "/a", "cmd": "true"}))
    app.chmod(0o644)
    home = world / "home"
    home.mkdir()
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    env = {"HOME": str(home), "TMPDIR": str(tmp), "MESOS_SECRETS_HOME": str(home / "store")}
    result = as_nobody("run", str(app), env=env)
    assert result.returncode == 1
    assert (
        f"runtime directory '{planted}' is not safe to use: it belongs to uid 1".encode()
        in result.stderr
    )
    assert b"Traceback" not in result.stderr
    assert sorted(os.listdir(victim)) == ["a", "b"]
    os.chown(planted, NOBODY.pw_uid, NOBODY.pw_gid)
    planted.chmod(0o777)
    result = as_nobody("run", str(app), env=env)
    assert result.returncode == 1
    assert b"others can write to it (mode 0777)" in result.stderr
    assert sorted(os.listdir(victim)) == ["a", "b"]


def test_runtime_directory_checks() -> None:
    """Direct checks: a link is refused; a fresh directory is created 0700."""
    base = Path(tempfile.mkdtemp())
    try:
        (base / "link").symlink_to(base)
        with pytest.raises(ConfigError, match="is a symbolic link or not a directory"):
            RuntimeDir(base / "link")
        made = RuntimeDir(base / "fresh")
        assert (base / "fresh").stat().st_mode & 0o777 == 0o700
        made.close()
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_secret_over_a_hidden_path_is_refused(runner: Runner) -> None:
    """A secret's absolute path inside a hidden directory would unhide it: refused."""
    assert runner.run({"cmd": "true"}).returncode == 0  # the runtime directory exists
    target = runner.runtime / ".containers.lock"
    spec = {
        "cmd": f"ls -A {runner.runtime}",
        "secrets": {"s": {"source": "/s"}},
        "container": {"type": "MESOS", "volumes": [{"containerPath": str(target), "secret": "s"}]},
    }
    result = runner.run(spec)
    assert result.returncode == 1
    assert (
        f"the secret's path '{target}' is in '{runner.runtime}', which tasks may not see".encode()
        in result.stderr
    )
    runner.assert_no_residue()


# --- 5. mounts copied into other namespaces -------------------------------------------


class SpyLauncher(PosixLauncher):
    """Right before the task starts (when a secret tmpfs mounted on the host would be
    there), a spy makes a mount namespace of its own and lists what it copied."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def launch(self, config: Any, info: Any, **stdio: Any) -> Any:
        spy = subprocess.run(
            ["unshare", "--mount", "cat", "/proc/self/mountinfo"], capture_output=True, check=True
        )
        self.seen.append(spy.stdout.decode())
        return super().launch(config, info, **stdio)


def test_no_mount_to_copy_during_launch(tmp_path: Path, home: Path) -> None:
    """A namespace made while a container launches copies nothing of it."""
    value = canary()
    LocalStore(home).put("/m", {"v": value})
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    runtime = tmp_path / "runtime"
    volume = Volume.for_secret("secret", Secret.for_reference("/m"))
    task = TaskInfo(
        name="m",
        task_id="m",
        command=CommandInfo(value=f'test "$(cat secret)" = {value}'),
        container=ContainerInfo(type=ContainerInfo.Type.MESOS, volumes=(volume,)),
    )
    spy = SpyLauncher()
    with LocalResolver(home=home) as resolver:
        containerizer = Containerizer(create_isolators(None, resolver, runtime), spy, runtime)
        with containerizer.launch(task, sandbox) as container:
            assert container.wait().status == 0
    (copied,) = spy.seen
    assert str(runtime) not in copied
    assert " mesos-secrets " not in copied


def test_each_task_holds_its_own_mounts_only(tmp_path: Path, home: Path, shared: Path) -> None:
    """Eight tasks launched at once: each one's mount namespace has its own secret and no
    other's, and the host's mount table never shows any of them."""
    values = [canary() for _ in range(8)]
    store = LocalStore(home)
    for i, value in enumerate(values):
        store.put(f"/c{i}", {"v": value})
    with host_mount_changes() as seen_on_host:
        _launch_eight_and_inspect(tmp_path, home, shared, values)
    assert seen_on_host == []


def _launch_eight_and_inspect(tmp_path: Path, home: Path, shared: Path, values: list[str]) -> None:
    runners = [runner_in(tmp_path, home, f"r{i}", shared) for i in range(8)]
    processes = [
        r.start(
            secret_app(f"/c{i}", f"{holds_own_secret(values[i])} && touch started && exec sleep 60")
        )
        for i, r in enumerate(runners)
    ]
    try:
        for r in runners:
            wait_for(r.work / "started")
        for i, value in enumerate(values):
            (pid,) = processes_holding(value)
            mountinfo = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            points = [line.split()[4] for line in mountinfo]
            own = str(runners[i].work.resolve() / ".mesos-secrets")
            assert own in points  # its own secrets' tmpfs, bound where it belongs
            others = [str(r.work.resolve()) for j, r in enumerate(runners) if j != i]
            assert not [p for p in points if p.startswith(tuple(others))]
            assert not [p for p in points if p.startswith(f"{shared}/")]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.communicate(timeout=30)


# --- 6. concurrent front ends ----------------------------------------------------------


def test_claims_are_locked(tmp_path: Path) -> None:
    """A claim being made or held is never an orphan; a dead owner's claim is."""
    runtime = RuntimeDir(tmp_path / "runtime")
    held = runtime.claim("containers", "held", {})
    assert list(runtime.orphans("containers")) == []
    (tmp_path / "runtime" / "containers" / ".new-half").mkdir()  # its maker died mid-claim
    (orphan,) = runtime.orphans("containers")
    assert (orphan.name, orphan.complete) == ("half", False)
    orphan.remove()
    held.release()  # as its owner's death would
    (orphan,) = runtime.orphans("containers")
    assert orphan.name == "held"
    orphan.remove()
    assert os.listdir(tmp_path / "runtime" / "containers") == []


@pytest.mark.slow
def test_fifty_concurrent_runs_and_recover(tmp_path: Path, home: Path, shared: Path) -> None:
    """50 runs on one runtime directory, while front ends starting up recover in a loop:
    every task gets its own secret, none crashes, nothing is left."""
    values = [canary() for _ in range(50)]
    store = LocalStore(home)
    for i, value in enumerate(values):
        store.put(f"/p{i}", {"v": value})
    stop = threading.Event()
    recovered: list[str] = []

    def recover_loop() -> None:
        with LocalResolver(home=home) as resolver:
            while not stop.is_set():
                containerizer = Containerizer(
                    create_isolators(None, resolver, shared), PosixLauncher(), shared
                )
                recovered.extend(containerizer.recover())

    def one(i: int) -> subprocess.CompletedProcess[bytes]:
        runner = runner_in(tmp_path, home, f"w{i}", shared)
        return runner.run(secret_app(f"/p{i}", holds_own_secret(values[i])))

    spy = threading.Thread(target=recover_loop)
    spy.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(50)))
    finally:
        stop.set()
        spy.join()
    for result in results:
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert b"Traceback" not in result.stderr
        assert b"orphan" not in result.stderr
    assert recovered == []
    assert os.listdir(shared / "containers") == []


class FailingOnce(cgroups.V1Cgroups):
    """The host's cgroups, whose first removal fails (EBUSY)."""

    failed = False

    def remove(self, container_id: str) -> None:
        if not FailingOnce.failed:
            FailingOnce.failed = True
            raise OSError(16, "Device or resource busy")
        super().remove(container_id)


def test_failed_cleanup_is_tried_again(tmp_path: Path, home: Path) -> None:
    """A cleanup step that fails keeps the container's claim: the next recover retries."""
    host = cgroups.detect()
    if not isinstance(host, cgroups.V1Cgroups):
        pytest.skip("cgroup v1 here")
    failing = FailingOnce(host.freezer, host.pids_root, host.every)
    runtime = tmp_path / "runtime"
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    task = TaskInfo(name="f", task_id="f", command=CommandInfo(value="true"))
    with LocalResolver(home=home) as resolver:
        chain = create_isolators(None, resolver, runtime)
        containerizer = Containerizer(chain, PosixLauncher(), runtime, cgroups=failing)
        container = containerizer.launch(task, sandbox)
        assert container.wait().status == 0
        with pytest.raises(OSError, match="busy"):
            container.destroy()
        assert os.listdir(runtime / "containers") == [container.id]
        again = Containerizer(chain, PosixLauncher(), runtime, cgroups=failing)
        assert again.recover() == [container.id]
    assert os.listdir(runtime / "containers") == []
    assert not host.exists(container.id)


def test_task_that_ends_at_once_has_run(tmp_path: Path, home: Path) -> None:
    """`exit 3`, launched while the front end is busy: the task's status, 3, never a
    launch failure (the end of the report is what says the task started)."""
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(10_000))

    spinner = threading.Thread(target=busy)
    spinner.start()
    runtime = tmp_path / "runtime"
    task = TaskInfo(name="q", task_id="q", command=CommandInfo(value="exit 3"))
    try:
        with LocalResolver(home=home) as resolver:
            containerizer = Containerizer(
                create_isolators(None, resolver, runtime), PosixLauncher(), runtime
            )
            for i in range(20):
                sandbox = tmp_path / f"s{i}"
                sandbox.mkdir()
                with containerizer.launch(task, sandbox) as container:
                    assert container.wait().exit_code == 3
    finally:
        stop.set()
        spinner.join()


def test_unusable_runtime_directory_is_one_line(runner: Runner) -> None:
    spec = runner.spec({"cmd": "true"})
    result = subprocess.run(
        [str(BIN), "run", str(spec), "--runtime-dir", "/etc/passwd/runtime"],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        b"mesos-secrets: error: cannot use runtime directory '/etc/passwd/runtime': "
        b"not a directory ('/etc/passwd')\n"
    )


def test_task_reading_the_terminal(runner: Runner) -> None:
    """An interactive task gets the terminal: it reads what is typed (a background
    process group reading it would be stopped, and run would wait forever)."""
    spec = runner.spec({"cmd": "read line; echo got:$line"})
    command = f"{BIN} run {spec} --runtime-dir {runner.runtime}"
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        input=b"hello\n",
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "MESOS_SECRETS_HOME": str(runner.home)},
    )
    assert result.returncode == 0, result.stdout
    assert b"got:hello" in result.stdout


def test_signal_reaches_a_task_that_left_its_group(runner: Runner) -> None:
    """The task's main process moves to another process group: SIGTERM still reaches it."""
    program = (
        "import os, signal, sys, time\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    os.setpgid(0, 0); time.sleep(60); os._exit(0)\n"
        "time.sleep(0.2); os.setpgid(0, child)\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(4))\n"
        "open('started', 'w').close()\n"
        "time.sleep(60)\n"
    )
    runner.work.mkdir()
    (runner.work / "moves.py").write_text(program)  # the host's /tmp is not the task's
    # The interpreter itself: a checkout in /tmp (and its virtualenv) is not in a root
    # task's own /tmp.
    process = runner.start({"cmd": f"exec {os.path.realpath(sys.executable)} -I moves.py"})
    wait_for(runner.work / "started")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 4, err.decode()


# --- 7 and 8. a front end's /proc and core -------------------------------------------


def test_token_not_in_proc_environ(runner: Runner) -> None:
    """The operator's VAULT_TOKEN: not in run's /proc/<pid>/environ, nor the task's."""
    token = canary()
    spec = runner.spec({"cmd": "touch started; sleep 60"})
    runtime = ("--runtime-dir", str(runner.runtime))
    process = subprocess.Popen(
        [str(BIN), "run", str(spec), "--work-dir", str(runner.work), *runtime],
        env={**os.environ, "VAULT_TOKEN": token, "MESOS_SECRETS_HOME": str(runner.home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(runner.work / "started")
        assert not leaks(token, Path(f"/proc/{process.pid}/environ").read_bytes())
        assert processes_holding(token) == []
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        assert limits.split("Max core file size")[1].split()[:2] == ["0", "0"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_front_end_unreadable_by_its_own_user(world: Path) -> None:
    """run as nobody is not dumpable: another process of nobody's cannot read its
    environment or memory (which holds the resolved values)."""
    os.chown(world, NOBODY.pw_uid, NOBODY.pw_gid)
    env = {
        "HOME": str(world),
        "XDG_RUNTIME_DIR": str(world),
        "MESOS_SECRETS_HOME": str(world / "store"),
    }
    value = canary()
    put = subprocess.run(
        [*NOBODY_PREFIX, str(BIN), "secret", "put", "/s", "v=-"],
        input=value.encode(),
        env=nobody_env(env),
        capture_output=True,
        check=False,
    )
    assert put.returncode == 0, put.stderr
    app = world / "app.json"
    app.write_text(
        json.dumps(
            {
                "id": "/a",
                "cmd": "touch started; sleep 60",
                "env": {"S": {"secret": "s"}},
                "secrets": {"s": {"source": "/s"}},
            }
        )
    )
    work = world / "work"
    process = subprocess.Popen(
        [*NOBODY_PREFIX, str(BIN), "run", str(app), "--work-dir", str(work)],
        env=nobody_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(work / "started")
        spy = subprocess.run(
            [
                *NOBODY_PREFIX,
                "sh",
                "-c",
                f"cat /proc/{process.pid}/environ /proc/{process.pid}/mem",
            ],
            capture_output=True,
            check=False,
        )
        assert spy.stderr.count(b"Permission denied") == 2, spy.stderr
        assert not leaks(value, spy.stdout)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_no_core_dump(runner: Runner, tmp_path: Path) -> None:
    """run crashes (SIGSEGV) with a resolved value in memory and core dumps allowed by
    its caller: no core file is written."""
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core files go to {pattern!r}, not to the crashing process's directory")
    value = canary()
    runner.store.put("/core", {"v": value})
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def allow_cores() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    process = subprocess.Popen(
        runner.command(secret_app("/core", "touch started; sleep 60")),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=allow_cores,  # noqa: PLW1509 (the test's own child, single-threaded)
    )
    wait_for(runner.work / "started")
    process.send_signal(signal.SIGSEGV)
    process.wait(timeout=30)
    process.communicate()
    assert process.returncode == -signal.SIGSEGV
    assert os.listdir(cwd) == []
    wait_until(lambda: not processes_holding(value), timeout=10)
    assert runner.run({"cmd": "true"}).returncode == 0  # recovers what the crash left
    runner.assert_no_residue()


# --- 9. absolute paths through links, leftovers ------------------------------------------


def test_absolute_path_through_a_link_is_refused(runner: Runner, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "file").write_text("host content")
    (tmp_path / "link").symlink_to(real)
    spec = {
        "cmd": "true",
        "secrets": {"s": {"source": "/s"}},
        "container": {
            "type": "MESOS",
            "volumes": [{"containerPath": str(tmp_path / "link" / "file"), "secret": "s"}],
        },
    }
    result = runner.run(spec)
    assert result.returncode == 1
    assert b"goes through a symbolic link" in result.stderr
    assert (real / "file").read_text() == "host content"
    runner.assert_no_residue()


def test_temporary_sandbox_of_a_killed_run_is_removed(runner: Runner) -> None:
    spec = runner.spec({"cmd": "echo $MESOS_SANDBOX > /dev/stderr; touch x; sleep 60"})
    process = subprocess.Popen(
        [str(BIN), "run", str(spec), "--runtime-dir", str(runner.runtime)],
        env={**os.environ, "MESOS_SECRETS_HOME": str(runner.home)},
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    sandbox = Path(process.stderr.readline().decode().strip())
    wait_for(sandbox / "x")
    process.kill()
    process.wait()
    process.stderr.close()
    assert sandbox.parent.exists()
    result = runner.run({"cmd": "true"})
    assert result.returncode == 0, result.stderr.decode()
    assert not sandbox.parent.exists()
    runner.assert_no_residue()
