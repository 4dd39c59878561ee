"""The Mesos fetcher: a task's ``CommandInfo.uris`` put into its sandbox before it starts.

As Mesos' fetcher does (``src/launcher/fetcher.cpp``, ``docs/fetcher.md``), each URI in
turn:

- ``http://`` and ``https://`` URIs are downloaded (redirects followed, certificates
  verified), ``file://`` URIs and absolute paths copied;
- the file is named ``output_file`` (a relative path inside the sandbox, its directories
  made as needed), else the last component of the URI's path;
- ``executable`` makes it mode ``0755``, and such a file is never extracted; otherwise,
  with ``extract`` (the default), an archive known by its name (``.tar``, ``.tar.gz``,
  ``.tgz``, ``.tar.bz2``, ``.tbz2``, ``.tar.xz``, ``.txz``, ``.zip``; ``.gz``, one
  compressed file) is unpacked into the sandbox's top directory. Downloaded directly,
  the archive stays beside what it held; from the cache, only what it held is there.
  Kept from an archive: directories, regular files with their permission bits (less
  set-user-ID, set-group-ID, sticky and what a ``022`` umask takes off, as libarchive
  extracts them for Mesos), modification times, symbolic and hard links;
- ``cache`` fetches it through a per-user cache (``<cache_dir>/<uid>/``): a URI is
  downloaded once per user, then copied or extracted from there. The cache is bounded
  (``cache_size`` per user, 2 GiB by default as Mesos' ``--fetcher_cache_size``): the
  least recently used entries make room, and a file larger than the bound is used for
  this fetch and then dropped. Concurrent fetches of one URI download it once (a
  ``flock`` per entry); nothing partial is ever taken for an entry.

The fetch runs in a helper process, as Mesos runs ``mesos-fetcher``: a fresh
interpreter (never a fork of a threaded front end) that dies with its front end, gets
its plan through a pipe (URIs may hold credentials: never a command line), and gives
up root for the task's user before it reads or writes anything. So a ``file://`` URI
is read with the task's user's permissions (a ``nobody`` task cannot fetch
``/etc/shadow``), and what it writes is the task user's. The sandbox reaches it as an
open directory, and every file it makes is reached from there without following a
symbolic link (``openat2`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``, ``O_NOFOLLOW``,
new files written under a temporary name then renamed into place): a link a pod's other
task planted in the sandbox is replaced, never written through.

An archive is untrusted: a member with ``..`` in its path, a symbolic link that leads
outside the sandbox (an absolute target, too many ``..``, or through another link), a
hard link to anything but a regular file inside it, a member whose path goes through a
link, a device node or a FIFO: each fails the fetch, naming the member. A leading
``/`` is dropped, as Mesos does.

Every socket operation (connecting, the TLS handshake, each read) is bounded by
``timeout``, so a server that never answers fails the launch instead of holding it; a
name lookup is bounded by the system resolver's own timeout. A launch killed meanwhile
kills the helper at once. A failure is one :class:`~mesos_secrets.errors.FetchError`
line, ``Failed to fetch '<uri>': <what>`` (Mesos' words), with a user and password in
the URI masked (``https://***@host/…``); whatever the fetch had made in the sandbox and
in the cache is removed.

Why urllib3: it is installed with every front end already (requests and hvac stand on
it), and it exposes what a fetcher needs and ``requests`` hides: a timeout on each
socket operation, the raw body (``decode_content=False``, so a ``.tar.gz`` served with
``Content-Encoding: gzip`` stays the archive it is), redirects that drop the
``Authorization`` header when they leave the host, and an ``SSLContext`` built before
the helper gives up root.

Not done, unlike Mesos: ``ftp://``, ``ftps://`` and the schemes of a Hadoop client
(``hdfs://``, ``s3://``…); relative paths (Mesos' ``--frameworks_home``); proxies from
``http_proxy``. Also unlike Mesos, the default name is the last component of the URI's
*path* (a query string is not part of it), and an archive is recognised by the name
it gets in the sandbox, from the cache too.
"""

from __future__ import annotations

import base64
import bz2  # noqa: F401 (loaded before the helper gives up root: tarfile imports it late)
import contextlib
import errno
import fcntl
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import secrets
import select
import signal
import ssl
import stat
import subprocess
import sys
import tarfile
import time
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from encodings import (  # noqa: F401 (codecs used after the helper gives up root)
    cp437,  # zip member names
    idna,  # host names: socket encodes them so
    latin_1,  # HTTP headers
)
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import attrs
import urllib3
from urllib3 import exceptions as http_errors
from urllib3.util import ssl_ as urllib3_ssl

from . import linux, nofollow
from .errors import ConfigError, FetchError, LaunchCancelled, masked_uri, printable
from .isolator import TaskUser
from .mesos import CommandURI

if TYPE_CHECKING:
    from .images import Progress

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_TIMEOUT",
    "Fetcher",
    "default_cache_dir",
    "fetch",
]

log = logging.getLogger(__name__)

_E = TypeVar("_E", bound=BaseException)

#: Each user's share of the cache, as Mesos' default ``--fetcher_cache_size`` (2 GB).
DEFAULT_CACHE_SIZE = 2 << 30
#: Seconds each socket operation may take, as Mesos' ``--fetcher_stall_timeout``.
DEFAULT_TIMEOUT = 60.0
#: Permission bits taken off what is written, as the agent's usual umask does.
UMASK = 0o022
#: Extensions of the archives unpacked (``.gz`` alone: one compressed file), as Mesos'.
ARCHIVES = (".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip")
MAX_REDIRECTS = 10

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 16
_PROGRESS_EVERY_S = 0.25
_POLL_S = 0.1
_MAX_LINK_HOPS = 40
_MAX_LINK_TARGET = 4096
_ENTRY = re.compile(r"[0-9a-f]{64}")
_PARTIAL = re.compile(r"([0-9a-f]{64})\.part-[0-9a-f]{32}")
_USER_DIR = re.compile(r"[0-9]+")
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(i?B)?", re.IGNORECASE)


def default_cache_dir() -> Path:
    """Beside the image store: ``/var/lib/mesos-secrets/fetcher`` for root,
    ``~/.cache/mesos-secrets/fetcher`` (``$XDG_CACHE_HOME``) otherwise."""
    from .containerizer.runtime import default_fetcher_cache_dir  # noqa: PLC0415 (not in the helper)

    return default_fetcher_cache_dir()


# --- URIs ------------------------------------------------------------------------------


def shown_uri(value: str) -> str:
    """A URI as it may be printed (:func:`~mesos_secrets.errors.masked_uri`), cut to
    500 characters."""
    return masked_uri(value, 500)


@attrs.frozen
class _Item:
    """One URI, read and checked: where it comes from, where it goes, what is done."""

    #: As given (it may hold credentials: never printed, never logged).
    value: str = attrs.field(repr=False)
    shown: str
    #: ``http`` (http and https) or ``file``.
    kind: str
    #: For http: the URL without its user and password; for file: the local path.
    source: str = attrs.field(repr=False)
    #: ``user:password`` from the URI, percent-decoded (sent as Basic authentication).
    auth: str | None = attrs.field(repr=False)
    #: The file's path in the sandbox, as components.
    output: tuple[str, ...]
    executable: bool
    extract: bool
    cache: bool

    @property
    def archive(self) -> str | None:
        """``tar``, ``zip`` or ``gz`` if the file is extracted, else None."""
        if self.executable or not self.extract:
            return None
        name = self.output[-1]
        if name.endswith(ARCHIVES):
            return "zip" if name.endswith(".zip") else "tar"
        return "gz" if name.endswith(".gz") else None

    def to_plan(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "shown": self.shown,
            "kind": self.kind,
            "source": self.source,
            "auth": self.auth,
            "output": list(self.output),
            "executable": self.executable,
            "extract": self.extract,
            "cache": self.cache,
        }

    @classmethod
    def from_plan(cls, raw: Mapping[str, Any]) -> _Item:
        return cls(**{**raw, "output": tuple(raw["output"])})


def _read_uri(uri: CommandURI) -> _Item:
    """Check a URI as Mesos' ``Fetcher::validateUri`` and ``validateOutputFile`` do, and a
    little more; a :class:`FetchError` naming it if it cannot be fetched."""
    value = uri.value.lstrip()  # Mesos trims leading whitespace
    shown = shown_uri(value)

    def refuse(reason: str) -> NoReturn:
        raise FetchError(f"Failed to fetch '{shown}': {reason}", uri=shown)

    if any(c in value for c in "\\'\0") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        refuse("Illegal characters in URI")
    kind, source, auth, path = _source(value, refuse)
    basename = path.rstrip("/").rpartition("/")[2]
    if uri.output_file is not None:
        output = _output_file(uri.output_file, refuse)
    elif basename in ("", ".", ".."):
        refuse(f"Malformed URI (missing path): {shown}")
    else:
        output = (basename,)
    return _Item(
        value=value,
        shown=shown,
        kind=kind,
        source=source,
        auth=auth,
        output=output,
        executable=bool(uri.executable),
        extract=uri.extract,
        cache=bool(uri.cache),
    )


def _source(value: str, refuse: Callable[[str], NoReturn]) -> tuple[str, str, str | None, str]:
    """(kind, source, auth, path) of a URI: see :class:`_Item`; ``path`` names the file."""
    index = value.find("://")
    scheme = value[:index].lower() if index > 1 else ""
    if scheme in ("http", "https"):
        try:
            url = urllib3.util.parse_url(value)
        except http_errors.LocationParseError:
            refuse("Malformed URI")
        if not url.host:
            refuse("Malformed URI (missing host)")
        auth = None
        if url.auth is not None:
            user, _, password = url.auth.partition(":")
            auth = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
        # The name as written (Mesos does not decode it), not as urllib3 normalised it.
        authority_and_path = value[index + 3 :].split("#", 1)[0].split("?", 1)[0]
        path = (
            authority_and_path[authority_and_path.find("/") :] if "/" in authority_and_path else ""
        )
        return "http", url._replace(auth=None, fragment=None).url, auth, path
    if scheme == "file" or (not scheme and value.startswith("/")):
        path = value[len("file://") :] if scheme else value
        if scheme and path.startswith("localhost"):
            path = path[len("localhost") :]  # as Mesos
        if not path.startswith("/"):
            refuse("File URI only supports absolute paths")
        return "file", path, None, path
    if not scheme and index < 0:
        refuse(
            "a relative path needs Mesos' frameworks home, which is not supported here: "
            "give an absolute path or a file:// URI"
        )
    return refuse(
        f"unsupported URI scheme '{printable(value[: max(index, 0)], 40)}' (supported: "
        "http, https, file, and absolute paths)"
    )


def _output_file(output_file: str, refuse: Callable[[str], NoReturn]) -> tuple[str, ...]:
    if not output_file:
        refuse("URI output file path is empty")
    parts = tuple(p for p in output_file.split("/") if p not in ("", "."))
    if output_file.startswith("/") or ".." in parts:
        refuse(f"URI output file must be within the sandbox directory ('{printable(output_file)}')")
    if not parts:
        refuse("URI output file path is empty")
    return parts


# --- the front end's side --------------------------------------------------------------


def _parse_size(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"{where} must be a size such as 2147483648, 512MiB or 2GiB")
    factor = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(match[1]) * factor[match[2].upper()]


class Fetcher:
    """Puts URIs into sandboxes; one per front end (it holds no open resource).

    ``cache_dir``: where the per-user caches live (default :func:`default_cache_dir`,
    made the first time a URI is cached). ``cache_size``: each user's bound, in bytes.
    ``timeout``: seconds each socket operation may take. ``ca_bundle``: the certificates
    trusted for https (default ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, else the
    system's). ``progress`` is called as the image provisioner's is, with
    ``("fetch", uri, 0, 0)``, ``("bytes", uri, done, total)`` at most four times a
    second during a download (``total`` 0 when the server does not say), and
    ``("fetched", uri, size, size)``; the URI as it may be printed.
    """

    def __init__(
        self,
        cache_dir: Path | str | None = None,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        ca_bundle: Path | str | None = None,
        progress: Progress | None = None,
    ) -> None:
        if not 0 < timeout <= sys.float_info.max:
            raise ConfigError("the fetcher's timeout must be a positive number of seconds")
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache_size = cache_size
        self.timeout = float(timeout)
        self.ca_bundle = str(ca_bundle) if ca_bundle is not None else None
        self.progress = progress

    @classmethod
    def from_config(
        cls, table: Mapping[str, Any] | None, *, progress: Progress | None = None
    ) -> Fetcher:
        """From the configuration's ``[fetcher]`` table: ``cache_dir``, ``cache_size``
        (bytes, or ``"512MiB"``), ``timeout`` (seconds), ``ca_bundle``."""
        table = dict(table or {})
        known = {"cache_dir", "cache_size", "timeout", "ca_bundle"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"unknown [fetcher] setting {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(known))})"
            )
        for name in ("cache_dir", "ca_bundle"):
            if name in table and not (isinstance(table[name], str) and table[name]):
                raise ConfigError(f"[fetcher] '{name}' must be a path")
        timeout = table.get("timeout", DEFAULT_TIMEOUT)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= sys.float_info.max
        ):
            raise ConfigError("[fetcher] 'timeout' must be a positive number of seconds")
        return cls(
            table.get("cache_dir"),
            cache_size=_parse_size(
                table.get("cache_size", DEFAULT_CACHE_SIZE), "[fetcher] 'cache_size'"
            ),
            timeout=float(timeout),
            ca_bundle=table.get("ca_bundle"),
            progress=progress,
        )

    @property
    def cache_dir(self) -> Path:
        if self._cache_dir is None:
            self._cache_dir = default_cache_dir()
        return self._cache_dir

    def fetch(
        self,
        uris: Iterable[CommandURI],
        sandbox: Path | str,
        *,
        user: TaskUser | str | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        """Put every URI into ``sandbox`` as ``user`` (default: whoever runs this).

        ``sandbox`` must be a directory the user may write to (the containerizer hands
        it over first). ``cancelled`` is asked ten times a second: once it answers true,
        the fetch stops with :class:`LaunchCancelled`. Either way, on failure nothing of
        this fetch is left in the sandbox or the cache.
        """
        items = [_read_uri(uri) for uri in uris]
        if not items:
            return
        task_user = _task_user(user)
        try:
            sandbox_fd = os.open(sandbox, _DIR_FLAGS)
        except OSError as error:
            raise FetchError(
                f"Failed to fetch '{items[0].shown}': cannot open the sandbox "
                f"'{printable(str(sandbox))}': {error.strerror}",
                uri=items[0].shown,
            ) from None
        cache_fd = -1
        try:
            if any(item.cache for item in items):
                cache_fd = self._user_cache(task_user, items[0].shown)
            plan = {
                "items": [item.to_plan() for item in items],
                "uid": task_user.uid,
                "gid": task_user.gid,
                "groups": list(task_user.groups),
                "parent": os.getpid(),
                "sandbox_fd": sandbox_fd,
                "cache_fd": cache_fd,
                "cache_size": self.cache_size,
                "timeout": self.timeout,
                "ca": self._trusted(items),
                "token": secrets.token_hex(16),
            }
            _Helper(plan, self.progress, sandbox_fd, cache_fd).run(cancelled)
        finally:
            os.close(sandbox_fd)
            if cache_fd >= 0:
                os.close(cache_fd)

    def recover(self) -> None:
        """Remove the partial downloads that fetches which died left in the cache (only
        those no live fetch is writing): the cache this fetcher was given, or has used."""
        directory = self._cache_dir
        if directory is None:
            return
        try:
            root = os.open(directory, _DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as error:
            log.error("cannot open the fetcher cache '%s': %s", directory, error.strerror)
            return
        try:
            for name in os.listdir(root):
                if not _USER_DIR.fullmatch(name):
                    continue
                try:
                    user_fd = os.open(name, _DIR_FLAGS, dir_fd=root)
                except OSError:
                    continue
                try:
                    removed = _remove_partials(user_fd)
                except OSError as error:
                    log.error("cannot clean the fetcher cache %s/%s: %s", directory, name, error)
                    continue
                finally:
                    os.close(user_fd)
                if removed:
                    log.warning(
                        "removed %d partial download(s) from the fetcher cache %s/%s",
                        removed,
                        directory,
                        name,
                    )
        finally:
            os.close(root)

    def _trusted(self, items: Sequence[_Item]) -> str | None:
        """The certificates trusted for https, read here (the helper may not read them)."""
        if not any(item.source.startswith("https:") for item in items if item.kind == "http"):
            return None
        path = (
            self.ca_bundle
            or os.environ.get("SSL_CERT_FILE")
            or os.environ.get("REQUESTS_CA_BUNDLE")
        )
        if path is None:
            return None
        try:
            with open(path, encoding="ascii", errors="replace") as bundle:
                return bundle.read(16 << 20)
        except OSError as error:
            raise ConfigError(
                f"cannot read the fetcher's CA bundle '{printable(path)}': {error.strerror}"
            ) from None

    def _user_cache(self, user: TaskUser, shown: str) -> int:
        """The user's cache directory, opened: ``<cache_dir>/<uid>``, theirs, ``0700``,
        in a root that is ours and that no one else can enter or write to."""
        root = self.cache_dir

        def refuse(why: str) -> FetchError:
            return FetchError(
                f"Failed to fetch '{shown}': the fetcher cache '{printable(str(root))}' is "
                f"not safe to use: {why}",
                uri=shown,
            )

        me = os.geteuid()
        try:
            root.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(root, 0o700)
            root_fd = os.open(root, _DIR_FLAGS)
        except OSError as error:
            raise FetchError(
                f"Failed to fetch '{shown}': cannot use the fetcher cache "
                f"'{printable(str(root))}': {error.strerror}",
                uri=shown,
            ) from None
        try:
            info = os.fstat(root_fd)
            if info.st_uid != me:
                raise refuse(f"it belongs to uid {info.st_uid}")
            if info.st_mode & 0o022:
                raise refuse(f"others can write to it (mode {stat.S_IMODE(info.st_mode):04o})")
            name = str(user.uid)
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=root_fd)
            user_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
        except OSError as error:
            os.close(root_fd)
            raise FetchError(
                f"Failed to fetch '{shown}': cannot use the fetcher cache "
                f"'{printable(str(root))}': {error.strerror}",
                uri=shown,
            ) from None
        os.close(root_fd)
        try:
            info = os.fstat(user_fd)
            if info.st_uid == me != user.uid:
                # Only we can make anything in the root: it is ours to hand over (new, or
                # left so by a front end that died before it did).
                os.fchown(user_fd, user.uid, user.gid)
                info = os.fstat(user_fd)
        except OSError as error:
            os.close(user_fd)
            raise FetchError(
                f"Failed to fetch '{shown}': cannot use the fetcher cache "
                f"'{printable(str(root))}': {error.strerror}",
                uri=shown,
            ) from None
        if info.st_uid != user.uid or info.st_mode & 0o077:
            os.close(user_fd)
            raise refuse(
                f"'{name}' must be a directory of uid {user.uid}, mode 0700 (it is uid "
                f"{info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o})"
            )
        return user_fd


def fetch(
    uris: Iterable[CommandURI],
    sandbox: Path | str,
    *,
    user: TaskUser | str | None = None,
    cache_dir: Path | str | None = None,
    cache_size: int = DEFAULT_CACHE_SIZE,
    timeout: float = DEFAULT_TIMEOUT,
    ca_bundle: Path | str | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Put ``uris`` into ``sandbox`` as ``user``: :meth:`Fetcher.fetch` of a
    :class:`Fetcher` made with the other arguments."""
    Fetcher(
        cache_dir, cache_size=cache_size, timeout=timeout, ca_bundle=ca_bundle, progress=progress
    ).fetch(uris, sandbox, user=user, cancelled=cancelled)


def _task_user(user: TaskUser | str | None) -> TaskUser:
    if isinstance(user, TaskUser):
        return user
    from .containerizer.launcher import resolve_user  # noqa: PLC0415 (the pipeline imports us)

    return resolve_user(user)


def _describe(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-status).name}"
        return f"was killed by signal {-status}"
    return f"exited with status {status}"


class _Helper:
    """The helper process, seen from the front end: started, listened to (progress, what
    it made), stopped when the launch is cancelled or interrupted, and undone after any
    failure."""

    def __init__(
        self, plan: dict[str, Any], progress: Progress | None, sandbox_fd: int, cache_fd: int
    ) -> None:
        self.plan = plan
        self.progress = progress
        self.sandbox_fd = sandbox_fd
        self.cache_fd = cache_fd
        self.current: str = plan["items"][0]["shown"]
        #: ("made", path, identity) | ("temp", path, None) | ("cache", name, None)
        self.journal: list[tuple[str, str, tuple[int, int] | None]] = []
        self.error: str | None = None
        self.ok = False
        self._buffer = b""

    def run(self, cancelled: Callable[[], bool] | None) -> None:
        package_root = str(Path(__file__).resolve().parent.parent)
        bootstrap = (
            f"import sys; sys.path.insert(0, {package_root!r}); "
            "from mesos_secrets.fetcher import _helper_main; _helper_main()"
        )
        fds = [fd for fd in (self.sandbox_fd, self.cache_fd) if fd >= 0]
        try:
            process = subprocess.Popen(  # noqa: S603 (a fixed program; the plan goes by pipe)
                [sys.executable, "-I", "-c", bootstrap],
                # As the container's init: the interpreter by a link no directory search
                # permission can hide.
                executable="/proc/self/exe",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                pass_fds=fds,
                env={"LC_ALL": "C.UTF-8"},
                cwd="/",
                close_fds=True,
                process_group=0,  # a terminal's ^C is for the front end, which stops us
            )
        except OSError as error:
            raise FetchError(
                f"Failed to fetch '{self.current}': cannot start the fetcher: {error.strerror}",
                uri=self.current,
            ) from None
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            try:
                process.stdin.write(json.dumps(self.plan).encode("utf-8"))
                process.stdin.close()
            except BrokenPipeError:
                pass  # it ended already: its status says how
            self._listen(process.stdout.fileno(), cancelled)
            status = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            self._drain(process.stdout.fileno())
            process.stdout.close()
            self._undo()
            raise
        process.stdout.close()
        if self.ok and status == 0:
            return
        self._undo()
        message = self.error or f"the fetcher {_describe(status)}"
        if not message.startswith("Failed to fetch '"):
            message = f"Failed to fetch '{self.current}': {message}"
        raise FetchError(message, uri=self.current)

    def _listen(self, fd: int, cancelled: Callable[[], bool] | None) -> None:
        while True:
            ready = select.select([fd], [], [], _POLL_S)[0]
            if cancelled is not None and cancelled():
                raise LaunchCancelled(f"the task was killed while '{self.current}' was fetched")
            if ready and not self._read(fd):
                return

    def _drain(self, fd: int) -> None:
        while select.select([fd], [], [], 0)[0] and self._read(fd):
            pass

    def _read(self, fd: int) -> bool:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            return False
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                self._handle(message)
        return True

    def _handle(self, message: Mapping[str, Any]) -> None:
        if isinstance(message.get("made"), str) and isinstance(message.get("id"), list):
            identity = message["id"]
            if len(identity) == 2 and all(isinstance(n, int) for n in identity):
                self.journal.append(("made", message["made"], (identity[0], identity[1])))
        elif isinstance(message.get("temp"), str):
            self.journal.append(("temp", message["temp"], None))
        elif isinstance(message.get("cache"), str):
            self.journal.append(("cache", message["cache"], None))
        elif _is_progress(message.get("progress")):
            event, detail, done, total = message["progress"]
            if event == "fetch":
                self.current = detail
            if self.progress is not None:
                self.progress(event, detail, done, total)
        elif isinstance(message.get("error"), str):
            self.error = printable(message["error"], 2000)
        elif message.get("ok") is True:
            self.ok = True

    def _undo(self) -> None:
        """Remove what the helper made, newest first, each only if it is still the file
        it made (cleanup as root walks a directory the task's user can write to)."""
        for kind, where, identity in reversed(self.journal):
            try:
                if kind == "cache":
                    if self.cache_fd >= 0 and _PARTIAL.fullmatch(where):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(where, dir_fd=self.cache_fd)
                    continue
                parts = where.split("/")
                if any(p in ("", ".", "..") for p in parts):
                    continue
                parent = "/".join(parts[:-1])
                try:
                    dir_fd = (
                        nofollow.open_directory(parent, dir_fd=self.sandbox_fd)
                        if parent
                        else os.dup(self.sandbox_fd)
                    )
                except OSError:
                    continue  # its directory is gone, or is not one any more
                try:
                    nofollow.remove_tree_at(dir_fd, parts[-1], expect=identity)
                finally:
                    os.close(dir_fd)
            except OSError as error:
                log.error("could not remove '%s' after a failed fetch: %s", where, error)


def _is_progress(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, str) for v in value[:2])
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value[2:])
    )


def _remove_partials(dir_fd: int, key: str | None = None) -> int:
    """Remove partial downloads (of ``key``, or of any entry no fetch holds) in a user's
    cache directory; returns how many."""
    removed = 0
    for name in os.listdir(dir_fd):
        match = _PARTIAL.fullmatch(name)
        if match is None or (key is not None and match[1] != key):
            continue
        lock = None if key is not None else _lock(dir_fd, match[1], blocking=False, create=False)
        if key is None and lock is None:
            continue  # a fetch is writing it
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
                removed += 1
        finally:
            if lock is not None and lock >= 0:
                os.close(lock)
    return removed


def _lock(dir_fd: int, key: str, *, blocking: bool = True, create: bool = True) -> int | None:
    """An exclusive ``flock`` on a cache entry's lock file: its fd, or None if another
    fetch holds it (not ``blocking``); -1 if there is no lock file (not ``create``).

    Eviction removes lock files with their entries, so a lock taken on a file that was
    removed meanwhile is taken again on the one now there."""
    name = f"{key}.lock"
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    while True:
        try:
            fd = os.open(name, flags | (os.O_CREAT if create else 0), 0o600, dir_fd=dir_fd)
        except FileNotFoundError:
            return -1
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"'{name}' is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            now = nofollow.stat_at(dir_fd, name)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and nofollow.identity(now) == nofollow.identity(os.fstat(fd)):
            return fd
        os.close(fd)


# --- the helper: runs as the task's user -----------------------------------------------


class _Failure(Exception):
    """What went wrong with the URI being fetched, in one line (no URI in it)."""


class _Reporter:
    """JSON lines to the front end: progress, what was made, the outcome."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, **message: Any) -> None:
        view = memoryview(json.dumps(message).encode("utf-8") + b"\n")
        while view:
            view = view[os.write(self.fd, view) :]


def _helper_main() -> None:
    """The helper's program: read the plan, give up root, fetch, say how it went."""
    reporter = _Reporter(sys.stdout.fileno())
    try:
        plan = json.loads(sys.stdin.buffer.read())
        pool = _http_pool(plan["timeout"], plan["ca"])
        _become(plan["uid"], plan["gid"], plan["groups"])
        linux.set_parent_death_signal(signal.SIGKILL)  # after the switch, which clears it
        if os.getppid() != plan["parent"]:
            return  # the front end died already
        os.umask(UMASK)
        _Worker(plan, reporter, pool).run()
        reporter.send(ok=True)
    except _Failure as failure:
        reporter.send(error=str(failure))
    except Exception as error:  # noqa: BLE001 (one line, never a traceback: it could quote a URI)
        reporter.send(error=f"the fetcher failed: {type(error).__name__}")
    sys.stdout.flush()


def _become(uid: int, gid: int, groups: Sequence[int]) -> None:
    """The task's user, for good (all three ids): no way back to root."""
    linux.disable_core_dumps()
    if os.geteuid() == 0 and uid != 0:
        os.setgroups(list(groups))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    # Not dumpable: the task's user cannot read the plan (URIs with credentials) from us.
    linux.set_dumpable(False)


def _http_pool(timeout: float, ca: str | None) -> urllib3.PoolManager:
    """Built while still root: the system's certificates may be readable by root only."""
    context = urllib3_ssl.create_urllib3_context()
    if ca:
        try:
            context.load_verify_locations(cadata=ca)
        except (ValueError, OSError) as error:  # ssl.SSLError is an OSError
            raise _Failure(
                f"the fetcher's CA bundle holds no usable certificate ({error})"
            ) from None
    else:
        context.load_default_certs()
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
        retries=urllib3.Retry(
            total=None,
            connect=0,
            read=0,
            status=0,
            other=0,
            redirect=MAX_REDIRECTS,
            raise_on_redirect=True,
            raise_on_status=False,
        ),
        ssl_context=context,
        cert_reqs="CERT_REQUIRED",
    )


class _Worker:
    """Fetches the plan's URIs, in order, into the sandbox (and through the cache)."""

    def __init__(self, plan: Mapping[str, Any], reporter: _Reporter, pool: urllib3.PoolManager):
        self.items = [_Item.from_plan(raw) for raw in plan["items"]]
        self.reporter = reporter
        self.pool = pool
        self.timeout: float = plan["timeout"]
        self.tree = _Tree(plan["sandbox_fd"], reporter, plan["token"])
        self.cache = (
            _Cache(plan["cache_fd"], plan["cache_size"], reporter, plan["token"])
            if plan["cache_fd"] >= 0
            else None
        )
        self._last_report = 0.0

    def run(self) -> None:
        for item in self.items:
            try:
                size = self._one(item)
            except _Failure as failure:
                raise _Failure(f"Failed to fetch '{item.shown}': {failure}") from None
            self.reporter.send(progress=["fetched", item.shown, size, size])
        # Last: a link made by one archive may have been turned outward by a later one.
        self.tree.check_links()

    def _one(self, item: _Item) -> int:
        self.reporter.send(progress=["fetch", item.shown, 0, 0])
        self.tree.current = item.shown
        if item.cache and self.cache is not None:
            with self.cache.entry(item, self._download) as (source, size):
                if item.archive is not None:
                    self._extract(item, source)
                else:
                    with self.tree.create(item.output, 0o755 if item.executable else 0o644) as out:
                        _copy(source, out, self._reporting(item, size), _writer(item.output))
                return size
        mode = 0o755 if item.executable else 0o644
        with self.tree.create(item.output, mode, keep_open=True) as out:
            size = self._download(item, out)
        try:
            if item.archive is not None:
                self._extract(item, out)
        finally:
            os.close(out)
        return size

    # -- downloads -------------------------------------------------------------------

    def _download(self, item: _Item, out: int) -> int:
        """Write what ``item`` names to ``out``; returns its size."""
        if item.kind == "file":
            return self._copy_local(item, out)
        return self._download_http(item, out)

    def _copy_local(self, item: _Item, out: int) -> int:
        path = item.source
        try:
            source = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as error:
            raise _Failure(f"cannot read '{printable(path)}': {error.strerror}") from None
        try:
            info = os.fstat(source)
            if not stat.S_ISREG(info.st_mode):
                raise _Failure(f"'{printable(path)}' is not a regular file")
            return _copy(
                source,
                out,
                self._reporting(item, info.st_size),
                _writer(item.output),
            )
        finally:
            os.close(source)

    def _download_http(self, item: _Item, out: int) -> int:
        headers = {"Accept-Encoding": "identity", "User-Agent": "mesos-secrets-fetcher"}
        if item.auth is not None:
            token = base64.b64encode(item.auth.encode("utf-8")).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        url = urllib3.util.parse_url(item.source)
        where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        try:
            response = self.pool.request(
                "GET", item.source, headers=headers, preload_content=False, decode_content=False
            )
        except http_errors.HTTPError as error:
            raise _Failure(self._http_failure(error, where)) from None
        try:
            if response.status != 200:
                raise _Failure(
                    f"Error downloading resource, received HTTP return code {response.status}"
                )
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else 0
            report = self._reporting(item, total)
            write = _writer(item.output)
            done = 0
            try:
                for chunk in response.stream(_CHUNK, decode_content=False):
                    write(out, chunk)
                    done += len(chunk)
                    report(done)
            except http_errors.HTTPError as error:
                raise _Failure(self._http_failure(error, where, done, total)) from None
            return done
        finally:
            response.release_conn()

    def _http_failure(  # noqa: PLR0912 (one branch per kind of failure)
        self, error: Exception, where: str, done: int = 0, total: int = 0
    ) -> str:
        """One line for an urllib3 error, composed here: its own text names the URL."""
        if isinstance(error, http_errors.MaxRetryError):
            if error.reason is None or isinstance(error.reason, http_errors.ResponseError):
                return f"Error downloading resource: more than {MAX_REDIRECTS} redirects"
            error = error.reason
        pool = getattr(error, "pool", None) or getattr(error, "conn", None)
        if pool is not None and getattr(pool, "host", None):
            where = f"{pool.host}:{pool.port}"
        seconds = f"{self.timeout:g}s"
        # The order matters: NameResolutionError is a NewConnectionError, which is a
        # ConnectTimeoutError.
        if isinstance(error, http_errors.NameResolutionError):
            reason = f"cannot resolve the name of {where}"
        elif isinstance(error, http_errors.NewConnectionError):
            cause = _cause(error, OSError)
            strerror = cause.strerror if cause is not None else None
            reason = f"cannot connect to {where}: {strerror or 'connection failed'}"
        elif isinstance(error, http_errors.ConnectTimeoutError):
            reason = f"{where} did not accept a connection within {seconds}"
        elif isinstance(error, http_errors.ReadTimeoutError):
            reason = f"{where} did not answer within {seconds}"
        elif isinstance(error, http_errors.SSLError):
            tls = _cause(error, ssl.SSLError)
            if isinstance(tls, ssl.SSLCertVerificationError):
                reason = (
                    f"certificate verify failed for {where}: {tls.verify_message} (is its CA "
                    "in the fetcher's ca_bundle?)"
                )
            else:
                reason = f"TLS with {where} failed: {getattr(tls, 'reason', None) or 'error'}"
        elif isinstance(error, http_errors.ProtocolError):
            if total:
                reason = f"the connection to {where} broke after {done} of {total} bytes"
            else:
                reason = f"the connection to {where} broke after {done} bytes"
        elif isinstance(error, http_errors.LocationValueError):
            reason = "the server redirected to an address that cannot be read"
        else:
            reason = f"{type(error).__name__} from {where}"
        return f"Error downloading resource: {printable(reason, 300)}"

    def _reporting(self, item: _Item, total: int) -> Callable[[int], None]:
        def report(done: int) -> None:
            now = time.monotonic()
            if now - self._last_report >= _PROGRESS_EVERY_S:
                self._last_report = now
                self.reporter.send(progress=["bytes", item.shown, done, total])

        self._last_report = time.monotonic()
        return report

    # -- archives --------------------------------------------------------------------

    def _extract(self, item: _Item, fd: int) -> None:
        """Unpack the archive open at ``fd`` into the sandbox's top directory."""
        name = item.output[-1]
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(os.dup(fd), "rb") as archive:
            try:
                if item.archive == "gz":
                    self._gunzip(archive, name)
                elif zipfile.is_zipfile(archive):
                    archive.seek(0)
                    _Unpacker(self.tree, name).unzip(archive)
                else:
                    archive.seek(0)
                    _Unpacker(self.tree, name).untar(archive)
            except _Failure as failure:
                raise _Failure(
                    f"Failed to extract archive '{printable(name)}': {failure}"
                ) from None
            except (
                tarfile.TarError,
                zipfile.BadZipFile,
                EOFError,
                OSError,
                lzma.LZMAError,
                zlib.error,
                RuntimeError,  # an encrypted zip member
                ValueError,
                UnicodeError,
            ) as error:
                reason = (
                    error.strerror
                    if isinstance(error, OSError) and error.strerror
                    else (str(error) or type(error).__name__)
                )
                raise _Failure(
                    f"Failed to extract archive '{printable(name)}': {printable(reason, 200)}"
                ) from None

    def _gunzip(self, archive: IO[bytes], name: str) -> None:
        target = name[: -len(".gz")]
        if target in ("", ".", ".."):
            raise _Failure("the file it holds would have no name")
        write = _writer((target,))
        with (
            gzip.GzipFile(fileobj=archive, mode="rb") as stream,
            self.tree.create((target,), 0o644) as out,
        ):
            while chunk := stream.read(_CHUNK):
                write(out, chunk)


def _cause(error: BaseException, kind: type[_E]) -> _E | None:
    """The ``kind`` of error behind one of urllib3's (its cause, context or argument)."""
    for candidate in (error.__cause__, error.__context__, *error.args):
        if isinstance(candidate, kind):
            return candidate
    return None


def _copy(
    source: int, out: int, report: Callable[[int], None], write: Callable[[int, bytes], None]
) -> int:
    """Copy a file open at ``source`` (from its start) to ``out``."""
    os.lseek(source, 0, os.SEEK_SET)
    done = 0
    while True:
        try:
            chunk = os.read(source, 1 << 20)
        except OSError as error:
            raise _Failure(f"cannot read it: {error.strerror}") from None
        if not chunk:
            return done
        write(out, chunk)
        done += len(chunk)
        report(done)


class _Tree:
    """The sandbox, written from its directory fd without following any link.

    Every file is written under a temporary name and renamed into place, so a link found
    at its name is replaced, never followed; directories are opened beneath the sandbox
    with no link in their path. What is made is reported to the front end, which
    removes it if the fetch fails.
    """

    def __init__(self, root: int, reporter: _Reporter, token: str) -> None:
        self.root = root
        self.reporter = reporter
        self.token = token
        self.counter = 0
        #: The URI being fetched, as it may be printed.
        self.current = ""
        #: Symbolic links made: (path components, URI, archive, member), checked at the end.
        self.links: list[tuple[tuple[str, ...], str, str, str]] = []

    def made(self, parts: Sequence[str], info: os.stat_result) -> None:
        self.reporter.send(made="/".join(parts), id=list(nofollow.identity(info)))

    def directory(self, parts: Sequence[str], *, create: bool = True) -> int:
        """An fd of the directory ``parts`` beneath the sandbox, made if need be."""
        where = "/".join(parts)
        if not parts:
            return os.dup(self.root)
        try:
            return nofollow.open_directory(where, dir_fd=self.root)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as error:
            raise self._not_followed(where, error) from None
        fd = os.dup(self.root)
        try:
            for depth, part in enumerate(parts):
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    new = True
                except FileExistsError:
                    new = False
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as error:
                    raise self._not_followed("/".join(parts[: depth + 1]), error) from None
                if new:
                    self.made(parts[: depth + 1], os.fstat(child))
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _not_followed(where: str, error: OSError) -> _Failure:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
            return _Failure(
                f"'{printable(where)}' goes through a symbolic link or a file; the fetcher "
                "never writes through links"
            )
        return _Failure(f"cannot make the directory '{printable(where)}': {error.strerror}")

    def _temporary(self, dir_fd: int, parts: Sequence[str]) -> str:
        self.counter += 1
        name = f".fetch-{self.token}-{self.counter}"
        self.reporter.send(temp="/".join([*parts[:-1], name]))
        return name

    def _into_place(self, dir_fd: int, temporary: str, parts: Sequence[str]) -> None:
        try:
            os.rename(temporary, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=dir_fd)
            what = "a directory" if error.errno in (errno.EISDIR, errno.ENOTEMPTY) else None
            raise _Failure(
                f"cannot put '{printable('/'.join(parts))}' in place: "
                f"{f'it is {what}' if what else error.strerror}"
            ) from None
        self.made(parts, os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False))

    @contextlib.contextmanager
    def create(
        self,
        parts: Sequence[str],
        mode: int,
        *,
        mtime: float | None = None,
        keep_open: bool = False,
    ) -> Iterator[int]:
        """A new file at ``parts``, written through the fd yielded, then put in place
        (with ``mode`` and ``mtime``) when the block ends without an error. With
        ``keep_open``, the fd stays open afterwards (the caller closes it)."""
        where = "/".join(parts)
        dir_fd = self.directory(parts[:-1])
        try:
            temporary = self._temporary(dir_fd, parts)
            try:
                fd = os.open(temporary, _NEW_FILE, 0o600, dir_fd=dir_fd)
            except OSError as error:
                raise _Failure(f"cannot write '{printable(where)}': {error.strerror}") from None
            try:
                yield fd
                os.fchmod(fd, mode & 0o777 & ~UMASK)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
                self._into_place(dir_fd, temporary, parts)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=dir_fd)
                os.close(fd)
                raise
            if not keep_open:
                os.close(fd)
        finally:
            os.close(dir_fd)

    def symlink(self, parts: Sequence[str], target: str, archive: str, member: str) -> None:
        if not self.stays_inside(parts[:-1], target):
            raise _Failure(
                f"member '{printable(member)}' is a symbolic link to '{printable(target, 200)}', "
                "outside the sandbox: refused"
            )
        dir_fd = self.directory(parts[:-1])
        try:
            temporary = self._temporary(dir_fd, parts)
            os.symlink(target, temporary, dir_fd=dir_fd)
            self._into_place(dir_fd, temporary, parts)
        finally:
            os.close(dir_fd)
        self.links.append((tuple(parts), self.current, archive, member))

    def hardlink(self, parts: Sequence[str], source: Sequence[str], member: str) -> None:
        shown = printable("/".join(source))

        def refuse(why: str) -> _Failure:
            return _Failure(f"member '{printable(member)}' is a hard link to '{shown}', {why}")

        if not source:
            raise refuse("which is not a file: refused")
        try:
            source_dir = self.directory(source[:-1], create=False)
        except FileNotFoundError:
            raise refuse("which is not in the sandbox") from None
        try:
            info = nofollow.stat_at(source_dir, source[-1])
            if info is None:
                raise refuse("which is not in the sandbox")
            if not stat.S_ISREG(info.st_mode):
                raise refuse("which is not a regular file: refused")
            dir_fd = self.directory(parts[:-1])
            try:
                temporary = self._temporary(dir_fd, parts)
                os.link(
                    source[-1],
                    temporary,
                    src_dir_fd=source_dir,
                    dst_dir_fd=dir_fd,
                    follow_symlinks=False,
                )
                self._into_place(dir_fd, temporary, parts)
            finally:
                os.close(dir_fd)
        except OSError as error:
            raise refuse(f"which cannot be linked: {error.strerror}") from None
        finally:
            os.close(source_dir)

    def stays_inside(self, start: Sequence[str], target: str) -> bool:
        """Whether a link in directory ``start`` to ``target`` leads inside the sandbox,
        following the links it goes through as they are now (up to 40 of them)."""
        if target.startswith("/") or not target:
            return False
        where = list(start)
        pending = target.split("/")
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not where:
                    return False
                where.pop()
                continue
            try:
                info = os.stat("/".join([*where, part]), dir_fd=self.root, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                info = None
            if info is not None and stat.S_ISLNK(info.st_mode):
                hops += 1
                link = os.readlink("/".join([*where, part]), dir_fd=self.root)
                if hops > _MAX_LINK_HOPS or link.startswith("/") or not link:
                    return False
                pending[:0] = link.split("/")
                continue
            where.append(part)
        return True

    def check_links(self) -> None:
        """Every link made is checked again once everything is in place: a link made
        later (by this archive or another one) may have turned an earlier one outward."""
        for parts, shown, archive, member in self.links:
            try:
                dir_fd = self.directory(parts[:-1], create=False)
            except (OSError, _Failure):
                continue  # replaced since by something of this fetch, itself checked
            try:
                info = nofollow.stat_at(dir_fd, parts[-1])
                if info is None or not stat.S_ISLNK(info.st_mode):
                    continue
                target = os.readlink(parts[-1], dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
            if not self.stays_inside(parts[:-1], target):
                raise _Failure(
                    f"Failed to fetch '{shown}': Failed to extract archive '{printable(archive)}': "
                    f"member "
                    f"'{printable(member)}' is a symbolic link that now leads outside the "
                    "sandbox, through links made after it: refused"
                )


class _Unpacker:
    """One archive's members, checked one by one, written into the sandbox's top
    directory through :class:`_Tree`."""

    def __init__(self, tree: _Tree, archive: str) -> None:
        self.tree = tree
        self.archive = archive
        #: Directories made from members, given their mode and time at the end (a
        #: read-only directory must stay writable until what it holds is written).
        self.directories: list[tuple[tuple[str, ...], int, float]] = []

    def parts(self, name: str) -> tuple[str, ...]:
        """A member's path as components beneath the sandbox; a leading '/' dropped (as
        Mesos joins it to the sandbox), '..' refused (as libarchive's SECURE_NODOTDOT)."""
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise _Failure(
                f"member '{printable(name, 200)}' has '..' in its path, which could lead "
                "outside the sandbox: refused"
            )
        return parts

    def untar(self, archive: IO[bytes]) -> None:
        with tarfile.open(fileobj=archive, mode="r:*") as tar:
            for member in tar:
                parts = self.parts(member.name)
                if member.isdir():
                    self.directory(parts, member.mode, member.mtime)
                elif member.isreg():
                    stream = tar.extractfile(member)
                    assert stream is not None
                    self.file(parts, stream, member.mode, member.mtime, member.name)
                elif member.issym():
                    self.symlink(parts, member.linkname, member.name)
                elif member.islnk():
                    self.link(parts, member.linkname, member.name)
                else:
                    self.refuse(member.name, _tar_kind(member))
        self.finish()

    def unzip(self, archive: IO[bytes]) -> None:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                parts = self.parts(info.filename)
                mode = info.external_attr >> 16
                kind = stat.S_IFMT(mode)
                mtime = _zip_time(info.date_time)
                if info.is_dir() or kind == stat.S_IFDIR:
                    self.directory(parts, mode or 0o755, mtime)
                elif kind == stat.S_IFLNK:
                    if info.file_size > _MAX_LINK_TARGET:
                        self.refuse(info.filename, "a symbolic link with too long a target")
                    target = os.fsdecode(zipped.read(info))
                    self.symlink(parts, target, info.filename)
                elif kind in (0, stat.S_IFREG):
                    with zipped.open(info) as stream:
                        self.file(parts, stream, mode or 0o644, mtime, info.filename)
                else:
                    self.refuse(info.filename, _mode_kind(kind))
        self.finish()

    def refuse(self, member: str, what: str) -> NoReturn:
        raise _Failure(f"member '{printable(member, 200)}' is {what}: refused")

    def directory(self, parts: tuple[str, ...], mode: int, mtime: float) -> None:
        if parts:
            os.close(self.tree.directory(parts))
            self.directories.append((parts, mode, mtime))

    def file(
        self, parts: tuple[str, ...], stream: IO[bytes], mode: int, mtime: float, member: str
    ) -> None:
        if not parts:
            self.refuse(member, "a file with no name")
        write = _writer(parts)
        with self.tree.create(parts, mode, mtime=mtime) as out:
            while chunk := stream.read(_CHUNK):
                write(out, chunk)

    def symlink(self, parts: tuple[str, ...], target: str, member: str) -> None:
        if not parts:
            self.refuse(member, "a symbolic link with no name")
        self.tree.symlink(parts, target, self.archive, member)

    def link(self, parts: tuple[str, ...], target: str, member: str) -> None:
        if not parts:
            self.refuse(member, "a hard link with no name")
        self.tree.hardlink(parts, self.parts(target), member)

    def finish(self) -> None:
        """Directories' modes and times, deepest first (a time changes as one writes in)."""
        for parts, mode, mtime in sorted(self.directories, key=lambda d: -len(d[0])):
            try:
                fd = nofollow.open_directory("/".join(parts), dir_fd=self.tree.root)
            except OSError:
                continue  # replaced since by a later member (which said so, or is a file)
            try:
                os.fchmod(fd, mode & 0o777 & ~UMASK)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


def _writer(parts: Sequence[str]) -> Callable[[int, bytes], None]:
    where = "/".join(parts)

    def write(fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as error:
            raise _Failure(f"cannot write '{printable(where)}': {error.strerror}") from None

    return write


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.ischr() or member.isblk():
        return "a device node"
    if member.isfifo():
        return "a FIFO"
    return f"of a type the fetcher does not extract ({member.type!r})"


def _mode_kind(kind: int) -> str:
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        return "a device node"
    if kind == stat.S_IFIFO:
        return "a FIFO"
    return "of a type the fetcher does not extract"


def _zip_time(date_time: tuple[int, int, int, int, int, int]) -> float:
    try:
        return time.mktime((*date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return time.time()


class _Cache:
    """A user's cache directory, as the helper (that user) sees it.

    ``<sha256 of the URI>`` is an entry, complete: it is downloaded to
    ``<key>.part-<token>`` and renamed once it is. ``<key>.lock`` is locked
    (``flock``) by whoever downloads or evicts the entry. Entries are used by fd, so an
    entry evicted while it is being copied from is still read whole.
    """

    def __init__(self, fd: int, size: int, reporter: _Reporter, token: str) -> None:
        self.fd = fd
        self.size = size
        self.reporter = reporter
        self.token = token

    @contextlib.contextmanager
    def entry(
        self, item: _Item, download: Callable[[_Item, int], int]
    ) -> Iterator[tuple[int, int]]:
        """The cached file of ``item``, downloaded first if need be: (fd, size)."""
        key = hashlib.sha256(item.value.encode("utf-8", "surrogatepass")).hexdigest()
        lock = _lock(self.fd, key)
        assert lock is not None
        fresh = False
        try:
            try:
                fd = os.open(key, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
                os.utime(fd)  # recently used
            except FileNotFoundError:
                _remove_partials(self.fd, key)
                fd = self._fill(key, item, download)
                fresh = True
        finally:
            os.close(lock)
        try:
            yield fd, os.fstat(fd).st_size
        finally:
            os.close(fd)
        if fresh:
            self._evict(key)

    def _fill(self, key: str, item: _Item, download: Callable[[_Item, int], int]) -> int:
        partial = f"{key}.part-{self.token}"
        self.reporter.send(cache=partial)
        try:
            fd = os.open(partial, _NEW_FILE, 0o600, dir_fd=self.fd)
        except OSError as error:
            raise _Failure(f"cannot write to the fetcher cache: {error.strerror}") from None
        try:
            download(item, fd)
            os.fsync(fd)
            os.rename(partial, key, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(partial, dir_fd=self.fd)
            raise
        return fd

    def _evict(self, keep: str) -> None:
        """Least recently used entries out until the cache fits its bound; ``keep`` too
        if it alone is larger (it was used, as Mesos uses one that outgrew its
        reservation). Entries being downloaded or evicted by others are left."""
        entries = []
        for name in os.listdir(self.fd):
            info = nofollow.stat_at(self.fd, name) if _ENTRY.fullmatch(name) else None
            if info is not None and stat.S_ISREG(info.st_mode):
                entries.append((info.st_mtime, info.st_size, name))
        total = sum(size for _, size, _ in entries)
        entries.sort()
        oversized = [e for e in entries if e[2] == keep and e[1] > self.size]
        for _, size, name in oversized + [e for e in entries if e[2] != keep]:
            if total <= self.size:
                return
            lock = _lock(self.fd, name, blocking=False)
            if lock is None or lock < 0:
                continue
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self.fd)
                    total -= size
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{name}.lock", dir_fd=self.fd)
            finally:
                os.close(lock)
