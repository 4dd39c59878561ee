"""Removal that follows no link, for trees a task wrote: real files, links and mounts."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mesos_secrets import linux, nofollow

from .conftest import mounts_under, requires_root


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """Files outside the tree, which a link inside it points to."""
    path = tmp_path / "victim"
    (path / "dir").mkdir(parents=True)
    (path / "file").write_text("keep")
    return path


def test_links_are_removed_not_followed(tmp_path: Path, victim: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "to-dir").symlink_to(victim)
    (tree / "to-file").symlink_to(victim / "file")
    assert nofollow.remove_tree(tree)
    assert not tree.exists()
    assert sorted(os.listdir(victim)) == ["dir", "file"]


def test_a_link_on_the_way_is_refused(tmp_path: Path, victim: Path) -> None:
    """A path through a link is ELOOP, atomically: nothing behind the link is touched."""
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        nofollow.remove_tree(tmp_path / "link" / "file")
    assert (victim / "file").read_text() == "keep"


def test_deeper_than_recursion_and_fd_limits(tmp_path: Path) -> None:
    """5000 levels (more than the recursion limit and, with a low fd limit, than fds)."""
    tree = tmp_path / "deep"
    tree.mkdir()
    fd = os.open(tree, os.O_RDONLY)
    for _ in range(5000):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    assert nofollow.remove_tree(tree)
    assert not tree.exists()


def test_expected_inode(tmp_path: Path) -> None:
    """What is not the inode made there any more is left alone."""
    path = tmp_path / "made"
    path.write_text("")
    made = nofollow.identity(path.stat())
    path.rename(tmp_path / "moved")  # kept alive, so its inode number is not reused
    path.write_text("someone else's")
    assert not nofollow.remove_tree(path, expect=made)
    assert path.read_text() == "someone else's"
    assert nofollow.remove_tree(path, expect=nofollow.identity(path.stat()))


def test_missing_is_nothing_to_do(tmp_path: Path) -> None:
    assert not nofollow.remove_tree(tmp_path / "absent")
    assert not nofollow.remove_tree(tmp_path / "absent" / "deeper")


@requires_root
def test_mount_inside_is_detached_by_fd(tmp_path: Path) -> None:
    """A filesystem mounted inside the tree is detached (never descended into)."""
    tree = tmp_path / "tree"
    point = tree / "a" / "mounted"
    point.mkdir(parents=True)
    linux.mount("tmpfs", point, "tmpfs", 0, "size=64k")
    (point / "on-the-mount").write_text("x")
    assert nofollow.remove_tree(tree)
    assert not tree.exists()
    assert not mounts_under(tmp_path)


def test_open_directory_beneath(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "base" / "real").mkdir(parents=True)
    (tmp_path / "base" / "escape").symlink_to(victim)
    base = nofollow.open_directory(tmp_path / "base")
    try:
        os.close(nofollow.open_directory("real", dir_fd=base))
        with pytest.raises(OSError, match="symbolic links"):
            nofollow.open_directory("escape", dir_fd=base)
        with pytest.raises(OSError, match="Invalid cross-device link|Operation not permitted"):
            nofollow.open_directory("../base", dir_fd=base)
    finally:
        os.close(base)


@requires_root
def test_another_user_empties_its_own_closed_directories() -> None:
    """Without root, a tree with directories of the user's own it may not read or write
    (an overlay's ``000`` work directory, a task's ``0500`` one) is removed all the
    same; a closed directory of the user's behind a link is left as it was."""
    nobody = 65534
    base = Path(tempfile.mkdtemp(prefix="mesos-secrets-nofollow-"))
    try:
        tree, victim = base / "tree", base / "victim"
        (tree / "work" / "work").mkdir(parents=True)
        (tree / "upper" / "kept").mkdir(parents=True)
        (tree / "upper" / "kept" / "file").write_text("x")
        (tree / "link").symlink_to(victim)
        victim.mkdir()
        for path in (base, *base.rglob("*")):
            os.chown(path, nobody, nobody, follow_symlinks=False)
        for path, mode in ((tree / "work" / "work", 0), (tree / "upper" / "kept", 0o500),
                           (victim, 0)):  # fmt: skip
            path.chmod(mode)
        child = os.fork()
        if child == 0:
            try:
                os.setgroups([])
                os.setgid(nobody)
                os.setuid(nobody)
                nofollow.remove_tree(tree)
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not tree.exists()
        assert victim.stat().st_mode & 0o777 == 0
    finally:
        shutil.rmtree(base)
