"""Removal that follows no link, for trees a task wrote: real files, links and mounts."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesos_secrets import linux, nofollow

from .conftest import NOBODY, as_nobody, mounts_under, requires_root


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


@pytest.fixture
def nobody_tree() -> Iterator[Path]:
    """A directory of nobody's, which nobody can reach."""
    base = Path(tempfile.mkdtemp(prefix="mesos-secrets-nofollow-"))
    os.chown(base, NOBODY, NOBODY)
    try:
        yield base
    finally:
        shutil.rmtree(base)


@requires_root
def test_another_user_empties_its_own_closed_directories(nobody_tree: Path) -> None:
    """Without root, a tree with directories of the user's own it may not read or write
    (an overlay's ``000`` work directory, a task's ``0500`` one) is removed all the same."""
    tree = nobody_tree / "tree"
    (tree / "work" / "work").mkdir(parents=True)
    (tree / "upper" / "kept" / "deeper").mkdir(parents=True)
    (tree / "upper" / "kept" / "file").write_text("x")
    for path in (tree, *tree.rglob("*")):
        os.chown(path, NOBODY, NOBODY)
    (tree / "work" / "work").chmod(0)
    (tree / "upper" / "kept" / "deeper").chmod(0o100)
    (tree / "upper" / "kept").chmod(0o500)
    assert as_nobody(lambda: nofollow.remove_tree(tree)) == ""
    assert not tree.exists()


@requires_root
def test_another_users_closed_directory_is_left_alone(nobody_tree: Path) -> None:
    """A closed directory in the tree that is not the user's own (root's) is not made
    open: removal stops there, and its mode is what it was."""
    tree = nobody_tree / "tree"
    (tree / "roots").mkdir(parents=True)
    os.chown(tree, NOBODY, NOBODY)
    (tree / "roots").chmod(0)
    said = as_nobody(lambda: nofollow.remove_tree(tree))
    assert "PermissionError" in said
    assert (tree / "roots").stat().st_mode & 0o777 == 0
    assert (tree / "roots").stat().st_uid == 0


@requires_root
def test_a_directory_swapped_after_listing_is_not_opened(
    nobody_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory listed is replaced (by a closed one of the user's) before it is
    opened: it is not made open, and the walk stops (ESTALE)."""
    tree = nobody_tree / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "other").mkdir()
    for path in (tree, tree / "sub", tree / "other"):
        os.chown(path, NOBODY, NOBODY)
    (tree / "other").chmod(0)
    real = nofollow.stat_at

    def listed_then_swapped(dir_fd: int, name: str) -> os.stat_result | None:
        info = real(dir_fd, name)
        if name == "sub":
            os.rename("other", "sub", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return info

    monkeypatch.setattr(nofollow, "stat_at", listed_then_swapped)
    said = as_nobody(lambda: nofollow.remove_tree(tree))
    assert "changed while it was being removed" in said
    assert (tree / "sub").stat().st_mode & 0o777 == 0
