"""``run`` without root: env and file secrets as an unprivileged user, with the same
guarantees as root (a tmpfs of the task's own, 0400, nothing left), through a user
namespace, on the host's filesystem and in a private image (umoci's rootless unpack, an
overlay and runc in that namespace); and one clear line where the kernel forbids those."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets import linux
from mesos_secrets.containerizer.runc import RuncLauncher
from mesos_secrets.containerizer.userns import private_tmpfs
from mesos_secrets.isolator import LaunchInfo
from mesos_secrets.testing import canary

from .conftest import as_nobody, requires_root
from .registry import Registry
from .residue import processes_holding
from .test_images import docker_config, layout, registry  # noqa: F401 (fixtures)
from .test_run import BIN, sha, wait_until

pytestmark = requires_root


class Nobody:
    """Runs the checkout's ``mesos-secrets`` as user nobody, with a home, a store and a
    runtime directory of its own."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.user = pwd.getpwnam("nobody")
        os.chown(base, self.user.pw_uid, self.user.pw_gid)
        checkout = Path(__file__).resolve().parents[1]
        self.runtime = base / "runtime"
        self.env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(checkout),  # this checkout's code, not the virtualenv's
            "MESOS_SECRETS_HOME": str(base / "store"),
            "HOME": str(base),
            "XDG_RUNTIME_DIR": str(self.runtime),
        }

    def command(self, *args: str) -> list[str]:
        return [
            "setpriv",
            f"--reuid={self.user.pw_uid}",
            f"--regid={self.user.pw_gid}",
            "--clear-groups",
            str(BIN),
            *args,
        ]

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.command(*args),
            input=stdin,
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def spec(self, name: str, app: dict[str, Any]) -> str:
        path = self.base / name
        path.write_text(json.dumps(app))
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return str(path)

    def put(self, value: str | bytes, path: str = "/app/db", key: str = "password") -> None:
        data = value.encode() if isinstance(value, str) else value
        result = self.run("secret", "put", path, f"{key}=-", stdin=data)
        assert result.returncode == 0, result.stderr.decode()

    def assert_nothing_left(self, value: str) -> None:
        """No container state, no process holding ``value``, and ``value`` in no file
        outside the (encrypted) store."""
        containers = self.runtime / "mesos-secrets" / "containers"
        assert not containers.exists() or list(containers.iterdir()) == []
        assert processes_holding(value) == []
        for root, _, files in os.walk(self.base):
            if Path(root).is_relative_to(self.base / "store"):
                continue
            for name in files:
                with contextlib.suppress(OSError):
                    assert value.encode() not in (Path(root) / name).read_bytes(), name

    def give(self, source: Path, name: str) -> str:
        """A copy of a file of root's the user may read."""
        path = self.base / name
        shutil.copyfile(source, path)
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return str(path)


@pytest.fixture
def nobody() -> Iterator[Nobody]:
    if not all(p.stat().st_mode & 0o001 for p in Path(sys.executable).parents):
        pytest.skip("this checkout's virtualenv is not reachable by user nobody")
    checkout = Path(__file__).resolve().parents[1]
    if not all(p.stat().st_mode & 0o001 for p in (checkout, *checkout.parents)):
        pytest.skip("this checkout is not reachable by user nobody")
    base = Path(tempfile.mkdtemp(prefix="mesos-secrets-rootless-"))
    try:
        yield Nobody(base)
    finally:
        shutil.rmtree(base)


def app(cmd: str) -> dict[str, Any]:
    return {
        "id": "/app",
        "cmd": cmd,
        "env": {"DB": {"secret": "db"}},
        "secrets": {"db": {"source": "/app/db@password"}},
        "container": {
            "type": "MESOS",
            "volumes": [{"containerPath": "secrets/db", "secret": "db"}],
        },
    }


CHECKS = "; ".join(
    [
        "set -e",
        'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = "$WANT"',
        'test "$(sha256sum < secrets/db | cut -c1-64)" = "$WANT"',
        'test "$(stat -f -c %T secrets/db)" = tmpfs',  # on a tmpfs
        'test "$(stat -L -c %a secrets/db)" = 400',  # 0400
        "if chmod 600 secrets/db 2>/dev/null; then echo writable; exit 1; fi",
        'test "$(id -u)" = "$(stat -L -c %u secrets/db)"',  # the task's
        "echo delivered",
    ]
)


def test_env_and_file_secrets_without_root(nobody: Nobody) -> None:
    value = canary()
    nobody.put(value)
    spec = app(CHECKS)
    spec["env"]["WANT"] = sha(value)
    work = nobody.base / "work"
    result = nobody.run("run", nobody.spec("app.json", spec), "--work-dir", str(work))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"delivered\n"
    nobody.assert_nothing_left(value)
    assert not (work / ".mesos-secrets" / "..data").exists()


#: What a second task prints of the processes it sees: their command lines.
SEEN_PROCESSES = "echo processes: $(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ')"


def assert_saw_nothing(output: bytes, value: str) -> None:
    """A second task's look (:data:`SEEN_PROCESSES`, then secrets, then mounts of the
    first): not the first's value, process (``sleep 60``) or mounts."""
    assert value.encode() not in output
    assert b"processes: " in output
    assert b"sleep 60" not in output
    assert b"mounts of one: 0\n" in output


def test_another_task_of_the_same_user_cannot_see_it(nobody: Nobody) -> None:
    """Two rootless tasks of one user: the second finds no trace of the first's process,
    its files or its tmpfs."""
    value = canary()
    nobody.put(value)
    holder = app("touch started; exec sleep 60")
    first = nobody.start(
        "run", nobody.spec("one.json", holder), "--work-dir", str(nobody.base / "one")
    )
    try:
        wait_until((nobody.base / "one" / "started").exists, timeout=60)
        one = nobody.base / "one"
        look = (
            f"{SEEN_PROCESSES}; "
            f"cat /proc/*/root{one}/secrets/db 2>/dev/null; "
            f"cat {one}/secrets/db 2>/dev/null; "
            f"echo mounts of one: $(grep -h {one} /proc/*/mountinfo 2>/dev/null | grep -c .); "
            "true"
        )
        second = nobody.run(
            "run", nobody.spec("two.json", {"id": "/two", "cmd": look}), "--work-dir",
            str(nobody.base / "two"),
        )  # fmt: skip
        assert second.returncode == 0, second.stderr.decode()
        assert_saw_nothing(second.stdout, value)
    finally:
        first.terminate()
        first.communicate(timeout=30)


#: ``python -c FORBIDDING UID GID COMMAND…``: runs COMMAND as UID:GID in a user namespace
#: of its own (the host's ids mapped as they are) whose ``user.max_user_namespaces`` is
#: 0, as a kernel that forbids unprivileged user namespaces has it, for that command
#: only (the host's setting is left alone).
FORBIDDING = """
import os, sys
from mesos_secrets import linux
ready_r, ready_w = os.pipe()
mapped_r, mapped_w = os.pipe()
child = os.fork()
if child == 0:
    linux.unshare(linux.CLONE_NEWUSER)
    os.write(ready_w, b"x")
    os.read(mapped_r, 1)
    with open("/proc/sys/user/max_user_namespaces", "w") as limit:
        limit.write("0")
    os.setgroups([])
    os.setgid(int(sys.argv[2]))
    os.setuid(int(sys.argv[1]))
    os.execvp(sys.argv[3], sys.argv[3:])
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{child}/{name}", "w") as out:
        out.write("0 0 65536\\n")
os.write(mapped_w, b"x")
_, status = os.waitpid(child, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def forbidden(nobody: Nobody, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``mesos-secrets ARGS…`` as nobody, where user namespaces are forbidden to it."""
    # Inside a user namespace this machine's virtualenv interpreter (under /root) is out
    # of nobody's reach: the system's, with the checkout and the virtualenv's packages.
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None:
        pytest.skip("no system python3 to run the front end in a user namespace")
    forbidding = [
        sys.executable, "-c", FORBIDDING, str(nobody.user.pw_uid), str(nobody.user.pw_gid)
    ]  # fmt: skip
    cli = "import sys; from mesos_secrets.cli import main; sys.exit(main())"
    path = os.pathsep.join([nobody.env["PYTHONPATH"], sysconfig.get_path("purelib")])
    return subprocess.run(
        [*forbidding, system, "-c", cli, *args],
        env={**nobody.env, "PYTHONPATH": path},
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_where_the_kernel_forbids_it(nobody: Nobody) -> None:
    """File secrets, and env secrets (the task's own namespaces), one line each."""
    value = canary()
    nobody.put(value)

    def run(spec: str) -> subprocess.CompletedProcess[bytes]:
        return forbidden(nobody, "run", spec)

    result = run(nobody.spec("app.json", app("true")))
    assert result.returncode == 1
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith(
        "mesos-secrets: error: cannot make the secret tmpfs in a user namespace: "
    )
    assert "this kernel forbids unprivileged user namespaces" in line
    env_only = run(
        nobody.spec(
            "env.json",
            {"id": "/e", "cmd": "true", "env": {"DB": {"secret": "db"}},
             "secrets": {"db": {"source": "/app/db@password"}}},
        ),
    )  # fmt: skip
    assert env_only.returncode == 1
    (line,) = env_only.stderr.decode().splitlines()
    assert "this kernel forbids unprivileged user namespaces" in line


# --- images ---------------------------------------------------------------------------

IMAGE_CHECKS = "; ".join(
    [
        "set -e",
        'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = "$WANT"',
        'test "$(sha256sum < /etc/db-password | cut -c1-64)" = "$WANT"',
        'test "$(sha256sum < secrets/db | cut -c1-64)" = "$WANT"',
        'test "$(stat -f -c %T /etc/db-password)" = tmpfs',
        'test "$(stat -c %a /etc/db-password)" = 400',
        'test "$(stat -L -c %a secrets/db)" = 400',
        # (``! cmd`` would not do: ``set -e`` ignores a negated command's failure.)
        "if chmod 600 /etc/db-password 2>/dev/null; then echo writable; exit 1; fi",
        # The host's /sys, read-only all through (its cgroup hierarchies too).
        "if awk '$5 ~ \"^/sys\" && $6 !~ /^ro/' /proc/self/mountinfo | grep .; then exit 1; fi",
        # The user is the root of the task's user namespace, and no one else is mapped.
        'test "$(id -u)" = 0',
        'test "$(stat -c %u /etc/db-password)" = 0',
        'test "$(cat /proc/self/uid_map | tr -s " ")" = " 0 $HOST_UID 1"',
        'test "$(pwd)" = /mnt/mesos/sandbox',
        "test -f /etc/hello",
        "test ! -e /etc/deleteme",  # the second layer's whiteout, applied by umoci
        # The overlay takes writes and removals (whiteouts, in a user namespace too).
        "echo new > /etc/new && rm /etc/hello && test ! -e /etc/hello",
        'rm -r /data && mkdir /data && test -z "$(ls -A /data)"',  # an opaque directory
        "echo inside-the-image",
    ]
)


class ImageUser:
    """User nobody, running specs in images from the test registry, with its own store
    and image store, the registry's CA trusted and its pull secret stored."""

    def __init__(self, nobody: Nobody, server: Registry) -> None:
        self.nobody = nobody
        self.registry = server
        ca = nobody.give(server.ca.ca.cert, "ca.crt")
        self.images = nobody.base / "images"
        self.config = nobody.base / "config.toml"
        self.config.write_text(f'[images]\nstore = "{self.images}"\nca_bundle = "{ca}"\n')
        os.chown(self.config, nobody.user.pw_uid, nobody.user.pw_gid)
        nobody.put(docker_config(server), "/registry/pull", "config")

    def app(self, cmd: str, *, volumes: bool = True, **more: Any) -> dict[str, Any]:
        docker = {
            "image": f"{self.registry.host}/private/busybox:latest",
            "pullConfig": {"secret": "pull"},
        }
        container: dict[str, Any] = {"type": "MESOS", "docker": docker}
        if volumes:
            container["volumes"] = [
                {"containerPath": "/etc/db-password", "secret": "db"},
                {"containerPath": "secrets/db", "secret": "db"},
            ]
        return {
            "id": "/image",
            "cmd": cmd,
            "env": {"DB": {"secret": "db"}, "HOST_UID": str(self.nobody.user.pw_uid)},
            "secrets": {
                "db": {"source": "/app/db@password"},
                "pull": {"source": "/registry/pull@config"},
            },
            "container": container,
            **more,
        }

    def command(self, spec: str, work: str) -> list[str]:
        return ["--config", str(self.config), "run", spec, "--work-dir", work]


@pytest.fixture
def image_user(nobody: Nobody, registry: Registry) -> ImageUser:  # noqa: F811 (the fixture)
    return ImageUser(nobody, registry)


def test_secrets_in_an_image_without_root(image_user: ImageUser) -> None:
    nobody = image_user.nobody
    value = canary()
    nobody.put(value)
    spec = image_user.app(IMAGE_CHECKS)
    spec["env"]["WANT"] = sha(value)
    work = nobody.base / "work"
    result = nobody.run(*image_user.command(nobody.spec("app.json", spec), str(work)))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"inside-the-image\n"
    nobody.assert_nothing_left(value)  # no overlay either
    # The image was unpacked without root (every file the user's) and was not written to.
    (unpacked,) = (image_user.images / "rootfs-rootless").iterdir()
    assert (unpacked / "etc" / "hello").stat().st_uid == nobody.user.pw_uid
    assert not (unpacked / "etc" / "new").exists()


def test_env_only_in_an_image_without_root(image_user: ImageUser) -> None:
    """No secret volume, so no user namespace made for one: runc's own tmpfs make it."""
    nobody = image_user.nobody
    value = canary()
    nobody.put(value)
    spec = image_user.app(
        'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = "$WANT" && id -u', volumes=False
    )
    spec["env"]["WANT"] = sha(value)
    result = nobody.run(*image_user.command(nobody.spec("app.json", spec), str(nobody.base / "w")))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"0\n"


def test_another_task_cannot_see_an_image_task(image_user: ImageUser) -> None:
    """A task of the same user, on the host's filesystem, while one runs in an image:
    no trace of its processes, its environment, its files or its tmpfs."""
    nobody = image_user.nobody
    value = canary()
    nobody.put(value)
    holder = image_user.app("touch started; exec sleep 60")
    one = nobody.base / "one"
    first = nobody.start(*image_user.command(nobody.spec("one.json", holder), str(one)))
    try:
        wait_until((one / "started").exists, timeout=60)
        look = (
            f"{SEEN_PROCESSES}; "
            "cat /proc/*/environ /proc/*/root/etc/db-password 2>/dev/null; "
            f"cat {one}/secrets/db {one}/.mesos-secrets/..data/1 2>/dev/null; "
            f"echo mounts of one: $(grep -h {one} /proc/*/mountinfo 2>/dev/null | grep -c .); "
            # The user's image store, which later tasks' images come from, is hidden.
            f"echo store: $(ls -A {image_user.images} | grep -c .) ; "
            f"for d in {image_user.images}/rootfs-rootless/*/bin; do echo x > $d/planted; done; "
            "true"
        )
        second = nobody.run(
            "--config", str(image_user.config), "run",
            nobody.spec("two.json", {"id": "/two", "cmd": look}), "--work-dir",
            str(nobody.base / "two"),
        )  # fmt: skip
        assert second.returncode == 0, second.stderr.decode()
        assert_saw_nothing(second.stdout, value)
        assert b"store: 0\n" in second.stdout
        assert not list(image_user.images.glob("rootfs-rootless/*/bin/planted"))
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert processes_holding(value) == []


def test_an_image_where_the_kernel_forbids_it(image_user: ImageUser) -> None:
    """No secret volume: runc's own tmpfs ask for the user namespace, and say it is
    forbidden, in one line; nothing is left."""
    nobody = image_user.nobody
    value = canary()
    nobody.put(value)
    spec = nobody.spec("app.json", image_user.app("true", volumes=False))
    result = forbidden(nobody, *image_user.command(spec, str(nobody.base / "w")))
    assert result.returncode == 1
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("mesos-secrets: error: cannot make runc's bundle in a user namespace: ")
    assert "this kernel forbids unprivileged user namespaces" in line
    nobody.assert_nothing_left(value)


def test_a_command_check_in_an_image_without_root(image_user: ImageUser) -> None:
    """A COMMAND health check enters the task's namespaces, its user namespace first:
    it runs in the image (its files, PID 1 the task's), as the task's root, with its
    secret."""
    nobody = image_user.nobody
    value = canary()
    nobody.put(value)
    inside = " && ".join(
        [
            "test -f /etc/hello",  # only in the image
            "grep -q sleep /proc/1/cmdline",  # runc's PID namespace
            'test "$(id -u)" = 0',
            'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = "$WANT"',
            "touch /mnt/mesos/sandbox/checked",
        ]
    )
    check = {
        "protocol": "COMMAND",
        "command": {"value": inside},
        "gracePeriodSeconds": 0,
        "intervalSeconds": 1,
        "delaySeconds": 0,
    }
    spec = image_user.app("sleep 3", volumes=False, healthChecks=[check])
    spec["env"]["WANT"] = sha(value)
    work = nobody.base / "w"
    result = nobody.run("-v", *image_user.command(nobody.spec("app.json", spec), str(work)))
    assert result.returncode == 0, result.stderr.decode()
    assert b"is healthy" in result.stderr
    assert (work / "checked").exists()


def test_a_killed_front_end_takes_an_image_task_with_it(image_user: ImageUser) -> None:
    """``run`` dies by SIGKILL: runc and the task in the image die with it, and the next
    ``run`` of the user removes what was left (the overlay's directories, one of them
    ``000``), without root."""
    nobody = image_user.nobody
    value = canary()
    nobody.put(value)
    spec = image_user.app("sleep 60 & touch started; sleep 60", volumes=False)
    work = nobody.base / "one"
    first = nobody.start(*image_user.command(nobody.spec("one.json", spec), str(work)))
    try:
        wait_until((work / "started").exists, timeout=60)
        assert len(processes_holding(value)) >= 2
    finally:
        first.kill()
        first.communicate()
    wait_until(lambda: not processes_holding(value), timeout=10)
    containers = nobody.runtime / "mesos-secrets" / "containers"
    # Left for the next front end, the overlay's closed work directory among it.
    (left,) = containers.glob("*/provisioner/work/work")
    assert left.stat().st_mode & 0o777 == 0
    again = image_user.app("true", volumes=False)
    result = nobody.run(*image_user.command(nobody.spec("two.json", again), str(work)))
    assert result.returncode == 0, result.stderr.decode()
    assert list(containers.iterdir()) == []


def test_runcs_bundle_is_a_tmpfs_where_the_user_is_root(nobody: Nobody) -> None:
    """Without root, runc's bundle (config.json: the task's environment) and state are
    tmpfs, made in a user namespace where the user is root; a namespace that maps the
    user as it is (one the volumes made for a task on the host) is refused."""

    def bundle() -> None:
        opened: list[int] = []
        try:
            fds = RuncLauncher._small_tmpfs(LaunchInfo(), opened, rootless=True)
            for fd in fds[:2]:
                assert linux.filesystem_type(f"/proc/self/fd/{fd}") == linux.TMPFS_MAGIC
            assert fds[2] is not None  # the namespace, for the init to join
        finally:
            for fd in opened:
                os.close(fd)

    assert as_nobody(bundle) == ""

    def own_namespace() -> None:
        made = private_tmpfs({"size": "1m"}, 0, source="test")
        opened: list[int] = []
        try:
            RuncLauncher._small_tmpfs(
                LaunchInfo(user_namespace=made.user_namespace), opened, rootless=True
            )
        finally:
            for fd in [*made.tmpfs, made.user_namespace, *opened]:
                os.close(fd)

    said = as_nobody(own_namespace)
    assert "does not map the user as its root" in said
