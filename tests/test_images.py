"""Private images: pulled with credentials from a secret, run by runc. A real registry."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets.images import ImageReference, ImageStore
from mesos_secrets.testing import canary, leaks

from .bao import Bao
from .conftest import requires_root
from .registry import HostileRegistry, Registry, build_busybox
from .residue import host_mount_changes, processes_holding
from .test_manifests import HOSTILE
from .test_run import Runner, sha, wait_for, wait_running, wait_until

pytestmark = requires_root

PASSWORD = canary()  # alice's registry password: the credential canary
OTHER = "bob-password"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "layout"
    build_busybox(path)
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, layout: Path) -> Iterator[Registry]:
    server = Registry(tmp_path_factory.mktemp("registry"), {"alice": PASSWORD, "bob": OTHER})
    server.push(layout, "latest", "private/busybox:latest", user="alice", password=PASSWORD)
    server.push(
        layout, "latest", "private/busybox-v2s2:latest", user="alice", password=PASSWORD, fmt="v2s2"
    )
    server.push(
        layout, "multi", "private/multi:latest", user="alice", password=PASSWORD, all_images=True
    )
    for tag in ("entrypoint", "cmd"):
        server.push(layout, tag, f"private/{tag}:latest", user="alice", password=PASSWORD)
    server.push(
        layout,
        "entrypoint",
        "private/entrypoint-v2s2:latest",
        user="alice",
        password=PASSWORD,
        fmt="v2s2",
    )
    yield server
    server.stop()


def docker_config(registry: Registry, user: str = "alice", password: str = PASSWORD) -> bytes:
    entry = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    return json.dumps({"auths": {registry.host: entry}}).encode()


class ImageRunner(Runner):
    """Runs apps in images: its own image store, the registry's CA trusted."""

    def __init__(
        self, tmp_path: Path, home: Path, registry: Registry, store: Path | None = None
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp_path, home)
        self.registry = registry
        self.image_store = store or tmp_path / "images"
        self.config = tmp_path / "config.toml"
        self.config.write_text(
            f'[images]\nstore = "{self.image_store}"\nca_bundle = "{registry.ca.ca.cert}"\n'
        )

    def app(
        self,
        image: str = "private/busybox:latest",
        *,
        cmd: str = "true",
        pull: bool = True,
        **more: Any,
    ) -> dict[str, Any]:
        docker: dict[str, Any] = {"image": f"{self.registry.host}/{image}"}
        secrets: dict[str, Any] = {"db": {"source": "/app/db@password"}}
        if pull:
            docker["pullConfig"] = {"secret": "pull"}
            secrets["pull"] = {"source": "/registry/pull@config"}
        return {
            "cmd": cmd,
            "secrets": secrets,
            "container": {"type": "MESOS", "docker": docker, **more},
        }

    def assert_no_residue(self) -> None:
        """And no partial download (runc's state lived in the container's namespace)."""
        super().assert_no_residue()
        tmp = self.image_store / "tmp"
        assert not tmp.exists() or list(tmp.iterdir()) == []


@pytest.fixture
def runner(tmp_path: Path, home: Path, registry: Registry) -> ImageRunner:
    r = ImageRunner(tmp_path, home, registry)
    r.store.put("/registry/pull", {"config": docker_config(registry)})
    r.store.put("/app/db", {"password": "db-password"})
    return r


CHECKS = "; ".join(
    [
        "set -e",
        f'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = {sha("db-password")}',
        f'test "$(sha256sum < /etc/db-password | cut -c1-64)" = {sha("db-password")}',
        f'test "$(sha256sum < secrets/db | cut -c1-64)" = {sha("db-password")}',
        'test "$(stat -c %a /etc/db-password)" = 400',
        'test "$(readlink secrets/db)" = ../.mesos-secrets/..data/1',
        'test "$(stat -L -c %a secrets/db)" = 400',
        "if chmod 600 /etc/db-password 2>/dev/null; then echo writable; exit 1; fi",
        'test "$(pwd)" = /mnt/mesos/sandbox',
        'test "$MESOS_SANDBOX" = /mnt/mesos/sandbox',
        "test -f /etc/hello",
        "test ! -e /etc/deleteme",  # the second layer's whiteout
        "echo inside-the-image",
    ]
)
VOLUMES = [
    {"containerPath": "/etc/db-password", "secret": "db"},
    {"containerPath": "secrets/db", "secret": "db"},
]


class TestRunInImage:
    @pytest.mark.parametrize(
        "image", ["private/busybox:latest", "private/busybox-v2s2:latest", "private/multi:latest"]
    )
    def test_env_and_files(self, runner: ImageRunner, image: str) -> None:
        """OCI, Docker schema 2 and an image index: the task runs in the image with its secrets."""
        spec = runner.app(image, cmd=CHECKS, volumes=VOLUMES) | {"env": {"DB": {"secret": "db"}}}
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        assert b"inside-the-image" in result.stdout
        runner.assert_no_residue()

    def test_as_another_user(self, runner: ImageRunner) -> None:
        spec = runner.app(
            cmd='test "$(id -u)" = 65534 && test "$(stat -c %u /etc/db-password)" = 65534 && cat /etc/db-password',
            volumes=VOLUMES[:1],
        )
        result = runner.run(spec | {"user": "nobody"})
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b"db-password"

    def test_pull_secret_from_openbao(
        self, runner: ImageRunner, bao: Bao, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same with every secret, the registry credentials too, in OpenBao."""
        client = bao.client()
        client.secrets.kv.v2.create_or_update_secret(
            path="registry/pull", secret={"config": docker_config(runner.registry).decode()}
        )
        client.secrets.kv.v2.create_or_update_secret(
            path="app/db", secret={"password": "db-password"}
        )
        monkeypatch.setenv("MESOS_SECRETS_RESOLVER", "vault")
        monkeypatch.setenv("VAULT_ADDR", bao.address)
        monkeypatch.setenv("VAULT_TOKEN", bao.root_token)
        spec = runner.app(cmd=CHECKS, volumes=VOLUMES) | {"env": {"DB": {"secret": "db"}}}
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        runner.assert_no_residue()

    def test_rotation_in_the_image(self, runner: ImageRunner) -> None:
        """In an image the relative volume's link resolves in the sandbox as on the host
        (``/mnt/mesos/sandbox/.mesos-secrets``): a refresh reaches the running task; the
        absolute one, bound into the image, keeps its value."""
        from mesos_secrets.config import load_config
        from mesos_secrets.isolator import Refreshed
        from mesos_secrets.marathon import parse_app
        from mesos_secrets.run import build_containerizer
        from resolvers.local import LocalResolver

        from .test_rotation_volumes import probe

        first, second = canary(), canary()
        runner.store.put("/app/db", {"password": first})
        spec = runner.app(cmd="touch started; exec sleep 600", volumes=VOLUMES)
        task = parse_app({"id": "/test/app", **spec} | {"user": "nobody"}).to_task_info()
        sandbox = runner.work
        sandbox.mkdir()
        with LocalResolver(home=runner.home) as resolver:
            containerizer = build_containerizer(
                load_config(runner.config), resolver, runner.runtime
            )
            with containerizer.launch(task, sandbox) as container:
                wait_for(sandbox / "started")
                assert probe(container, sandbox, "cat secrets/db /etc/db-password") == first * 2
                runner.store.put("/app/db", {"password": second})
                assert containerizer.isolators.refresh(container.id, ["/app/db"]) == Refreshed(
                    updated=("volume 'secrets/db' (secret '/app/db@password')",),
                    fixed=("volume '/etc/db-password' (secret '/app/db@password')",),
                )
                assert probe(container, sandbox, "cat secrets/db /etc/db-password") == (
                    second + first
                )
                assert probe(container, sandbox, "stat -L -c '%a %u' secrets/db") == "400 65534\n"
        runner.assert_no_residue()

    def test_second_launch_pulls_nothing(self, runner: ImageRunner) -> None:
        """The first launch downloads the blobs into the store; the second, none."""
        start = runner.registry.blob_gets()
        first = runner.run(runner.app())
        assert first.returncode == 0
        assert b"pulling " in first.stderr  # progress, in the log at -v
        before = runner.registry.blob_gets()
        assert before > start
        second = runner.run(runner.app())
        assert second.returncode == 0
        assert b"pulling " not in second.stderr
        assert runner.registry.blob_gets() == before

    def test_signal_reaches_the_task(self, runner: ImageRunner) -> None:
        """SIGTERM to run is passed to the task in its container, and all is cleaned up."""
        spec = runner.app(cmd="trap 'exit 3' TERM; touch started; while :; do sleep 0.05; done")
        process = runner.start(spec)
        wait_running(process)
        wait_for(runner.work / "started")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 3, err.decode()
        runner.assert_no_residue()

    def test_killed_run_takes_the_container_with_it(self, runner: ImageRunner) -> None:
        """run dies by SIGKILL: runc and the task in the image die with it (runc alone
        would leave the task running); the next run removes the cgroups left."""
        value = canary()
        runner.store.put("/app/db", {"password": value})
        spec = runner.app(cmd="sleep 60 & touch started; sleep 60") | {
            "env": {"DB": {"secret": "db"}}
        }
        process = runner.start(spec)
        wait_for(runner.work / "started")
        assert len(processes_holding(value)) >= 2
        process.kill()
        process.wait()
        wait_until(lambda: not processes_holding(value), timeout=10)
        process.communicate()
        assert runner.run(runner.app(cmd="true")).returncode == 0
        runner.assert_no_residue()

    def test_host_mount_table_never_changes(self, runner: ImageRunner) -> None:
        """The overlay, the secret tmpfs and runc's bundle (config.json holds the
        environment) are mounted in the container's namespace only: the host's mount
        table is the same all through a run, so no namespace made meanwhile copies them."""
        with host_mount_changes() as changed:
            spec = runner.app(cmd=CHECKS, volumes=VOLUMES) | {"env": {"DB": {"secret": "db"}}}
            result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        assert changed == []


def shown_args(*args: str) -> bytes:
    """What the `entrypoint` image's Entrypoint prints for these arguments."""
    return "".join(f"[{a}]\n" for a in args).encode()


class TestImageCommand:
    """The image's own Entrypoint and Cmd run, with its Env and WorkingDir, as Mesos'
    docker/runtime isolator merges them with the task's CommandInfo."""

    @staticmethod
    def app(runner: ImageRunner, image: str, **more: Any) -> dict[str, Any]:
        """An app in ``image`` without ``cmd`` (Marathon: no shell, and no value)."""
        spec = runner.app(image) | more
        del spec["cmd"]
        return spec

    @pytest.mark.parametrize(
        "image", ["private/entrypoint:latest", "private/entrypoint-v2s2:latest"]
    )
    def test_entrypoint_then_cmd(self, runner: ImageRunner, image: str) -> None:
        """Neither `cmd` nor `args`: the image's Entrypoint runs, with its Cmd after it."""
        result = runner.run(self.app(runner, image))
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == shown_args("entrypoint", "from-cmd", "two words")
        runner.assert_no_residue()

    def test_args_replace_cmd(self, runner: ImageRunner) -> None:
        """`args` only: they follow the Entrypoint, in place of the image's Cmd."""
        spec = self.app(runner, "private/entrypoint:latest", args=["a", "b c"])
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == shown_args("entrypoint", "a", "b c")

    def test_cmd_runs_with_a_shell_instead(self, runner: ImageRunner) -> None:
        """`cmd`: a shell runs it, and the image's Entrypoint and Cmd are not run; its
        Env and WorkingDir still apply."""
        spec = runner.app("private/entrypoint:latest", cmd='echo "shell:$#:$FROM_IMAGE"; pwd')
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b"shell:0:image\n/srv/app\n"

    def test_cmd_only_image(self, runner: ImageRunner) -> None:
        """No Entrypoint: Cmd[0] is the program, followed by the rest of Cmd, or by `args`."""
        alone = runner.run(self.app(runner, "private/cmd:latest"))
        assert alone.returncode == 0, alone.stderr.decode()
        assert alone.stdout == b"cmd-only default\n"
        with_args = runner.run(self.app(runner, "private/cmd:latest", args=["x", "y"]))
        assert with_args.returncode == 0, with_args.stderr.decode()
        assert with_args.stdout == b"x y\n"

    def test_pod_container_without_exec(self, runner: ImageRunner) -> None:
        """A pod's container without `exec` runs its image's Entrypoint and Cmd."""
        pod = {
            "id": "/test/pod",
            "secrets": {"pull": {"source": "/registry/pull@config"}},
            "containers": [
                {
                    "name": "main",
                    "resources": {"cpus": 0.1, "mem": 32},
                    "image": {
                        "kind": "DOCKER",
                        "id": f"{runner.registry.host}/private/entrypoint:latest",
                        "pullConfig": {"secret": "pull"},
                    },
                }
            ],
        }
        result = runner.run(pod)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == shown_args("entrypoint", "from-cmd", "two words")
        runner.assert_no_residue()

    def test_image_env_under_the_tasks(self, runner: ImageRunner) -> None:
        """The image's Env is there, under the task's own variables and secrets."""
        script = "; ".join(
            [
                "set -e",
                'echo "$FROM_IMAGE $SHARED $PATH"',
                f'test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = {sha("db-password")}',
            ]
        )
        spec = runner.app("private/entrypoint:latest", cmd=script) | {
            "env": {"SHARED": "task", "DB": {"secret": "db"}}
        }
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b"image task /bin\n"

    def test_working_dir(self, runner: ImageRunner) -> None:
        """The image's WorkingDir is the task's directory (made if the image lacks it);
        the sandbox stays at MESOS_SANDBOX."""
        spec = runner.app("private/entrypoint:latest", cmd='pwd; echo "$MESOS_SANDBOX"')
        result = runner.run(spec | {"user": "nobody"})
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b"/srv/app\n/mnt/mesos/sandbox\n"

    def test_image_user_is_not_taken(self, runner: ImageRunner) -> None:
        """The image's User is not taken, as under Mesos, which warns about it: the task
        runs as its own user (here, run's: root)."""
        result = runner.run_quiet(runner.app("private/entrypoint:latest", cmd="id -u"))
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b"0\n"
        image = f"{runner.registry.host}/private/entrypoint:latest"
        assert (
            f"image {image} names user 'nobody', which is not taken: the task runs as its own "
            "user (CommandInfo.user, Marathon's user), as under Mesos"
        ).encode() in result.stderr

    def test_image_without_a_command(self, runner: ImageRunner) -> None:
        """No `cmd`, no `args`, and an image with neither Entrypoint nor Cmd: one line
        saying so, naming the image; nothing is left."""
        image = f"{runner.registry.host}/private/busybox:latest"
        result = runner.run_quiet(self.app(runner, "private/busybox:latest"))
        assert result.returncode == 1
        assert result.stderr.decode() == (
            f"mesos-secrets: error: the task has no command to run: image '{image}' has "
            "neither Entrypoint nor Cmd, and CommandInfo has no value\n"
        )
        runner.assert_no_residue()


class TestCredentials:
    def test_credential_canary(self, runner: ImageRunner) -> None:
        """The registry password is on no disk, no command line during the pull, in no log."""
        seen: list[bytes] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                for pid in os.listdir("/proc"):
                    if pid.isdigit():
                        with contextlib.suppress(OSError):  # gone meanwhile
                            seen.append(Path(f"/proc/{pid}/cmdline").read_bytes())

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            result = runner.run(runner.app(cmd="true"))
        finally:
            done.set()
            watcher.join()
        assert result.returncode == 0, result.stderr.decode()
        encoded = base64.b64encode(f"alice:{PASSWORD}".encode())
        assert not any(leaks(PASSWORD, line) or leaks(encoded, line) for line in seen)
        assert not leaks(PASSWORD, result.stdout, result.stderr)
        for root in (runner.image_store, runner.runtime, runner.work, runner.home, runner.tmp):
            for path in root.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    data = path.read_bytes()
                    assert not leaks(PASSWORD, data), path
                    assert not leaks(encoded, data), path

    def test_wrong_credentials(self, runner: ImageRunner) -> None:
        runner.store.put(
            "/registry/pull", {"config": docker_config(runner.registry, "alice", "wrong")}
        )
        result = runner.run(runner.app())
        assert result.returncode == 1
        assert (
            f"registry {runner.registry.host} refused the credentials from secret '/registry/pull@config'".encode()
            in result.stderr
        )
        runner.assert_no_residue()

    def test_no_credentials(self, runner: ImageRunner) -> None:
        result = runner.run(runner.app(pull=False))
        assert result.returncode == 1
        assert b"requires credentials for image" in result.stderr
        runner.assert_no_residue()

    def test_malformed_config(self, runner: ImageRunner) -> None:
        runner.store.put("/registry/pull", {"config": b'{"auths": {"' + PASSWORD.encode()})
        result = runner.run(runner.app())
        assert result.returncode == 1
        assert (
            b"Failed to parse docker config (secret '/registry/pull@config'): "
            b"Invalid JSON: Unterminated string" in result.stderr
        )
        assert not leaks(PASSWORD, result.stderr)
        runner.assert_no_residue()

    @pytest.mark.parametrize(
        ("config", "message"),
        [
            pytest.param(
                b"[" * 50_000 + b"]" * 50_000,
                "Failed to parse docker config (secret '/registry/pull@config'): "
                "Invalid JSON: nested deeper than 100 levels",
                id="nested 50 000 deep",
            ),
            pytest.param(
                b'{"auths": {}, "n": ' + b"9" * 5000 + b"}",
                "Failed to parse docker config (secret '/registry/pull@config'): "
                "Invalid JSON: a number has more than 4300 digits",
                id="a 5 000-digit number",
            ),
            pytest.param(
                json.dumps({"auths": {"HOST": {"username": "alice", "password": "\udc80"}}}),
                "Failed to parse docker config (secret '/registry/pull@config'): "
                "Invalid JSON: a string holds an unpaired UTF-16 surrogate",
                id="a lone surrogate",
            ),
            pytest.param(
                json.dumps({"auths": {"HOST": {"auth": base64.b64encode(b"alice:\xff\xfe").decode()}}}),
                "registry HOST refused the credentials from secret '/registry/pull@config' "
                "for image 'HOST/private/busybox:latest' (401)",
                id="a password that is not UTF-8",
            ),
        ],
    )  # fmt: skip
    def test_hostile_pull_secrets(
        self, runner: ImageRunner, config: bytes | str, message: str
    ) -> None:
        """One line saying what is wrong with the pull secret, never a traceback."""
        host = runner.registry.host
        data = config if isinstance(config, bytes) else config.replace("HOST", host).encode()
        runner.store.put("/registry/pull", {"config": data})
        result = runner.run_quiet(runner.app())
        assert result.returncode == 1
        expected = message.replace("HOST", host)
        assert result.stderr.decode() == f"mesos-secrets: error: {expected}\n"
        runner.assert_no_residue()

    def test_missing_image(self, runner: ImageRunner) -> None:
        result = runner.run(runner.app("private/nothing-here:latest"))
        assert result.returncode == 1
        assert b"not found at registry" in result.stderr
        runner.assert_no_residue()

    def test_unreachable_registry(self, runner: ImageRunner) -> None:
        spec = runner.app()
        spec["container"]["docker"]["image"] = "127.0.0.1:1/private/busybox:latest"
        result = runner.run(spec)
        assert result.returncode == 1
        assert b"cannot reach registry 127.0.0.1:1" in result.stderr
        runner.assert_no_residue()

    def test_cached_private_image(self, tmp_path: Path, home: Path, registry: Registry) -> None:
        """A stored private image is served only to callers the registry accepts."""
        store = tmp_path / "shared-store"
        first = ImageRunner(tmp_path / "a", home, registry, store)
        first.store.put("/registry/pull", {"config": docker_config(registry)})
        assert first.run(first.app()).returncode == 0
        assert (store / "rootfs").exists()

        anonymous = ImageRunner(tmp_path / "b", home, registry, store)
        result = anonymous.run(anonymous.app(pull=False))
        assert result.returncode == 1
        assert b"requires credentials" in result.stderr

        wrong = ImageRunner(tmp_path / "c", home, registry, store)
        wrong.store.put("/registry/pull", {"config": docker_config(registry, "alice", "nope")})
        result = wrong.run(wrong.app())
        assert result.returncode == 1
        assert b"refused the credentials" in result.stderr

        before = registry.blob_gets()
        other_user = ImageRunner(tmp_path / "d", home, registry, store)
        other_user.store.put("/registry/pull", {"config": docker_config(registry, "bob", OTHER)})
        assert other_user.run(other_user.app()).returncode == 0
        assert registry.blob_gets() == before  # served from the store, after bob's own check


def test_concurrent_callers_share_nothing(tmp_path: Path, home: Path, registry: Registry) -> None:
    """Two launches of one private image at once, one caller without valid credentials:
    it is refused, though the other is pulling the very same image into the same store."""
    store = tmp_path / "shared-store"
    good = ImageRunner(tmp_path / "good", home, registry, store)
    good.store.put("/registry/pull", {"config": docker_config(registry)})
    bad = ImageRunner(tmp_path / "bad", home, registry, store)
    bad.store.put("/registry/guess", {"config": docker_config(registry, "alice", "guess")})
    bad_app = bad.app()
    bad_app["secrets"]["pull"]["source"] = "/registry/guess@config"
    first, second = good.start(good.app()), bad.start(bad_app)
    _, good_err = first.communicate(timeout=120)
    _, bad_err = second.communicate(timeout=120)
    assert first.returncode == 0, good_err.decode()
    assert second.returncode == 1
    assert b"refused the credentials" in bad_err


def manifest_of(layout: Path, tag: str = "latest") -> tuple[bytes, dict[str, Any]]:
    """The bytes and the JSON of the manifest tagged ``tag`` in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    digest = next(
        m["digest"]
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == tag
    )
    content = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    return content, json.loads(content)


def empty_tar() -> bytes:
    out = io.BytesIO()
    tarfile.open(fileobj=out, mode="w").close()
    return out.getvalue()


def blob_digests(manifest: dict[str, Any]) -> list[str]:
    return [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


@pytest.fixture(scope="module")
def attacker(
    tmp_path_factory: pytest.TempPathFactory, layout: Path, registry: Registry
) -> Iterator[Registry]:
    """An anonymous registry (trusted by the same CA bundle) whose manifests name the
    private image's config and layers, which it does not have: the images were pushed
    there, then their blobs removed, as if the attacker had only learnt the digests."""
    server = Registry(tmp_path_factory.mktemp("attacker"), {}, ca=registry.ca)
    server.push(layout, "latest", "evil/busybox:latest")
    server.push(layout, "latest", "evil/busybox-v2s2:latest", fmt="v2s2")
    _, manifest = manifest_of(layout)
    for digest in blob_digests(manifest):
        shutil.rmtree(server.blob_data(digest).parent)
    yield server
    server.stop()


@pytest.fixture
def hostile(registry: Registry) -> Iterator[HostileRegistry]:
    server = HostileRegistry(registry.ca)
    yield server
    server.stop()


class TestPrivateContentInTheStore:
    """Blobs pulled with credentials are served to a pull of another registry or
    repository only after that registry authorised them (issue 11, item 1)."""

    @staticmethod
    def victim(tmp_path: Path, home: Path, registry: Registry, store: Path) -> None:
        """alice pulls her private image into the shared store."""
        victim = ImageRunner(tmp_path / "victim", home, registry, store)
        victim.store.put("/registry/pull", {"config": docker_config(registry)})
        victim.store.put("/app/db", {"password": "db-password"})
        result = victim.run(victim.app(cmd="true"))
        assert result.returncode == 0, result.stderr.decode()

    @pytest.mark.parametrize(
        "image",
        [
            # The very manifest of the private image: its unpacked root filesystem is stored.
            pytest.param("evil/busybox:latest", id="same-manifest"),
            # Another manifest naming the same config and layers: its blobs are stored.
            pytest.param("evil/busybox-v2s2:latest", id="other-manifest"),
        ],
    )
    def test_anonymous_registry_naming_private_digests(
        self,
        tmp_path: Path,
        home: Path,
        registry: Registry,
        attacker: Registry,
        image: str,
        layout: Path,
    ) -> None:
        store = tmp_path / "shared-store"
        self.victim(tmp_path, home, registry, store)
        thief = ImageRunner(tmp_path / "thief", home, attacker, store)
        before = attacker.blob_gets()
        result = thief.run(thief.app(image, pull=False, cmd="cat /etc/hello"))
        assert result.returncode == 1, result.stdout.decode()
        assert b"hello from the second layer" not in result.stdout
        assert attacker.blob_gets() > before  # it had to serve the blob itself, and could not
        config = manifest_of(layout)[1]["config"]["digest"]
        assert (
            f"mesos-secrets: error: registry {attacker.host} has no config ({config}) "
            f"of image '{attacker.host}/{image}' (404)"
        ).encode() in result.stderr, result.stderr.decode()
        thief.assert_no_residue()

    def test_registry_that_claims_every_blob(
        self, tmp_path: Path, home: Path, registry: Registry, hostile: HostileRegistry, layout: Path
    ) -> None:
        """A registry's say-so (HEAD 200) is no proof for blobs another registry gave us:
        the bytes must come from it, and match their digest."""
        store = tmp_path / "shared-store"
        self.victim(tmp_path, home, registry, store)
        content, manifest = manifest_of(layout)
        hostile.serve("same", content, "application/vnd.oci.image.manifest.v1+json")
        hostile.serve("other", {**manifest, "annotations": {"a": "b"}})
        thief = ImageRunner(tmp_path / "thief", home, registry, store)  # trusts the same CA
        for tag in ("same", "other"):
            spec = thief.app(pull=False, cmd="cat /etc/hello")
            spec["container"]["docker"]["image"] = f"{hostile.host}/evil/x:{tag}"
            result = thief.run(spec)
            assert result.returncode == 1, result.stdout.decode()
            assert b"hello from the second layer" not in result.stdout
            assert (
                f"registry {hostile.host} has no config ({manifest['config']['digest']}) "
                f"of image '{hostile.host}/evil/x:{tag}' (404)"
            ).encode() in result.stderr, result.stderr.decode()
        assert hostile.blob_requests("GET")
        thief.assert_no_residue()

    def test_same_registry_refusing_the_blobs_in_this_repository(
        self, tmp_path: Path, home: Path, registry: Registry, hostile: HostileRegistry, layout: Path
    ) -> None:
        """A registry served the blobs in one repository and refuses them (HEAD 404) in
        another whose manifest names them: the store does not stand in for it."""
        content, manifest = manifest_of(layout)
        for blob in [manifest["config"], *manifest["layers"]]:
            digest = blob["digest"]
            hostile.blobs[digest] = (
                layout / "blobs" / "sha256" / digest.split(":")[1]
            ).read_bytes()
        hostile.serve("latest", content, "application/vnd.oci.image.manifest.v1+json")
        runner = ImageRunner(tmp_path / "runner", home, registry, tmp_path / "shared-store")
        runner.store.put("/app/db", {"password": "db-password"})
        spec = runner.app(pull=False, cmd="cat /etc/hello")
        spec["container"]["docker"]["image"] = f"{hostile.host}/team-a/x:latest"
        result = runner.run(spec)
        assert result.returncode == 0, result.stderr.decode()
        hostile.blobs.clear()  # held in team-a only, from now on
        hostile.claims_every_blob = False
        spec["container"]["docker"]["image"] = f"{hostile.host}/team-b/x:latest"
        result = runner.run(spec)
        assert result.returncode == 1, result.stdout.decode()
        assert b"hello from the second layer" not in result.stdout
        assert any("/team-b/x/blobs/" in path for path in hostile.blob_requests("HEAD")), (
            result.stderr.decode(),
            hostile.requests,
        )
        runner.assert_no_residue()

    def test_manifest_read_one_way_here_and_another_by_umoci(
        self, tmp_path: Path, home: Path, registry: Registry, hostile: HostileRegistry, layout: Path
    ) -> None:
        """Go's JSON matches keys case-insensitively and keeps the last: a manifest whose
        `layers` name the attacker's own blob and whose `Layers` name the private layer
        must not have the blobs of one checked and those of the other unpacked."""
        store = tmp_path / "shared-store"
        self.victim(tmp_path, home, registry, store)
        _, private = manifest_of(layout)
        layer = empty_tar()
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(layer)}"]},
            }
        ).encode()
        hostile.blobs = {"sha256:" + hashlib.sha256(b).hexdigest(): b for b in (config, layer)}
        own = [
            {"mediaType": kind, "digest": "sha256:" + hashlib.sha256(b).hexdigest(), "size": len(b)}
            for kind, b in (
                ("application/vnd.oci.image.config.v1+json", config),
                ("application/vnd.oci.image.layer.v1.tar", layer),
            )
        ]
        text = json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
        )[:-1] + (
            f', "config": {json.dumps(own[0])}, "layers": {json.dumps(own[1:])}'
            f', "Config": {json.dumps(private["config"])}, "Layers": {json.dumps(private["layers"])}}}'
        )
        hostile.serve("mixed", text.encode(), "application/vnd.oci.image.manifest.v1+json")
        thief = ImageRunner(tmp_path / "thief", home, registry, store)
        spec = thief.app(pull=False, cmd="cat /etc/hello")
        spec["container"]["docker"]["image"] = f"{hostile.host}/evil/x:mixed"
        result = thief.run(spec)
        assert b"hello from the second layer" not in result.stdout
        assert result.returncode != 0  # the attacker's own, empty, image has no `cat`
        thief.assert_no_residue()

    def test_root_filesystem_unpacked_by_an_earlier_version(
        self, tmp_path: Path, home: Path, registry: Registry, hostile: HostileRegistry
    ) -> None:
        """Earlier versions unpacked an OCI manifest's own bytes and named the root
        filesystem by their digest: one the attacker's manifest made umoci unpack from
        the private layers is never used."""
        store = tmp_path / "shared-store"
        self.victim(tmp_path, home, registry, store)
        layer = empty_tar()
        hostile.blobs = {"sha256:" + sha(layer): layer}
        own = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": len(layer)}
        digest = hostile.serve(
            "x",
            {
                "schemaVersion": 2,
                "config": {**own, "digest": "sha256:" + sha(layer)},
                "layers": [{**own, "digest": "sha256:" + sha(layer)}],
            },
        )
        (unpacked,) = (store / "rootfs").iterdir()  # the private image's
        shutil.copytree(unpacked, store / "rootfs" / digest.split(":")[1], symlinks=True)
        thief = ImageRunner(tmp_path / "thief", home, registry, store)  # trusts the same CA
        spec = thief.app(pull=False, cmd="cat /etc/hello")
        spec["container"]["docker"]["image"] = f"{hostile.host}/evil/x:x"
        result = thief.run(spec)
        assert b"hello from the second layer" not in result.stdout
        assert result.returncode != 0
        thief.assert_no_residue()

    def test_store_written_before_sources_were_kept(
        self, tmp_path: Path, home: Path, registry: Registry, attacker: Registry
    ) -> None:
        """A store an earlier version filled: the attacker's record of its image naming the
        private blobs (as that version wrote it) gets it nothing, and blobs without
        sources are downloaded again for their own registry's callers."""
        store = tmp_path / "shared-store"
        self.victim(tmp_path, home, registry, store)
        images = ImageStore(store)
        private = images.record(ImageReference.parse(f"{registry.host}/private/busybox:latest"))
        assert private is not None
        images.save_record(
            ImageReference.parse(f"{attacker.host}/evil/busybox:latest"),
            {key: value for key, value in private.items() if key != "image"} | {"private": False},
        )
        shutil.rmtree(store / "sources")
        thief = ImageRunner(tmp_path / "thief", home, attacker, store)
        result = thief.run(thief.app("evil/busybox:latest", pull=False, cmd="cat /etc/hello"))
        assert result.returncode == 1, result.stdout.decode()
        assert b"hello from the second layer" not in result.stdout

        before = registry.blob_gets()
        bob = ImageRunner(tmp_path / "bob", home, registry, store)
        bob.store.put("/registry/pull", {"config": docker_config(registry, "bob", OTHER)})
        result = bob.run(bob.app(cmd="cat /etc/hello"))
        assert result.returncode == 0, result.stderr.decode()
        assert registry.blob_gets() > before

    def test_other_repository_of_the_same_registry(
        self, tmp_path: Path, home: Path, registry: Registry
    ) -> None:
        """The same blobs in another repository the caller may read: the registry that
        holds them says so (a HEAD per blob, with the caller's credentials), and nothing
        is downloaded again."""
        store = tmp_path / "shared-store"
        self.victim(tmp_path, home, registry, store)
        runner = ImageRunner(tmp_path / "again", home, registry, store)
        runner.store.put("/registry/pull", {"config": docker_config(registry, "bob", OTHER)})
        gets, heads = registry.blob_gets(), registry.blob_requests("HEAD")
        result = runner.run(runner.app("private/busybox-v2s2:latest", cmd="cat /etc/hello"))
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b"hello from the second layer\n"
        assert registry.blob_gets() == gets
        assert registry.blob_requests("HEAD") > heads

    def test_public_copy_on_another_registry(
        self, tmp_path: Path, home: Path, registry: Registry, layout: Path
    ) -> None:
        """The same image on another registry that does have it: downloaded from there
        (checked against the digests), and it runs."""
        store = tmp_path / "shared-store"
        self.victim(tmp_path, home, registry, store)
        mirror = Registry(tmp_path / "mirror", {}, ca=registry.ca)
        try:
            mirror.push(layout, "latest", "public/busybox:latest")
            runner = ImageRunner(tmp_path / "public", home, mirror, store)
            result = runner.run(
                runner.app("public/busybox:latest", pull=False, cmd="cat /etc/hello")
            )
            assert result.returncode == 0, result.stderr.decode()
            assert result.stdout == b"hello from the second layer\n"
            assert mirror.blob_gets() == len(blob_digests(manifest_of(layout)[1]))
        finally:
            mirror.stop()


BROKEN = {
    "no config",
    "layer without digest",
    "size huge",
    "layers a string",
    "index entry without digest",
    "nested 100 000 deep",
    "a 5 000-digit number",
    "kind unknown",
}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(document, message, id=name)
        for name, document, message in HOSTILE
        if name in BROKEN
    ]
    + [
        pytest.param(b"{}" + b" " * (4 << 20), "the manifest of image 'IMAGE' is larger than 4 MiB: refused", id="5 MiB"),
        pytest.param(None, "registry HOST gave an answer that does not follow the registry API, for manifest of image 'IMAGE' (KeyError)", id="401 without a challenge"),
    ],
)  # fmt: skip
def test_hostile_registry_answers(
    tmp_path: Path,
    home: Path,
    hostile: HostileRegistry,
    registry: Registry,
    answer: bytes | dict[str, Any] | None,
    message: str,
) -> None:
    """A registry's broken or hostile answers end a run with one line naming what is
    wrong and where, never a traceback (issue 11, item 5)."""
    runner = ImageRunner(tmp_path, home, registry)  # trusts the hostile registry's CA too
    runner.store.put("/app/db", {"password": "db-password"})
    image = f"{hostile.host}/evil/x:1"
    if answer is None:
        hostile.unchallenged = True
    else:
        hostile.serve("1", answer if isinstance(answer, bytes) else json.dumps(answer).encode())
    spec = runner.app(pull=False)
    spec["container"]["docker"]["image"] = image
    result = runner.run_quiet(spec)
    expected = (
        message.replace("reg.example/x:1", image)
        .replace("IMAGE", image)
        .replace("HOST", hostile.host)
    )
    assert result.returncode == 1
    assert result.stderr.decode() == f"mesos-secrets: error: {expected}\n"
    runner.assert_no_residue()


def test_hostile_image_config(
    tmp_path: Path, home: Path, hostile: HostileRegistry, registry: Registry, layout: Path
) -> None:
    """An image config with a field of the wrong type ends the run with one line naming
    the image and the field; it is read even when the task has a command of its own."""
    _, manifest = manifest_of(layout)
    for layer in manifest["layers"]:
        hostile.blobs[layer["digest"]] = (
            layout / "blobs" / "sha256" / layer["digest"].split(":")[1]
        ).read_bytes()
    config = json.dumps({"config": {"Entrypoint": "/bin/sh -c 'echo hi'"}}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    hostile.blobs[digest] = config
    hostile.serve(
        "1", {**manifest, "config": {**manifest["config"], "digest": digest, "size": len(config)}}
    )
    runner = ImageRunner(tmp_path, home, registry)  # trusts the hostile registry's CA too
    runner.store.put("/app/db", {"password": "db-password"})
    image = f"{hostile.host}/evil/x:1"
    spec = runner.app(pull=False, cmd="true")
    spec["container"]["docker"]["image"] = image
    result = runner.run_quiet(spec)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"mesos-secrets: error: image '{image}': config /config/Entrypoint: must be an array "
        "of strings\n"
    )
    runner.assert_no_residue()


def test_corrupted_blob(tmp_path: Path, home: Path, layout: Path) -> None:
    """A blob whose bytes do not match its digest is refused and not kept."""
    server = Registry(tmp_path / "registry", {"alice": PASSWORD})
    try:
        server.push(layout, "latest", "private/busybox:latest", user="alice", password=PASSWORD)
        index = json.loads((layout / "index.json").read_text())
        manifest_digest = next(
            m["digest"]
            for m in index["manifests"]
            if m["annotations"]["org.opencontainers.image.ref.name"] == "latest"
        )
        manifest = json.loads(
            (layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text()
        )
        layer = manifest["layers"][-1]["digest"]
        data = server.blob_data(layer)
        data.write_bytes(data.read_bytes()[:-10] + b"0123456789")
        runner = ImageRunner(tmp_path, home, server)
        runner.store.put("/registry/pull", {"config": docker_config(server)})
        runner.store.put("/app/db", {"password": "x"})
        result = runner.run(runner.app())
        assert result.returncode == 1
        assert f"({layer}) of image".encode() in result.stderr
        assert b"does not match its digest" in result.stderr
        assert not (runner.image_store / "oci" / "blobs" / "sha256" / layer.split(":")[1]).exists()
        runner.assert_no_residue()
    finally:
        server.stop()


def test_partial_unpack_of_a_dead_front_end_is_removed(runner: ImageRunner) -> None:
    """What a provisioner that died left in the store's tmp/ goes at the next recover."""
    (runner.image_store / "tmp" / "unpack-dead" / "rootfs" / "etc").mkdir(parents=True)
    (runner.image_store / "tmp" / "blob-dead").write_bytes(b"partial")
    result = runner.run(runner.app(cmd="true"))
    assert result.returncode == 0, result.stderr.decode()
    assert b"removed 2 partial download(s) from the image store" in result.stderr
    runner.assert_no_residue()


def test_an_unpack_dies_with_the_front_end_that_started_it(tmp_path: Path) -> None:
    """A front end killed while umoci unpacks (SIGKILL: nothing of it runs after) must
    not leave umoci writing into the store by itself, where the next front end's
    recover would be removing the same directory."""
    fake = tmp_path / "bin" / "umoci"
    fake.parent.mkdir()
    started = tmp_path / "umoci.pid"
    fake.write_text(f"#!/bin/sh\necho $$ > {started}\nexec sleep 60\n")
    fake.chmod(0o755)
    script = (
        "import sys; from pathlib import Path; from mesos_secrets.images import ImageStore; "
        f"ImageStore(Path({str(tmp_path / 'store')!r})).rootfs('sha256:' + '0' * 64, 'ref')"
    )
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    front_end = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        wait_until(lambda: started.exists() and started.read_text().strip(), 20)
        unpacker = int(started.read_text())
        front_end.kill()
        front_end.wait()
        wait_until(lambda: not _alive(unpacker), 5)
    finally:
        if front_end.poll() is None:
            front_end.kill()
            front_end.wait()
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(started.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_recover_goes_on_past_what_it_cannot_remove_yet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial download that cannot be removed yet (still written to, busy) is left
    for a later recover, with a warning; the rest goes, and nothing fails."""
    from mesos_secrets import images

    store = ImageStore(tmp_path / "store")
    (store.tmp / "unpack-busy" / "rootfs").mkdir(parents=True)
    (store.tmp / "blob-dead").write_bytes(b"partial")
    remove_tree = images.nofollow.remove_tree

    def busy(path: Path, *args: Any, **kwargs: Any) -> None:
        if Path(path).name == "unpack-busy":
            raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY))
        remove_tree(path, *args, **kwargs)

    monkeypatch.setattr(images.nofollow, "remove_tree", busy)
    store.recover()
    assert sorted(os.listdir(store.tmp)) == ["unpack-busy"]
    assert "cannot remove the partial download" in caplog.text
    assert "Directory not empty" in caplog.text
    monkeypatch.setattr(images.nofollow, "remove_tree", remove_tree)
    store.recover()
    assert os.listdir(store.tmp) == []


def test_bearer_token_registry(tmp_path: Path, home: Path, layout: Path) -> None:
    """A registry with token authentication: credentials buy a Bearer token, wrong ones nothing."""
    server = Registry(tmp_path / "registry", {"alice": PASSWORD}, token=True)
    try:
        server.push(layout, "latest", "private/busybox:latest", user="alice", password=PASSWORD)
        assert server.token_server is not None
        runner = ImageRunner(tmp_path, home, server)
        runner.store.put("/registry/pull", {"config": docker_config(server)})
        runner.store.put("/app/db", {"password": "db-password"})
        result = runner.run(runner.app(cmd="test -f /etc/hello"))
        assert result.returncode == 0, result.stderr.decode()
        assert any(
            "scope=repository%3Aprivate%2Fbusybox%3Apull" in r for r in server.token_server.requests
        )
        runner.store.put("/registry/pull", {"config": docker_config(server, "alice", "wrong")})
        refused = runner.run(runner.app(cmd="true"))
        assert refused.returncode == 1
        assert b"refused the credentials" in refused.stderr
        runner.assert_no_residue()
    finally:
        server.stop()
