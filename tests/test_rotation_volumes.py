"""Secret files a running task is given new values of: real tasks, store and tmpfs.

Each task runs through the containerizer pipeline (the posix launcher, in its own
namespaces); what it sees is read inside it, by a command run in its container.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import pwd
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from isolators.volume_secret import SOURCE
from mesos_secrets import (
    CommandInfo,
    ContainerInfo,
    Environment,
    IsolatorError,
    Secret,
    TaskInfo,
    Variable,
    Volume,
)
from mesos_secrets.containerizer import Container, Containerizer
from mesos_secrets.containerizer.launcher import PosixLauncher
from mesos_secrets.isolator import Refreshed, create_isolators
from mesos_secrets.mesos import CommandURI, VolumeMode
from mesos_secrets.testing import canary, leaks
from resolvers.local import LocalResolver

from .conftest import mounts_under, requires_root
from .test_run import wait_for, wait_until

pytestmark = requires_root

NOBODY = pwd.getpwnam("nobody")
DB = "/app/db"


def file_at(path: str, name: str = DB, mode: VolumeMode = VolumeMode.RO) -> Volume:
    return Volume.for_secret(path, Secret.for_reference(name), mode)


def label(path: str, name: str = DB) -> str:
    return f"volume '{path}' (secret '{name}')"


def probe(container: Container, sandbox: Path, script: str) -> str:
    """What ``script`` prints, run inside the running task's container (as its user, in
    its namespaces, in its sandbox)."""
    out = f".probe-{uuid.uuid4().hex}"
    process = container.exec(["sh", "-c", f"{{ {script}; }} > {out} 2>&1"], "sh")
    assert process.wait(timeout=30) == 0, f"{script!r} failed in the task"
    path = sandbox / out
    try:
        return path.read_text()
    finally:
        path.unlink()


def our_host_mounts() -> list[str]:
    """Mounts in this (the host's) namespace whose source is exactly ours."""
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        return [line for line in info if line.split(" - ")[1].split()[1] == SOURCE]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Rig:
    """A store, a containerizer and a sandbox of the test's own."""

    def __init__(self, tmp_path: Path, resolver: LocalResolver) -> None:
        self.tmp = tmp_path
        self.resolver = resolver
        self.sandbox = tmp_path / "sandbox"
        self.sandbox.mkdir()
        self.runtime = tmp_path / "runtime"
        self.containerizer = self.make_containerizer()

    def make_containerizer(self, **options: Any) -> Containerizer:
        isolators = create_isolators(
            None, self.resolver, self.runtime, {"volume_secret": options} if options else None
        )
        return Containerizer(isolators, PosixLauncher(), self.runtime)

    def put(self, value: str | bytes, name: str = DB) -> None:
        self.resolver.store.put(name, {"v": value})

    def launch(
        self,
        *volumes: Volume,
        cmd: str = "touch started; exec sleep 600",
        env: tuple[Variable, ...] = (),
        user: str | None = "nobody",
        optional: Collection[str] = (),
        containerizer: Containerizer | None = None,
    ) -> Container:
        task = TaskInfo(
            name="rotating",
            task_id="rotating",
            command=CommandInfo(
                value=cmd, user=user, environment=Environment(variables=env) if env else None
            ),
            container=ContainerInfo(type=ContainerInfo.Type.MESOS, volumes=volumes),
        )
        container = (containerizer or self.containerizer).launch(
            task, self.sandbox, optional=optional
        )
        if "touch started" in cmd:
            try:
                wait_for(self.sandbox / "started")
            except BaseException:
                container.destroy()
                raise
        return container

    def refresh(self, container: Container, *names: str) -> Refreshed:
        return self.containerizer.isolators.refresh(container.id, names)

    def probe(self, container: Container, script: str) -> str:
        return probe(container, self.sandbox, script)

    def generations(self, container: Container) -> list[str]:
        """The tmpfs's entries, as the task sees them."""
        return self.probe(container, "ls -A .mesos-secrets").split()


@pytest.fixture
def rig(tmp_path: Path, home: Path) -> Iterator[Rig]:
    with LocalResolver(home=home) as resolver:
        yield Rig(tmp_path, resolver)


def test_a_new_value_reaches_the_running_task(rig: Rig) -> None:
    """The task reads the new value at the same path; the old generation is gone; the
    file is 0400 and the task user's; the host's mount table never shows the tmpfs."""
    first, second = canary(), canary()
    rig.put(first)
    with rig.launch(file_at("a/b/pw")) as container:
        assert rig.probe(container, "cat a/b/pw") == first
        assert rig.probe(container, "readlink a/b/pw") == "../../.mesos-secrets/..data/0\n"
        rig.put(second)
        refreshed = rig.refresh(container, DB)
        assert refreshed == Refreshed(updated=(label("a/b/pw"),))
        assert not leaks(first, repr(refreshed))
        assert not leaks(second, repr(refreshed))
        assert rig.probe(container, "cat a/b/pw") == second
        # The old generation goes a moment later (a reader may be on its way to it).
        wait_until(lambda: rig.generations(container) == ["..2", "..data"], timeout=5)
        owner = f"400 {NOBODY.pw_uid} {NOBODY.pw_gid}"
        assert rig.probe(container, "stat -L -c '%a %u %g' a/b/pw").strip() == owner
        assert rig.probe(container, "! (echo x > a/b/pw) 2>/dev/null; cat a/b/pw") == second
        assert our_host_mounts() == []
        assert mounts_under(rig.tmp) == []
        # On the host, the sandbox holds the link and an empty directory, nothing more.
        assert list((rig.sandbox / ".mesos-secrets").iterdir()) == []
        assert not (rig.sandbox / "a" / "b" / "pw").exists()


READER = """
import hashlib, os
with open("reads", "w") as log:
    open("started", "w").close()
    while not os.path.exists("stop"):
        try:
            with open("secrets/db", "rb") as f:
                data = f.read()
        except OSError as error:
            log.write(f"error {error.errno}\\n")
        else:
            log.write(hashlib.sha256(data).hexdigest() + "\\n")
"""


def test_readers_never_see_a_torn_file(rig: Rig) -> None:
    """A reader in the task, reading in a loop while 200 refreshes swap two values of
    several KiB: every read is one whole value, never a mix or a part of one."""
    one, two = b"v1:" + b"A" * 12000, b"v2:" + b"B" * 12000
    digests = {hashlib.sha256(v).hexdigest() for v in (one, two)}
    rig.put(one)
    with rig.launch(file_at("secrets/db"), cmd=f"exec python3 -c '{READER}'") as container:
        wait_for(rig.sandbox / "started")
        for round_ in range(200):
            rig.put(two if round_ % 2 == 0 else one)
            assert rig.refresh(container, DB).updated == (label("secrets/db"),)
        (rig.sandbox / "stop").touch()
        assert container.wait().status == 0
    reads = (rig.sandbox / "reads").read_text().splitlines()
    whole = [line for line in reads if line in digests]
    failed = [line for line in reads if line.startswith("error ")]
    assert len(whole) + len(failed) == len(reads)  # nothing torn, nothing mixed
    assert len(whole) > 200
    changes = sum(a != b for a, b in itertools.pairwise(whole))
    assert changes > 20  # the reads did overlap the swaps
    assert failed == []


def test_an_unchanged_value_writes_nothing(rig: Rig) -> None:
    rig.put("same")
    with rig.launch(file_at("pw")) as container:
        inode = rig.probe(container, "stat -L -c %i pw")
        assert rig.refresh(container, DB) == Refreshed()
        assert rig.refresh(container, "/app/other") == Refreshed()
        assert rig.generations(container) == ["..1", "..data"]
        assert rig.probe(container, "stat -L -c %i pw") == inode


def test_a_failed_resolution_keeps_the_current_value(rig: Rig) -> None:
    """The error names the volume and the secret, never a value; the task keeps its
    file; no partial generation is left."""
    value, big = canary(), canary() * 50000
    rig.put(value)
    with rig.launch(file_at("pw")) as container:
        rig.resolver.store.delete(DB)
        with pytest.raises(IsolatorError, match=r"cannot resolve volume 'pw' \(secret '/app/db'\)"):
            rig.refresh(container, DB)
        rig.put(big)  # over the 1 MiB cap
        with pytest.raises(
            IsolatorError, match=r"volume 'pw' .* more than the secret volume"
        ) as error:
            rig.refresh(container, DB)
        assert not leaks(value, str(error.value), repr(error.value))
        assert rig.probe(container, "cat pw") == value
        assert rig.generations(container) == ["..1", "..data"]


def test_a_full_tmpfs_keeps_the_current_value(rig: Rig) -> None:
    """The task fills its RW volume, and so the tmpfs: the refresh fails (ENOSPC), naming
    the volume; the current value stays, the partial generation goes; once the task
    frees the space, the next refresh delivers."""
    value, second = canary(), canary()
    rig.put(value)
    small = rig.make_containerizer(size="8KiB")  # a 16 KiB tmpfs
    rig.containerizer = small
    fill = "head -c 65536 /dev/zero > scratch 2>/dev/null; touch started; exec sleep 600"
    volumes = (file_at("pw"), file_at("scratch", mode=VolumeMode.RW))
    with rig.launch(*volumes, cmd=fill) as container:
        rig.put(second)
        with pytest.raises(IsolatorError, match=r"volume 'pw' \(secret '/app/db'\) does not fit"):
            rig.refresh(container, DB)
        assert rig.probe(container, "cat pw") == value
        assert rig.generations(container) == ["..1", "..data"]
        rig.probe(container, ": > scratch")
        assert rig.refresh(container, DB).updated == (label("pw"),)
        assert rig.probe(container, "cat pw") == second


def test_fixed_places_keep_their_value(rig: Rig, tmp_path: Path) -> None:
    """An absolute-path volume, an RW volume and an environment variable holding the
    secret cannot change while the task runs: reported as fixed, and unchanged."""
    value, second = canary(), canary()
    rig.put(value)
    host = tmp_path / "host-file"
    host.write_text("host content")
    env = (Variable.for_secret("DB", Secret.for_reference(DB)),)
    volumes = (file_at(str(host)), file_at("rw", mode=VolumeMode.RW), file_at("ro"))
    # As root: user nobody could not reach the host file (the test's directory is 0700).
    with rig.launch(*volumes, env=env, user=None) as container:
        rig.put(second)
        assert rig.refresh(container, DB) == Refreshed(
            updated=(label("ro"),),
            fixed=(f"environment variable 'DB' (secret '{DB}')", label(str(host)), label("rw")),
        )
        assert rig.probe(container, f"cat {host}") == value
        assert rig.probe(container, "cat rw") == value
        assert rig.probe(container, "cat ro") == second
    assert host.read_text() == "host content"


def test_cleanup_leaves_what_the_task_put_in_place_of_its_links(rig: Rig) -> None:
    """The task swaps its links for a link to /etc/passwd and a file of its own: cleanup
    (root) removes neither, and nothing outside the sandbox."""
    passwd = Path("/etc/passwd").read_bytes()
    rig.put("value")
    cmd = (
        "rm s/pw other && ln -s /etc/passwd s/pw && echo mine > other && "
        "touch started; exec sleep 600"
    )
    with rig.launch(file_at("s/pw"), file_at("other"), cmd=cmd):
        pass
    assert os.readlink(rig.sandbox / "s" / "pw") == "/etc/passwd"
    assert (rig.sandbox / "other").read_text() == "mine\n"
    assert Path("/etc/passwd").read_bytes() == passwd
    assert sorted(p.name for p in rig.sandbox.iterdir()) == ["other", "s", "started"]


@pytest.mark.parametrize("planted", ["directory", "file", "link"])
def test_a_planted_mesos_secrets_is_refused(rig: Rig, tmp_path: Path, planted: str) -> None:
    """A '.mesos-secrets' already in the sandbox is never used, followed or removed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    there = rig.sandbox / ".mesos-secrets"
    if planted == "directory":
        there.mkdir()
        (there / "mine").write_text("mine")
    elif planted == "file":
        there.write_text("mine")
    else:
        there.symlink_to(outside)
    rig.put("value")
    with pytest.raises(IsolatorError, match=r"the sandbox has a '\.mesos-secrets' already"):
        rig.launch(file_at("pw"))
    assert list(outside.iterdir()) == []
    assert [p.name for p in rig.sandbox.iterdir()] == [".mesos-secrets"]
    if planted == "directory":
        assert (there / "mine").read_text() == "mine"
    elif planted == "file":
        assert there.read_text() == "mine"
    else:
        assert os.readlink(there) == str(outside)
    assert mounts_under(rig.tmp) == []


def test_after_the_task_nothing_is_left(rig: Rig) -> None:
    """No .mesos-secrets, no link, no mount, no fd of ours once the container is gone."""
    rig.put("value")
    rig.resolver.resolve(Secret.for_reference(DB))  # the store's own files are open now
    before = open_fds()
    with rig.launch(file_at("s/pw"), cmd="cat s/pw > copy") as container:
        assert container.wait().status == 0
    assert (rig.sandbox / "copy").read_text() == "value"
    assert [p.name for p in rig.sandbox.iterdir()] == ["copy"]
    assert mounts_under(rig.tmp) == []
    assert our_host_mounts() == []
    assert open_fds() == before
    assert rig.containerizer.isolators.refresh(container.id, [DB]) == Refreshed()


class TestOptional:
    MISSING = "/app/missing"

    def test_a_missing_optional_secret_comes_with_a_refresh(self, rig: Rig) -> None:
        """Missing at launch: no variable, no file (the link dangles); once it exists, a
        refresh delivers the file (the variable is fixed)."""
        env = (Variable.for_secret("LATER", Secret.for_reference(self.MISSING)),)
        with rig.launch(file_at("pw", self.MISSING), env=env, optional={self.MISSING}) as task:
            assert rig.probe(task, "echo ${LATER-unset}; test ! -e pw && test -L pw") == "unset\n"
            fixed = (f"environment variable 'LATER' (secret '{self.MISSING}')",)
            assert rig.refresh(task, self.MISSING) == Refreshed(fixed=fixed)  # still missing
            value = canary()
            rig.put(value, self.MISSING)
            assert rig.refresh(task, self.MISSING) == Refreshed(
                updated=(label("pw", self.MISSING),), fixed=fixed
            )
            assert rig.probe(task, "cat pw") == value

    def test_all_optional(self, rig: Rig) -> None:
        rig.put("here")
        volumes = (file_at("a"), file_at("b", self.MISSING))
        with rig.launch(*volumes, optional={"*"}) as container:
            assert rig.probe(container, "cat a; test ! -e b && echo no-b") == "hereno-b\n"

    def test_a_missing_secret_not_optional_fails(self, rig: Rig) -> None:
        with pytest.raises(
            IsolatorError, match=r"cannot resolve volume 'pw' \(secret '/app/missing'\)"
        ):
            rig.launch(file_at("pw", self.MISSING), optional={"/app/other"})
        assert list(rig.sandbox.iterdir()) == []
        assert mounts_under(rig.tmp) == []


def test_an_unknown_container_is_nothing_to_refresh(rig: Rig) -> None:
    assert rig.containerizer.isolators.refresh("no-such-container", [DB]) == Refreshed()


@pytest.mark.parametrize("how", ["output_file", "archive"])
def test_a_fetch_never_takes_a_secrets_place(rig: Rig, tmp_path: Path, how: str) -> None:
    """The fetcher replaces links it finds (never writing through them): a fetched file,
    or an archive's member, at a secret's path would be read as the secret. It fails the
    launch instead, and leaves nothing."""
    public = Path(tempfile.mkdtemp())  # the task's user reads what it fetches
    public.chmod(0o755)
    decoy = public / "decoy"
    decoy.mkdir()
    (decoy / "pw").write_text("not the secret")
    if how == "archive":
        source = public / "decoy.tar"
        with tarfile.open(source, "w") as tar:
            tar.add(decoy / "pw", arcname="s/pw")
        uri = CommandURI(value=f"file://{source}")
    else:
        uri = CommandURI(value=f"file://{decoy / 'pw'}", output_file="s/pw")
    (source if how == "archive" else decoy / "pw").chmod(0o644)
    decoy.chmod(0o755)
    rig.put("the secret")
    task = TaskInfo(
        name="fetching",
        task_id="fetching",
        command=CommandInfo(value="cat s/pw > copy", user="nobody", uris=(uri,)),
        container=ContainerInfo(type=ContainerInfo.Type.MESOS, volumes=(file_at("s/pw"),)),
    )
    try:
        with pytest.raises(IsolatorError, match=r"'s/pw' in the sandbox was replaced after"):
            rig.containerizer.launch(task, rig.sandbox)
    finally:
        shutil.rmtree(public)
    assert not (rig.sandbox / "copy").exists()
    assert not (rig.sandbox / ".mesos-secrets").exists()
    assert mounts_under(rig.tmp) == []


def test_a_name_spelled_without_its_slash_still_rotates(rig: Rig) -> None:
    """The agent names every secret ``/a/b``; a task may have said ``a/b``."""
    first, second = canary(), canary()
    rig.put(first)
    with rig.launch(file_at("pw", name=DB.lstrip("/"))) as container:
        assert rig.probe(container, "cat pw") == first
        rig.put(second)
        refreshed = rig.refresh(container, DB)
        assert refreshed.updated == (label("pw", DB.lstrip("/")),)
        assert rig.probe(container, "cat pw") == second
