"""Which resolvers and isolators are installed: our entry points, without a scan per start.

Finding entry points through :mod:`importlib.metadata` imports it (~10 ms) and reads
every installed distribution's metadata, on every start of every front end. The index
keeps the result of one such scan, with what it was read from, and is used only while
that is unchanged:

- each ``sys.path`` entry, in order, with its identity and modification time: a
  distribution installed into, or removed from, one of them changes its directory;
- each distribution's metadata directory found there (``*.dist-info``, ``*.egg-info``),
  and its ``entry_points.txt``, likewise: a file added to one, or one rewritten in place.

Anything else (another ``sys.path``, another Python, a distribution finder besides the
standard one) means a real scan, whose result is written anew. So does any doubt about
the file: it lives in a directory of the user's (``$XDG_CACHE_HOME/mesos-secrets``, else
``~/.cache/mesos-secrets``; ``/var/cache/mesos-secrets`` for root), and is read only if
that directory and the file are the user's own and no one else can write to them (the
index names modules we import: nobody else may choose them), is written atomically,
``0600``, and is ignored when it does not parse as an index exactly. A scan that saw
something modified within :data:`RACY_S` seconds is not written: a change made within
the same tick of the file system's clock would leave the times as they were.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import stat
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "GROUPS",
    "ISOLATOR_GROUP",
    "KEEP",
    "RACY_S",
    "RESOLVER_GROUP",
    "EntryPoint",
    "entry_points",
    "index_path",
]

RESOLVER_GROUP = "mesos_secrets.resolvers"
ISOLATOR_GROUP = "mesos_secrets.isolators"
#: The entry-point groups indexed.
GROUPS = (RESOLVER_GROUP, ISOLATOR_GROUP)
#: What is modified less than this many seconds before a scan is not trusted to show a
#: later change in its times (coarse clocks: a jiffy, or 2 s on some file systems).
RACY_S = 2.0
_FORMAT = 1
_PREFIX = "entry-points-"
#: How many indexes a user keeps (one per environment): beyond, the oldest go.
KEEP = 16
#: importlib.metadata.EntryPoint.pattern: ``module[:attr]`` with optional extras.
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: A file's or directory's identity and times, or None when it does not exist.
Signature = list[int] | None


class EntryPoint:
    """An entry point of one of our groups, as :class:`importlib.metadata.EntryPoint`
    reads one (``module:attr``), loadable without that module."""

    __slots__ = ("group", "name", "value")

    def __init__(self, name: str, value: str, group: str) -> None:
        self.name = name
        self.value = value
        self.group = group

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EntryPoint) and (self.name, self.value, self.group) == (
            other.name,
            other.value,
            other.group,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.value, self.group))

    def load(self) -> Any:
        """Import the module and return the object it names (as importlib.metadata)."""
        match = _VALUE.match(self.value)
        if match is None:
            raise ValueError(f"not an entry point: {self.value!r}")
        found: Any = importlib.import_module(match["module"])
        for part in filter(None, (match["attr"] or "").split(".")):
            found = getattr(found, part)
        return found


def entry_points(group: str) -> list[EntryPoint]:
    """The entry points of ``group`` (one of :data:`GROUPS`), in the order
    :func:`importlib.metadata.entry_points` gives them, duplicates included."""
    return [entry for entry in _index.entries() if entry.group == group]


def index_path() -> Path:
    """This user's index for this interpreter and ``sys.path``: each environment (a
    virtualenv, a ``PYTHONPATH``) has its own, rather than overwriting one another's."""
    if os.geteuid() == 0:
        base = Path("/var/cache/mesos-secrets")
    else:
        cache = os.environ.get("XDG_CACHE_HOME")
        base = Path(cache if cache and os.path.isabs(cache) else Path.home() / ".cache")
        base /= "mesos-secrets"
    where = "\0".join([sys.executable, *sys.path])
    tag = zlib.crc32(os.fsencode(where)) & 0xFFFFFFFF
    return base / f"{_PREFIX}{tag:08x}.json"


# --- what the index depends on -----------------------------------------------------------


def _signature(path: str) -> Signature:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size]


def _path_key() -> list[list[Any]]:
    """Each ``sys.path`` entry as importlib.metadata searches it, and its signature."""
    return [[entry, _signature(os.path.abspath(entry or "."))] for entry in sys.path]


def _metadata_files() -> list[list[Any]]:
    """Every distribution's metadata directory on ``sys.path`` (as importlib.metadata's
    ``FastPath`` finds them) and its ``entry_points.txt``, with their signatures."""
    found = []
    for entry in sys.path:
        root = os.path.abspath(entry or ".")
        egg = root.lower().endswith(".egg")
        try:
            names = sorted(os.listdir(root))
        except OSError:
            continue  # missing, or a zip file: its own signature covers it
        for name in names:
            low = name.lower()
            if low.endswith((".dist-info", ".egg-info")) or (egg and low == "egg-info"):
                where = os.path.join(root, name)
                points = os.path.join(where, "entry_points.txt")
                found.append([where, _signature(where)])
                found.append([points, _signature(points)])
    return found


def _standard_finders_only() -> bool:
    """Distributions come from the standard path finder only (others, which provide
    their own, would not be covered by what the index records)."""
    from importlib.machinery import PathFinder  # noqa: PLC0415 (frozen: already loaded)

    return all(
        finder is PathFinder or getattr(finder, "find_distributions", None) is None
        for finder in sys.meta_path
    )


def _racy(signatures: Iterator[Signature], since_ns: int) -> bool:
    """Something was modified too close to the scan for its times to be trusted."""
    limit = since_ns - int(RACY_S * 1e9)
    return any(sig is not None and max(sig[2], sig[3]) >= limit for sig in signatures)


# --- the index -------------------------------------------------------------------------


class _Index:
    """The entry points of :data:`GROUPS`, valid while what they were read from is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: The last index known valid in this process, and what it depends on.
        self._known: dict[str, Any] | None = None

    def entries(self) -> list[EntryPoint]:
        with self._lock:
            try:
                where = index_path()
            except (RuntimeError, KeyError):  # no home directory to keep it in
                return self._scan()[0]
            if not _standard_finders_only():
                return self._scan()[0]
            paths = _path_key()
            if self._known is not None and _valid(self._known, paths):
                return _entry_points(self._known)
            self._known = None
            stored = _read(where)
            if stored is not None and _valid(stored, paths):
                self._known = stored
                return _entry_points(stored)
            started = time.time_ns()
            entries, index = self._scan()
            # Written only if nothing changed during the scan, nor just before it.
            files = index["files"]
            if (
                _path_key() == paths
                and _metadata_files() == files
                and not _racy((sig for _, sig in paths + files), started)
            ):
                index["paths"] = paths
                _write(where, index)
                self._known = index
            return entries

    @staticmethod
    def _scan() -> tuple[list[EntryPoint], dict[str, Any]]:
        from importlib import metadata  # noqa: PLC0415 (the slow path)

        files = _metadata_files()
        everything = metadata.entry_points()  # one scan, for both groups
        entries = [
            EntryPoint(entry.name, entry.value, group)
            for group in GROUPS
            for entry in everything.select(group=group)
        ]
        index = {
            "format": _FORMAT,
            "python": sys.version,
            "files": files,
            "entry_points": [[e.group, e.name, e.value] for e in entries],
        }
        return entries, index


_index = _Index()


def _valid(index: dict[str, Any], paths: list[list[Any]]) -> bool:
    return (
        index["paths"] == paths
        and index["python"] == sys.version
        and all(_signature(path) == sig for path, sig in index["files"])
    )


def _entry_points(index: dict[str, Any]) -> list[EntryPoint]:
    return [EntryPoint(name, value, group) for group, name, value in index["entry_points"]]


def _well_formed(index: Any) -> bool:
    """Exactly what :meth:`_Index._scan` writes, every value an entry point's."""

    def signature(value: Any) -> bool:
        return value is None or (
            isinstance(value, list)
            and len(value) == 5
            and all(type(n) is int for n in value)  # an int, not a bool
        )

    def located(items: Any) -> bool:
        return isinstance(items, list) and all(
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and signature(item[1])
            for item in items
        )

    return (
        isinstance(index, dict)
        and set(index) == {"format", "python", "paths", "files", "entry_points"}
        and index["format"] == _FORMAT
        and isinstance(index["python"], str)
        and located(index["paths"])
        and located(index["files"])
        and isinstance(index["entry_points"], list)
        and all(
            isinstance(item, list)
            and len(item) == 3
            and item[0] in GROUPS
            and isinstance(item[1], str)
            and item[1].isprintable()
            and isinstance(item[2], str)
            and _VALUE.match(item[2]) is not None
            for item in index["entry_points"]
        )
    )


# --- the file --------------------------------------------------------------------------


def _safe(info: os.stat_result, kind: int) -> bool:
    """Ours, of the kind expected, and no one else can write to it."""
    return (
        stat.S_IFMT(info.st_mode) == kind
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _open_directory(path: Path, *, create: bool) -> int | None:
    """The index's directory, opened without following a link, if it is safe."""
    if create:  # its parents as any program makes them (~/.cache, /var/cache); it, 0700
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return None
    if not _safe(os.fstat(fd), stat.S_IFDIR):
        os.close(fd)
        return None
    return fd


def _read(path: Path) -> dict[str, Any] | None:
    """The index at ``path``, or None: missing, not safe, or not an index."""
    directory = _open_directory(path.parent, create=False)
    if directory is None:
        return None
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except OSError:
        return None
    finally:
        os.close(directory)
    try:
        with os.fdopen(fd, "rb") as file:
            if not _safe(os.fstat(file.fileno()), stat.S_IFREG):
                return None
            index = json.loads(file.read(1 << 22))
    except (OSError, ValueError):
        return None
    return index if _well_formed(index) else None


def _write(path: Path, index: dict[str, Any]) -> None:
    """Replace the index atomically; a failure only means the next start scans again."""
    directory = _open_directory(path.parent, create=True)
    if directory is None:
        return
    temporary = f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=directory,
        )
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(json.dumps(index, separators=(",", ":")).encode("utf-8"))
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        _prune(directory)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=directory)
    finally:
        os.close(directory)


def _prune(directory: int) -> None:
    """Keep the :data:`KEEP` most recently written indexes (an environment whose index
    went scans once more)."""
    ages = []
    for name in os.listdir(directory):
        if name.startswith(_PREFIX) and name.endswith(".json"):
            with contextlib.suppress(OSError):
                ages.append(
                    (os.stat(name, dir_fd=directory, follow_symlinks=False).st_mtime_ns, name)
                )
    for _, name in sorted(ages, reverse=True)[KEEP:]:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=directory)
