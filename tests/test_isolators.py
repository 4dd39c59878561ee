"""The isolators and the chain, against a real store and real tmpfs mounts."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

from isolators.environment_secret import EnvironmentSecretIsolator
from isolators.volume_secret import SOURCE, VolumeSecretIsolator, parse_size
from mesos_secrets import (
    CommandInfo,
    ConfigError,
    ContainerInfo,
    Environment,
    IsolatorError,
    PluginError,
    Reference,
    ResolveContext,
    Secret,
    SecretBytes,
    SecretResolver,
    Variable,
    Volume,
)
from mesos_secrets.containerizer import Containerizer
from mesos_secrets.containerizer.launcher import PosixLauncher, resolve_user
from mesos_secrets.isolator import (
    ContainerConfig,
    Filesystem,
    Isolator,
    IsolatorChain,
    LaunchInfo,
    Mount,
    Refreshed,
    TaskUser,
    create_isolators,
    parse_isolation,
)
from mesos_secrets.mesos import ContainerType, VolumeMode
from mesos_secrets.nofollow import identity
from mesos_secrets.testing import canary
from resolvers.local import LocalResolver

from .conftest import mounts_under, requires_root


@pytest.fixture
def resolver(tmp_path: Path) -> Iterator[LocalResolver]:
    with LocalResolver(home=tmp_path / "store") as r:
        r.store.put("/db", {"password": "password", "user": "app"})
        r.store.put("/nul", {"v": b"a\0b"})
        r.store.put("/big", {"v": b"x" * (2 << 20)})
        yield r


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    path = tmp_path / "sandbox"
    path.mkdir()
    return path


def config_for(
    sandbox: Path,
    *,
    env: tuple[Variable, ...] = (),
    volumes: tuple[Volume, ...] = (),
    kind: ContainerType = ContainerType.MESOS,
    user: TaskUser | None = None,
    container_id: str = "c1",
    optional: frozenset[str] = frozenset(),
) -> ContainerConfig:
    return ContainerConfig(
        container_id=container_id,
        sandbox=sandbox,
        user=user or resolve_user(None),
        command=CommandInfo(value="true", environment=Environment(variables=env)),
        container=ContainerInfo(type=kind, volumes=volumes) if volumes else None,
        context=ResolveContext(task_id="t"),
        optional=optional,
    )


def read_on(tmpfs: Filesystem, name: str) -> bytes:
    """A file of the detached tmpfs (``..data/0``, ``..1/2``), read through its fd."""
    fd = os.open(name, os.O_RDONLY, dir_fd=tmpfs.fd)
    with os.fdopen(fd, "rb") as source:
        return source.read()


def names_on(tmpfs: int, directory: str = ".") -> list[str]:
    """What a directory of the tmpfs holds (its fd is an O_PATH one: opened anew)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=tmpfs)
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def on_tmpfs(mount: Mount, tmpfs: Filesystem) -> str:
    """The name on the tmpfs of a single file bound from it (``..1/0``)."""
    return str(Path(mount.source).relative_to(tmpfs.at))


def env_secret(name: str, ref: str, key: str | None = None) -> Variable:
    return Variable.for_secret(name, Secret.for_reference(ref, key))


def file_secret(path: str, ref: str = "/db", key: str | None = "password") -> Volume:
    return Volume.for_secret(path, Secret.for_reference(ref, key))


class Slow(SecretResolver):
    """Each resolution takes 0.2 s and records how many ran at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()

    def resolve_reference(
        self, reference: Reference, context: ResolveContext | None = None
    ) -> SecretBytes:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.2)
        with self.lock:
            self.running -= 1
        return SecretBytes(reference.name)


class TestEnvironmentSecret:
    def test_resolves_in_order(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        """Every SECRET variable is resolved; VALUE variables are left to the launcher."""
        iso = EnvironmentSecretIsolator(resolver, runtime_dir)
        env = (
            env_secret("B", "/db", "user"),
            Variable.for_value("X", "1"),
            env_secret("A", "/db", "password"),
        )
        info = iso.prepare(config_for(sandbox, env=env))
        assert info is not None
        assert list(info.environment) == ["B", "A"]
        assert info.environment["A"].reveal() == b"password"

    def test_nothing_to_do(self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path) -> None:
        assert EnvironmentSecretIsolator(resolver, runtime_dir).prepare(config_for(sandbox)) is None

    def test_concurrent(self, sandbox: Path, runtime_dir: Path) -> None:
        """One task's secrets are fetched at the same time, not one after another."""
        slow = Slow()
        env = tuple(env_secret(f"V{i}", f"/s{i}") for i in range(4))
        info = EnvironmentSecretIsolator(slow, runtime_dir).prepare(config_for(sandbox, env=env))
        assert info is not None
        assert slow.peak == 4
        assert [v.reveal() for v in info.environment.values()] == [b"/s0", b"/s1", b"/s2", b"/s3"]

    def test_failure_names_the_variable(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        env = (env_secret("OK", "/db", "user"), env_secret("MISSING", "/nope"))
        with pytest.raises(
            IsolatorError, match=r"environment variable 'MISSING' \(secret '/nope'\).*not found"
        ):
            EnvironmentSecretIsolator(resolver, runtime_dir).prepare(config_for(sandbox, env=env))

    def test_optional_secret_left_unset(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        """An optional secret that cannot be resolved leaves its variable unset; one
        that is not optional still fails the prepare."""
        env = (env_secret("OK", "/db", "user"), env_secret("LATER", "/nope"))
        iso = EnvironmentSecretIsolator(resolver, runtime_dir)
        for optional in ({"/nope"}, {"*"}):
            info = iso.prepare(config_for(sandbox, env=env, optional=frozenset(optional)))
            assert info is not None
            assert list(info.environment) == ["OK"]
        with pytest.raises(IsolatorError, match=r"'LATER' \(secret '/nope'\).*not found"):
            iso.prepare(config_for(sandbox, env=env, optional=frozenset({"/db"})))

    def test_refresh_reports_the_variables_as_fixed(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        """A running process's environment cannot change: the variables holding a secret
        named are fixed; a container it knows nothing of, or forgot, is None."""
        resolver.store.put("/other", {"v": "x"})
        iso = EnvironmentSecretIsolator(resolver, runtime_dir)
        env = (
            env_secret("U", "/db", "user"),
            env_secret("P", "/db", "password"),
            env_secret("O", "/other"),
        )
        assert iso.prepare(config_for(sandbox, env=env)) is not None
        assert iso.refresh("c1", ["/db"]) == Refreshed(
            fixed=(
                "environment variable 'U' (secret '/db@user')",
                "environment variable 'P' (secret '/db@password')",
            )
        )
        assert iso.refresh("c1", ["/nope"]) is None
        assert iso.refresh("c2", ["/db"]) is None
        iso.cleanup("c1")
        assert iso.refresh("c1", ["/db"]) is None

    def test_null_bytes_in_resolved_value(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        """Stricter than Mesos: a resolved value with NUL cannot go into the environment."""
        with pytest.raises(IsolatorError, match="'BIN'.*containing null bytes"):
            EnvironmentSecretIsolator(resolver, runtime_dir).prepare(
                config_for(sandbox, env=(env_secret("BIN", "/nul"),))
            )


@requires_root
class TestVolumeSecret:
    def prepare(
        self,
        resolver: SecretResolver,
        runtime_dir: Path,
        config: ContainerConfig,
        **options: object,
    ) -> LaunchInfo:
        info = VolumeSecretIsolator.from_options(resolver, runtime_dir, **options).prepare(config)
        assert info is not None
        return info

    def test_tmpfs_file(self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path) -> None:
        """A secret file on a bounded nosuid/nodev/noexec tmpfs of its own, 0400, task-owned,
        in generation ``..1`` behind ``..data``; the whole tmpfs is bound read-only at
        ``.mesos-secrets`` and the container path is a relative link into it."""
        nobody = resolve_user("nobody")
        iso = VolumeSecretIsolator(resolver, runtime_dir)
        info = iso.prepare(
            config_for(sandbox, volumes=(file_secret("some/my_secret"),), user=nobody)
        )
        assert info is not None
        (mount,) = info.mounts
        (tmpfs,) = info.filesystems
        assert mount.source == tmpfs.at  # the whole tmpfs, where it will be attached
        assert mount.read_only
        assert mount.target == sandbox / ".mesos-secrets"
        assert mount.base == sandbox
        assert mount.inode == identity(mount.target.lstat())
        assert list(mount.target.iterdir()) == []  # the mount point on the host side
        link = sandbox / "some" / "my_secret"
        assert os.readlink(link) == "../.mesos-secrets/..data/0"
        assert os.readlink("..data", dir_fd=tmpfs.fd) == "..1"
        assert names_on(tmpfs.fd) == ["..1", "..data"]
        assert read_on(tmpfs, "..data/0") == b"password"
        source = os.stat("..1/0", dir_fd=tmpfs.fd)
        assert stat.S_IMODE(source.st_mode) == 0o400
        assert (source.st_uid, source.st_gid) == (nobody.uid, nobody.gid)
        for directory in (os.fstat(tmpfs.fd), os.stat("..1", dir_fd=tmpfs.fd)):
            assert stat.S_IMODE(directory.st_mode) == 0o755
            assert (directory.st_uid, directory.st_gid) == (0, 0)
        fs = os.fstatvfs(tmpfs.fd)
        assert fs.f_flag & (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC) == (
            os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC
        )
        assert fs.f_blocks * fs.f_frsize == 2 << 20  # twice the cap: room for a new generation
        assert (sandbox / "some").stat().st_uid == nobody.uid
        assert link.lstat().st_uid == nobody.uid
        iso.cleanup("c1")
        assert list(sandbox.iterdir()) == []
        assert not (runtime_dir / "containers" / "c1" / "volume_secret").exists()
        iso.cleanup("c1")  # idempotent

    def test_never_mounted_on_the_host(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        """The tmpfs is detached: in no mount table; our fd stays (for refreshes) until
        cleanup, not a moment longer."""
        iso = VolumeSecretIsolator(resolver, runtime_dir)
        info = iso.prepare(config_for(sandbox, volumes=(file_secret("a"),)))
        assert info is not None
        fd = info.filesystems[0].fd
        assert os.fstat(fd)  # alive, and mounted nowhere
        assert not mounts_under(runtime_dir)
        assert not mounts_under(sandbox)
        # No mount of ours: its source field is exactly SOURCE (the node agent's kept
        # cache, "mesos-secrets-agent", is another thing that may be mounted here).
        sources = [line.split(" - ")[1].split()[1] for line in _mountinfo()]
        assert SOURCE not in sources
        iso.isolate("c1", os.getpid())
        assert os.fstat(fd)  # the task runs: kept
        iso.cleanup("c1")
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)

    def test_rw_volume_is_writable_by_owner(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        volume = Volume.for_secret("rw", Secret.for_reference("/db", "password"), VolumeMode.RW)
        iso = VolumeSecretIsolator(resolver, runtime_dir)
        info = iso.prepare(config_for(sandbox, volumes=(volume,)))
        assert info is not None
        (mount,) = info.mounts  # a single file, bound as before: not rotatable
        name = on_tmpfs(mount, info.filesystems[0])
        assert name == "..1/0"
        assert stat.S_IMODE(os.stat(name, dir_fd=info.filesystems[0].fd).st_mode) == 0o600
        assert not mount.read_only
        assert mount.target == sandbox / "rw"
        assert (sandbox / "rw").read_bytes() == b""  # its placeholder
        assert not (sandbox / ".mesos-secrets").exists()  # no rotatable volume, no bind
        iso.cleanup("c1")
        assert list(sandbox.iterdir()) == []

    def test_size_cap(self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path) -> None:
        """A secret over the cap is an error before anything is created."""
        with pytest.raises(
            IsolatorError,
            match=r"volume 'big' \(secret '/big'\) is 2 MiB, more than .* cap of 1 MiB",
        ):
            self.prepare(
                resolver,
                runtime_dir,
                config_for(sandbox, volumes=(file_secret("big", "/big", None),)),
            )
        assert not (runtime_dir / "containers").exists()
        assert not (sandbox / "big").exists()

    def test_size_cap_option(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        """The cap is configurable; what fits is written whole."""
        iso = VolumeSecretIsolator(resolver, runtime_dir, size="4MiB")
        info = iso.prepare(config_for(sandbox, volumes=(file_secret("big", "/big", None),)))
        assert info is not None
        assert len(read_on(info.filesystems[0], "..data/0")) == 2 << 20
        iso.cleanup("c1")

    def test_total_size_cap(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        volumes = tuple(file_secret(f"f{i}") for i in range(3))
        with pytest.raises(IsolatorError, match="the 3 secret volumes take 12 KiB"):
            self.prepare(resolver, runtime_dir, config_for(sandbox, volumes=volumes), size="8KiB")

    def test_symlink_in_sandbox(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path, tmp_path: Path
    ) -> None:
        """A link on the way out of the sandbox is refused; nothing is written outside."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (sandbox / "link").symlink_to(outside)
        with pytest.raises(IsolatorError, match="goes through .*link.*symbolic link"):
            self.prepare(
                resolver, runtime_dir, config_for(sandbox, volumes=(file_secret("link/secret"),))
            )
        assert list(outside.iterdir()) == []
        assert not mounts_under(runtime_dir)

    def test_symlink_as_target(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path, tmp_path: Path
    ) -> None:
        (sandbox / "target").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(IsolatorError, match="is a symbolic link"):
            self.prepare(
                resolver, runtime_dir, config_for(sandbox, volumes=(file_secret("target"),))
            )

    def test_absolute_path_must_exist(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        """Without an image, an absolute path must exist on the host (Mesos' rule and message)."""
        with pytest.raises(
            IsolatorError, match="Absolute container path '/no/such/file' does not exist"
        ):
            self.prepare(
                resolver, runtime_dir, config_for(sandbox, volumes=(file_secret("/no/such/file"),))
            )

    def test_absolute_existing_path(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path, tmp_path: Path
    ) -> None:
        host = tmp_path / "host-file"
        host.write_text("original")
        info = self.prepare(
            resolver, runtime_dir, config_for(sandbox, volumes=(file_secret(str(host)),))
        )
        assert info.mounts[0].target == host
        assert on_tmpfs(info.mounts[0], info.filesystems[0]) == "..1/0"  # never via ..data
        assert host.read_text() == "original"
        VolumeSecretIsolator(resolver, runtime_dir).cleanup("c1")
        assert host.read_text() == "original"

    def test_each_kind_of_volume(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path, tmp_path: Path
    ) -> None:
        """Only a read-only volume in the sandbox is a link into the tmpfs; an RW one and
        an absolute one are single files bound from ``..1``, never through ``..data``."""
        host = tmp_path / "host-file"
        host.write_text("original")
        volumes = (
            file_secret("ro"),
            Volume.for_secret("rw", Secret.for_reference("/db", "user"), VolumeMode.RW),
            file_secret(str(host)),
        )
        iso = VolumeSecretIsolator(resolver, runtime_dir)
        info = iso.prepare(config_for(sandbox, volumes=volumes))
        assert info is not None
        (tmpfs,) = info.filesystems
        tree, rw, absolute = info.mounts
        assert (tree.source, tree.target) == (tmpfs.at, sandbox / ".mesos-secrets")
        assert (on_tmpfs(rw, tmpfs), rw.target, rw.read_only) == ("..1/1", sandbox / "rw", False)
        assert (on_tmpfs(absolute, tmpfs), absolute.target) == ("..1/2", host)
        assert os.readlink(sandbox / "ro") == ".mesos-secrets/..data/0"
        assert names_on(tmpfs.fd, "..1") == ["0", "1", "2"]
        assert read_on(tmpfs, "..1/1") == b"app"
        iso.cleanup("c1")
        assert list(sandbox.iterdir()) == []
        assert host.read_text() == "original"

    @pytest.mark.parametrize("path", [".mesos-secrets", ".mesos-secrets/x", "./.mesos-secrets/a/b"])
    def test_path_in_the_tmpfs_directory(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path, path: str
    ) -> None:
        with pytest.raises(
            IsolatorError, match=rf"^container path '{re.escape(path)}' is in '\.mesos-secrets'"
        ):
            self.prepare(resolver, runtime_dir, config_for(sandbox, volumes=(file_secret(path),)))
        assert list(sandbox.iterdir()) == []

    def test_existing_file_at_a_rotatable_path(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        """A link cannot be made over what is there (it is never replaced, nor written)."""
        (sandbox / "pw").write_text("the task's own")
        with pytest.raises(
            IsolatorError, match=r"container path 'pw' is taken at '.*/pw' \(a file\)"
        ):
            self.prepare(resolver, runtime_dir, config_for(sandbox, volumes=(file_secret("pw"),)))
        assert (sandbox / "pw").read_text() == "the task's own"
        assert [p.name for p in sandbox.iterdir()] == ["pw"]
        assert not (runtime_dir / "containers" / "c1" / "volume_secret").exists()

    def test_same_path_twice(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        volumes = (file_secret("a/pw"), file_secret("./a/pw", "/db", "user"))
        with pytest.raises(IsolatorError, match="'./a/pw' is given to more than one"):
            self.prepare(resolver, runtime_dir, config_for(sandbox, volumes=volumes))
        assert list(sandbox.iterdir()) == []

    def test_optional_missing_secret(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path, tmp_path: Path
    ) -> None:
        """An optional secret that cannot be resolved: no file, nothing bound; a rotatable
        volume's link is made all the same (dangling until a refresh delivers)."""
        host = tmp_path / "host-file"
        host.write_text("original")
        volumes = (file_secret("later", "/nope", None), file_secret(str(host), "/nope", None))
        iso = VolumeSecretIsolator(resolver, runtime_dir)
        info = iso.prepare(config_for(sandbox, volumes=volumes, optional=frozenset({"/nope"})))
        assert info is not None
        (tree,) = info.mounts  # no bind over the host file
        assert tree.target == sandbox / ".mesos-secrets"
        assert names_on(info.filesystems[0].fd, "..1") == []
        assert os.readlink(sandbox / "later") == ".mesos-secrets/..data/0"
        resolver.store.put("/nope", {"v": "now"})
        assert iso.refresh("c1", ["/nope"]) == Refreshed(
            updated=("volume 'later' (secret '/nope')",),
            fixed=(f"volume '{host}' (secret '/nope')",),
        )
        assert read_on(info.filesystems[0], "..data/0") == b"now"
        iso.cleanup("c1")
        assert list(sandbox.iterdir()) == []

    def test_link_cleanup_is_by_inode_and_target(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path, tmp_path: Path
    ) -> None:
        """Links the task replaced (another link, a file) stay; ours go."""
        volumes = (file_secret("a"), file_secret("b"), file_secret("c"))
        iso = VolumeSecretIsolator(resolver, runtime_dir)
        iso.prepare(config_for(sandbox, volumes=volumes))
        (sandbox / "a").unlink()
        (sandbox / "a").symlink_to("/etc/passwd")
        (sandbox / "b").unlink()
        (sandbox / "b").write_text("mine")
        iso.cleanup("c1")
        assert os.readlink(sandbox / "a") == "/etc/passwd"
        assert (sandbox / "b").read_text() == "mine"
        assert sorted(p.name for p in sandbox.iterdir()) == ["a", "b"]

    def test_missing_secret_leaves_nothing(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        volumes = (file_secret("a"), file_secret("b", "/missing", None))
        with pytest.raises(IsolatorError, match=r"cannot resolve volume 'b' \(secret '/missing'\)"):
            self.prepare(resolver, runtime_dir, config_for(sandbox, volumes=volumes))
        assert list(sandbox.iterdir()) == []
        assert not (runtime_dir / "containers").exists()

    def test_docker_container_refused(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        with pytest.raises(
            IsolatorError, match="Can only prepare the secret volume isolator for a MESOS container"
        ):
            self.prepare(
                resolver,
                runtime_dir,
                config_for(sandbox, volumes=(file_secret("a"),), kind=ContainerType.DOCKER),
            )

    def test_parse_size(self) -> None:
        assert parse_size("1MiB") == parse_size("1m") == parse_size(1 << 20) == 1 << 20
        assert parse_size("512KiB") == 512 << 10
        with pytest.raises(ConfigError, match="not a size"):
            parse_size("lots")
        with pytest.raises(ConfigError, match="smaller than one page"):
            parse_size(10)


class Failing(Isolator):
    name = "failing"

    def prepare(self, config: ContainerConfig) -> LaunchInfo | None:
        raise IsolatorError("failing on purpose", isolator=self.name)


class TestChain:
    def test_isolation_list(self) -> None:
        """Mesos' spellings are accepted; duplicates are not."""
        assert parse_isolation("environment_secret,volume/secret") == (
            "environment_secret",
            "volume_secret",
        )
        assert parse_isolation(None) == ("environment_secret", "volume_secret")
        with pytest.raises(ConfigError, match="listed twice"):
            parse_isolation("volume_secret,volume/secret")

    def test_unknown_isolator(self, resolver: LocalResolver, runtime_dir: Path) -> None:
        with pytest.raises(
            PluginError,
            match=r"unknown isolator 'filesystem/linux' \(known: environment_secret, network, vol",
        ):
            create_isolators("filesystem/linux", resolver, runtime_dir)

    def test_options_for_unlisted_isolator(
        self, resolver: LocalResolver, runtime_dir: Path
    ) -> None:
        with pytest.raises(ConfigError, match="options are given for isolator"):
            create_isolators(
                "environment_secret", resolver, runtime_dir, {"volume_secret": {"size": "2MiB"}}
            )

    def test_unknown_option(self, resolver: LocalResolver, runtime_dir: Path) -> None:
        with pytest.raises(
            ConfigError,
            match=r"unknown option 'sise' for isolator 'volume_secret' \(known: noswap, size\)",
        ):
            create_isolators(None, resolver, runtime_dir, {"volume_secret": {"sise": "2MiB"}})

    def test_secret_volume_without_isolator(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        """Stricter than Mesos: a SECRET volume is never silently ignored."""
        chain = create_isolators("environment_secret", resolver, runtime_dir)
        with pytest.raises(
            IsolatorError, match=r"SECRET volumes \(a\), but no isolator .* \(add volume_secret\)"
        ):
            chain.prepare(config_for(sandbox, volumes=(file_secret("a"),)))

    def test_env_secret_without_isolator(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        chain = create_isolators("volume_secret", resolver, runtime_dir)
        with pytest.raises(IsolatorError, match="add environment_secret"):
            chain.prepare(config_for(sandbox, env=(env_secret("A", "/db", "user"),)))

    def test_host_volumes_are_not_dropped(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        chain = create_isolators(None, resolver, runtime_dir)
        volume = Volume(container_path="data", mode=VolumeMode.RW, host_path="/srv")
        with pytest.raises(IsolatorError, match=r"not SECRET volumes \(data\)"):
            chain.prepare(config_for(sandbox, volumes=(volume,)))

    @requires_root
    def test_failed_prepare_cleans_up_the_others(
        self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path
    ) -> None:
        """Mesos' ROOT_FailInPreparing: a later isolator fails; the secret volume is gone."""
        volume = VolumeSecretIsolator(resolver, runtime_dir)
        chain = IsolatorChain([volume, Failing(resolver, runtime_dir)])
        with pytest.raises(IsolatorError, match="failing on purpose"):
            chain.prepare(config_for(sandbox, volumes=(file_secret("my_secret"),)))
        assert not mounts_under(runtime_dir)
        assert not volume.container_dir("c1").exists()
        assert not (sandbox / "my_secret").exists()

    def test_refreshed_merge(self) -> None:
        one = Refreshed(updated=("a",), fixed=("x",))
        assert one.merge(Refreshed(updated=("b",))) == Refreshed(("a", "b"), ("x",))
        assert Refreshed().merge(Refreshed()) == Refreshed()

    def test_refresh_merges_and_raises_the_first_error(
        self, resolver: LocalResolver, runtime_dir: Path
    ) -> None:
        """Every isolator is asked, even after one fails; what they did is merged; an
        error is an IsolatorError (an OSError too)."""
        asked: list[str] = []

        class Reporting(Isolator):
            name = "reporting"

            def prepare(self, config: ContainerConfig) -> LaunchInfo | None:
                return None

            def refresh(self, container_id: str, names: Collection[str]) -> Refreshed | None:
                asked.append(self.name)
                return Refreshed(updated=tuple(f"{self.name} {n}" for n in names))

        class Broken(Reporting):
            name = "broken"

            def refresh(self, container_id: str, names: Collection[str]) -> Refreshed | None:
                asked.append(self.name)
                raise OSError(errno.EIO, "Input/output error")

        quiet = Failing(resolver, runtime_dir)
        ok = Reporting(resolver, runtime_dir)
        assert quiet.refresh("c1", ["/db"]) is None  # the default: nothing of it here
        chain = IsolatorChain([quiet, ok, ok])
        assert chain.refresh("c1", ["/db"]) == Refreshed(updated=("reporting /db",) * 2)
        asked.clear()
        chain = IsolatorChain([Broken(resolver, runtime_dir), ok])
        with pytest.raises(IsolatorError, match="refresh of container c1 failed: .*Input/output"):
            chain.refresh("c1", ["/db"])
        assert asked == ["broken", "reporting"]
        assert IsolatorChain([]).refresh("c1", ["/db"]) == Refreshed()

    @requires_root
    def test_merge(self, resolver: LocalResolver, sandbox: Path, runtime_dir: Path) -> None:
        chain = create_isolators(None, resolver, runtime_dir)
        info = chain.prepare(
            config_for(sandbox, env=(env_secret("A", "/db", "user"),), volumes=(file_secret("f"),))
        )
        assert list(info.environment) == ["A"]
        assert len(info.mounts) == 1
        chain.cleanup("c1")
        assert not mounts_under(runtime_dir)


CRASH = """
import os, sys
from pathlib import Path
from mesos_secrets import Secret, Volume
from mesos_secrets.containerizer import Containerizer
from mesos_secrets.containerizer.launcher import PosixLauncher
from mesos_secrets.isolator import create_isolators
from mesos_secrets.mesos import TaskInfo, CommandInfo, ContainerInfo, ContainerType
from resolvers.local import LocalResolver

class CrashAtLaunch(PosixLauncher):
    def launch(self, config, info, **stdio):
        os._exit(0)   # a crash: everything prepared, nothing cleaned up

store, runtime, sandbox = map(Path, sys.argv[1:4])
resolver = LocalResolver(home=store)
containerizer = Containerizer(create_isolators(None, resolver, runtime), CrashAtLaunch(), runtime)
task = TaskInfo(name="t", task_id="t", command=CommandInfo(value="sleep 60"),
    container=ContainerInfo(type=ContainerType.MESOS,
        volumes=(Volume.for_secret("s", Secret.for_reference("/db", "password")),)))
containerizer.launch(task, sandbox, container_id="orphan")
"""


@requires_root
def test_recover_after_crash(resolver: LocalResolver, sandbox: Path, runtime_dir: Path) -> None:
    """A front end that died mid-launch leaves its claim, a placeholder and a cgroup;
    the next start removes them. Its tmpfs was never mounted: nothing to unmount."""
    subprocess.run(
        [sys.executable, "-c", CRASH, str(resolver.store.home), str(runtime_dir), str(sandbox)],
        check=True,
    )
    assert not mounts_under(runtime_dir)
    assert (runtime_dir / "containers" / "orphan").exists()
    assert os.readlink(sandbox / "s") == ".mesos-secrets/..data/0"
    assert (sandbox / ".mesos-secrets").is_dir()
    containerizer = Containerizer(
        create_isolators(None, resolver, runtime_dir), PosixLauncher(), runtime_dir
    )
    assert containerizer.cgroups is not None
    assert containerizer.cgroups.exists("orphan")
    assert containerizer.recover() == ["orphan"]
    assert list((runtime_dir / "containers").iterdir()) == []
    assert list(sandbox.iterdir()) == []
    assert not containerizer.cgroups.exists("orphan")


def test_no_value_in_launch_info_repr(
    resolver: LocalResolver, sandbox: Path, runtime_dir: Path
) -> None:
    value = canary()
    resolver.store.put("/c", {"v": value})
    info = EnvironmentSecretIsolator(resolver, runtime_dir).prepare(
        config_for(sandbox, env=(env_secret("C", "/c"),))
    )
    assert value not in repr(info)
    assert value not in str(info)


@requires_root
def test_noswap_fallback(
    resolver: LocalResolver,
    sandbox: Path,
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a kernel whose tmpfs lacks `noswap` (EINVAL), mount without it and warn once."""
    import errno

    import isolators.volume_secret as module
    from mesos_secrets import linux

    real = linux.new_filesystem
    options_seen: list[dict[str, str | None]] = []

    def old_kernel(
        fstype: str, options: dict[str, str | None], flags: int = 0, *, source: str | None = None
    ) -> int:
        options_seen.append(options)
        if "noswap" in options:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fstype, options, flags, source=source)

    monkeypatch.setattr(linux, "new_filesystem", old_kernel)
    monkeypatch.setattr(linux, "_NOSWAP", None)
    monkeypatch.setattr(module, "_WARNED_SWAP", False)
    iso = VolumeSecretIsolator(resolver, runtime_dir)
    for container_id in ("c1", "c2"):
        info = iso.prepare(
            config_for(
                sandbox, volumes=(file_secret(f"s-{container_id}"),), container_id=container_id
            )
        )
        assert info is not None
        assert read_on(info.filesystems[0], "..data/0") == b"password"
        iso.cleanup(container_id)
    assert [("noswap" in o) for o in options_seen] == [True, False, False]
    assert caplog.text.count("no 'noswap' option") == 1


def _mountinfo() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()
