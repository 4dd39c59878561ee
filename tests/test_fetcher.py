"""The fetcher: real servers on loopback, real archives, a real unprivileged user.

Every attack test here was seen to fail with the protection it tries removed.
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import gzip
import hashlib
import http.server
import io
import logging
import lzma
import os
import pwd
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from mesos_secrets.errors import FetchError, LaunchCancelled, LaunchError
from mesos_secrets.fetcher import Fetcher, fetch, shown_uri
from mesos_secrets.mesos import CommandURI

from .certs import CertificateAuthority
from .conftest import requires_root

pytestmark = requires_root

NOBODY = pwd.getpwnam("nobody")
MTIME = 1_600_000_000


# --- servers ---------------------------------------------------------------------------


class Server:
    """An HTTP(S) server on a random loopback port, in a thread: files by path, and
    redirects, slow answers and bodies cut short on demand; it records each request."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.pause: dict[str, float] = {}  # seconds between chunks of the body
        self.cut: set[str] = set()  # the body stops halfway, the connection closes
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?")[0]
        self.requests.append((handler.path, handler.headers.get("Authorization")))
        if path in self.redirects:
            handler.send_response(302)
            handler.send_header("Location", self.redirects[path])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        body = self.files.get(path)
        if body is None:
            handler.send_error(404)
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if path in self.cut:
            handler.wfile.write(body[: len(body) // 2])
            handler.close_connection = True
            return
        for start in range(0, len(body), 1 << 16):
            handler.wfile.write(body[start : start + (1 << 16)])
            handler.wfile.flush()
            time.sleep(self.pause.get(path, 0))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def tls_server(authority: CertificateAuthority) -> Iterator[Server]:
    issued = authority.issue("fetcher-server", server=True)
    running = Server(tls=(issued.cert, issued.key))
    yield running
    running.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def refused_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


# --- sandboxes and archives ------------------------------------------------------------


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    path = tmp_path / "sandbox"
    path.mkdir()
    return path


@pytest.fixture
def nobody_sandbox(tmp_path: Path) -> Path:
    """A sandbox handed over to user nobody, as the containerizer hands one over."""
    path = tmp_path / "nobody-sandbox"
    path.mkdir()
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def fetcher(cache: Path) -> Fetcher:
    return Fetcher(cache, timeout=5)


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside every sandbox that anyone may enter (as a host's would be)."""
    path = Path(tempfile.mkdtemp(prefix="fetcher-outside-"))
    path.chmod(0o755)
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        if child.is_dir() and not child.is_symlink():
            child.rmdir()
        else:
            child.unlink()
    path.rmdir()


def uri(value: str, **fields: Any) -> CommandURI:
    return CommandURI(value=value, **fields)


def contents(root: Path) -> dict[str, str]:
    """Everything under ``root``: its path and what it is (a file's bytes, a link's target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = path.read_bytes().decode(errors="replace")
    return found


def leftovers(cache: Path) -> list[str]:
    """What is in the per-user caches besides lock files."""
    if not cache.exists():
        return []
    return sorted(
        str(p.relative_to(cache))
        for p in cache.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    )


def tar_member(
    name: str,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]], suffix: str = ".tar") -> bytes:
    compression = {
        ".tar": "",
        ".tar.gz": "gz",
        ".tgz": "gz",
        ".tar.bz2": "bz2",
        ".tbz2": "bz2",
        ".tar.xz": "xz",
        ".txz": "xz",
    }[suffix]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def zip_bytes(members: list[tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name, date_time=time.localtime(MTIME)[:6])
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def sample(suffix: str) -> bytes:
    """An archive with a directory, a file, an executable and a symbolic link (and, for
    tar, a hard link)."""
    if suffix == ".zip":
        return zip_bytes(
            [
                ("app/", b"", stat.S_IFDIR | 0o755),
                ("app/conf.txt", b"conf", stat.S_IFREG | 0o640),
                ("app/run.sh", b"#!/bin/sh\necho ran\n", stat.S_IFREG | 0o755),
                ("app/current", b"conf.txt", stat.S_IFLNK | 0o777),
            ]
        )
    return tar_bytes(
        [
            tar_member("app", kind=tarfile.DIRTYPE, mode=0o755),
            tar_member("app/conf.txt", b"conf", mode=0o640),
            tar_member("app/run.sh", b"#!/bin/sh\necho ran\n", mode=0o755),
            tar_member("app/current", kind=tarfile.SYMTYPE, link="conf.txt"),
            tar_member("app/same.txt", kind=tarfile.LNKTYPE, link="app/conf.txt"),
        ],
        suffix,
    )


def refused(error: pytest.ExceptionInfo[FetchError], *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


# --- what gets fetched -----------------------------------------------------------------


class TestSources:
    def test_http_file(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        """Named after the URI path's last component (a query is not part of it), mode
        0644, with exactly the bytes served."""
        server.files["/files/data.bin"] = bytes(range(256)) * 10
        fetcher.fetch([uri(server.url("/files/data.bin?version=3"))], sandbox)
        assert (sandbox / "data.bin").read_bytes() == bytes(range(256)) * 10
        assert stat.S_IMODE((sandbox / "data.bin").stat().st_mode) == 0o644
        assert server.paths() == ["/files/data.bin?version=3"]

    def test_name_as_written(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        """The default name is the URI's as written, as Mesos takes it (not decoded, not
        as an HTTP client normalises it)."""
        server.files["/my%20file.txt"] = b"spaced"
        server.files["/100%25.txt"] = b"percent"
        fetcher.fetch([uri(server.url("/my file.txt")), uri(server.url("/100%25.txt"))], sandbox)
        assert contents(sandbox) == {"my file.txt": "spaced", "100%25.txt": "percent"}

    def test_https_with_a_trusted_ca(
        self, tls_server: Server, authority: CertificateAuthority, sandbox: Path, cache: Path
    ) -> None:
        tls_server.files["/a.txt"] = b"over tls"
        fetch(
            [uri(tls_server.url("/a.txt"))], sandbox, cache_dir=cache, ca_bundle=authority.ca.cert
        )
        assert (sandbox / "a.txt").read_bytes() == b"over tls"

    def test_https_certificates_are_verified(
        self, tls_server: Server, sandbox: Path, fetcher: Fetcher
    ) -> None:
        """A server whose CA is not trusted gets nothing fetched from it."""
        tls_server.files["/a.txt"] = b"over tls"
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(tls_server.url("/a.txt"))], sandbox)
        refused(error, f"Failed to fetch '{tls_server.url('/a.txt')}'", "certificate verify failed")
        assert os.listdir(sandbox) == []

    def test_ca_bundle_from_the_environment(
        self,
        tls_server: Server,
        authority: CertificateAuthority,
        sandbox: Path,
        fetcher: Fetcher,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("SSL_CERT_FILE", str(authority.ca.cert))
        tls_server.files["/a.txt"] = b"over tls"
        fetcher.fetch([uri(tls_server.url("/a.txt"))], sandbox)
        assert (sandbox / "a.txt").read_bytes() == b"over tls"

    def test_file_uri_and_absolute_path(
        self, tmp_path: Path, sandbox: Path, fetcher: Fetcher
    ) -> None:
        source = tmp_path / "local.txt"
        source.write_bytes(b"local")
        fetcher.fetch(
            [uri(f"file://{source}", output_file="one"), uri(str(source), output_file="two")],
            sandbox,
        )
        assert contents(sandbox) == {"one": "local", "two": "local"}

    def test_redirects_are_followed(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        server.files["/real.txt"] = b"moved"
        server.redirects["/old.txt"] = server.url("/real.txt")
        fetcher.fetch([uri(server.url("/old.txt"))], sandbox)
        assert contents(sandbox) == {"old.txt": "moved"}

    def test_output_file(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        """output_file names the file, its directories made; the task's user owns them."""
        server.files["/x"] = b"x"
        fetcher.fetch([uri(server.url("/x"), output_file="./conf/app/settings.ini")], sandbox)
        assert contents(sandbox) == {
            "conf": "dir",
            "conf/app": "dir",
            "conf/app/settings.ini": "x",
        }

    def test_executable(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        """0755, and never extracted, even with an archive's name."""
        server.files["/tool.tar.gz"] = sample(".tar.gz")
        fetcher.fetch([uri(server.url("/tool.tar.gz"), executable=True)], sandbox)
        assert os.listdir(sandbox) == ["tool.tar.gz"]
        assert stat.S_IMODE((sandbox / "tool.tar.gz").stat().st_mode) == 0o755

    def test_owned_by_the_task_user(
        self, server: Server, nobody_sandbox: Path, fetcher: Fetcher
    ) -> None:
        server.files["/pkg.tgz"] = sample(".tgz")
        fetcher.fetch([uri(server.url("/pkg.tgz"), cache=True)], nobody_sandbox, user="nobody")
        owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in nobody_sandbox.rglob("*")}
        assert owners == {(NOBODY.pw_uid, NOBODY.pw_gid)}
        assert (nobody_sandbox / "app/run.sh").read_bytes().startswith(b"#!/bin/sh")

    @pytest.mark.parametrize(
        ("value", "words"),
        [
            ("ftp://example.com/a.txt", "unsupported URI scheme 'ftp'"),
            ("hdfs://namenode/a.txt", "unsupported URI scheme 'hdfs'"),
            ("relative/a.txt", "a relative path needs Mesos' frameworks home"),
            ("file://host/a.txt", "File URI only supports absolute paths"),
            ("http://example.com/", "Malformed URI (missing path)"),
            ("http://example.com", "Malformed URI (missing path)"),
            ("http://example.com/it's", "Illegal characters in URI"),
            ("http://example.com/a\\b", "Illegal characters in URI"),
            ("/tmp/..", "Malformed URI (missing path)"),
        ],
    )
    def test_refused_uris(self, value: str, words: str, sandbox: Path, fetcher: Fetcher) -> None:
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(value)], sandbox)
        refused(error, "Failed to fetch '", words)
        assert os.listdir(sandbox) == []

    @pytest.mark.parametrize(
        ("output_file", "words"),
        [
            ("", "URI output file path is empty"),
            ("/etc/cron.d/x", "URI output file must be within the sandbox directory"),
            ("a/../../x", "URI output file must be within the sandbox directory"),
            ("..", "URI output file must be within the sandbox directory"),
        ],
    )
    def test_refused_output_files(
        self, output_file: str, words: str, server: Server, sandbox: Path, fetcher: Fetcher
    ) -> None:
        server.files["/x"] = b"x"
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/x"), output_file=output_file)], sandbox)
        refused(error, words)
        assert server.requests == []
        assert os.listdir(sandbox) == []

    def test_progress(self, server: Server, sandbox: Path, cache: Path) -> None:
        """A download that takes a while reports its bytes, as image pulls do."""
        body = os.urandom(3 << 20)
        server.files["/big.bin"] = body
        server.pause["/big.bin"] = 0.02
        events: list[tuple[str, str, int, int]] = []
        fetch(
            [uri(server.url("/big.bin"))],
            sandbox,
            cache_dir=cache,
            progress=lambda *event: events.append(event),
        )
        shown = server.url("/big.bin")
        assert events[0] == ("fetch", shown, 0, 0)
        assert events[-1] == ("fetched", shown, len(body), len(body))
        middle = events[1:-1]
        assert middle
        assert all(e[0] == "bytes" and e[1] == shown and e[3] == len(body) for e in middle)
        assert [e[2] for e in middle] == sorted(e[2] for e in middle)


# --- archives --------------------------------------------------------------------------


class TestArchives:
    @pytest.mark.parametrize(
        "suffix", [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip"]
    )
    def test_formats(self, suffix: str, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        """Unpacked into the sandbox, the archive kept beside what it held; modes (less
        group and others' write), times and links kept."""
        server.files[f"/pkg{suffix}"] = sample(suffix)
        fetcher.fetch([uri(server.url(f"/pkg{suffix}"))], sandbox)
        expected = {
            f"pkg{suffix}": contents(sandbox)[f"pkg{suffix}"],
            "app": "dir",
            "app/conf.txt": "conf",
            "app/current": "-> conf.txt",
            "app/run.sh": "#!/bin/sh\necho ran\n",
        }
        if suffix != ".zip":
            expected["app/same.txt"] = "conf"
            assert (sandbox / "app/same.txt").stat().st_ino == (
                sandbox / "app/conf.txt"
            ).stat().st_ino
        assert contents(sandbox) == expected
        assert stat.S_IMODE((sandbox / "app/conf.txt").stat().st_mode) == 0o640
        assert stat.S_IMODE((sandbox / "app/run.sh").stat().st_mode) == 0o755
        assert abs((sandbox / "app/conf.txt").stat().st_mtime - MTIME) <= 2

    def test_single_gz(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        server.files["/notes.txt.gz"] = gzip.compress(b"notes")
        fetcher.fetch([uri(server.url("/notes.txt.gz"))], sandbox)
        assert contents(sandbox)["notes.txt"] == "notes"
        assert sorted(os.listdir(sandbox)) == ["notes.txt", "notes.txt.gz"]

    def test_extract_false(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        server.files["/pkg.zip"] = sample(".zip")
        fetcher.fetch([uri(server.url("/pkg.zip"), extract=False)], sandbox)
        assert os.listdir(sandbox) == ["pkg.zip"]

    def test_from_the_cache_only_what_it_held(
        self, server: Server, sandbox: Path, fetcher: Fetcher
    ) -> None:
        server.files["/pkg.tar.bz2"] = sample(".tar.bz2")
        fetcher.fetch([uri(server.url("/pkg.tar.bz2"), cache=True)], sandbox)
        assert sorted(os.listdir(sandbox)) == ["app"]

    def test_named_by_output_file_unpacked_at_the_top(
        self, server: Server, sandbox: Path, fetcher: Fetcher
    ) -> None:
        """The name in the sandbox says whether it is an archive; it is unpacked into the
        sandbox's top directory, as Mesos does."""
        server.files["/download"] = sample(".tar.xz")
        fetcher.fetch([uri(server.url("/download"), output_file="lib/pkg.txz")], sandbox)
        assert sorted(os.listdir(sandbox)) == ["app", "lib"]
        assert os.listdir(sandbox / "lib") == ["pkg.txz"]

    def test_special_bits_are_dropped(
        self, server: Server, sandbox: Path, fetcher: Fetcher
    ) -> None:
        """Set-user-ID, set-group-ID and sticky bits never come out of an archive, nor
        write permission for group and others."""
        server.files["/bits.tar"] = tar_bytes(
            [
                tar_member("suid", b"x", mode=0o4755),
                tar_member("sgid", b"x", mode=0o2775),
                tar_member("sticky", kind=tarfile.DIRTYPE, mode=0o1777),
                tar_member("open", b"x", mode=0o666),
            ]
        )
        fetcher.fetch([uri(server.url("/bits.tar"))], sandbox)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in sandbox.iterdir()}
        assert modes == {
            "suid": 0o755,
            "sgid": 0o755,
            "sticky": 0o755,
            "open": 0o644,
            "bits.tar": 0o644,
        }

    def test_absolute_members_stay_inside(
        self, server: Server, sandbox: Path, fetcher: Fetcher, outside: Path
    ) -> None:
        """A leading '/' is dropped, as Mesos joins members to the sandbox."""
        target = outside / "planted"
        server.files["/abs.tar"] = tar_bytes([tar_member(str(target), b"inside")])
        fetcher.fetch([uri(server.url("/abs.tar"))], sandbox)
        assert not target.exists()
        assert (sandbox / str(target).lstrip("/")).read_bytes() == b"inside"

    def test_not_an_archive(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        server.files["/broken.tar.gz"] = b"this is not gzip"
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/broken.tar.gz"))], sandbox)
        refused(error, "Failed to extract archive 'broken.tar.gz'")
        assert os.listdir(sandbox) == []


# --- the attacker's archives and sandboxes ---------------------------------------------


class TestAttacks:
    @pytest.mark.parametrize("suffix", [".tar", ".zip"])
    def test_dot_dot(
        self, suffix: str, server: Server, sandbox: Path, fetcher: Fetcher, tmp_path: Path
    ) -> None:
        """Zip slip and tar traversal: a member with '..' is refused, nothing written."""
        if suffix == ".zip":
            body = zip_bytes([("ok.txt", b"ok", 0o644), ("../escaped", b"x", 0o644)])
        else:
            body = tar_bytes([tar_member("ok.txt", b"ok"), tar_member("../escaped", b"x")])
        server.files[f"/evil{suffix}"] = body
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url(f"/evil{suffix}"))], sandbox)
        refused(error, "member '../escaped' has '..' in its path")
        assert not (tmp_path / "escaped").exists()
        assert os.listdir(sandbox) == []

    @pytest.mark.parametrize("target", ["/etc", "../../..", "../a/../../x", "", "/"])
    def test_symlink_outside(
        self, target: str, server: Server, sandbox: Path, fetcher: Fetcher
    ) -> None:
        server.files["/links.tar"] = tar_bytes(
            [
                tar_member("a", kind=tarfile.DIRTYPE),
                tar_member("a/link", kind=tarfile.SYMTYPE, link=target),
            ]
        )
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/links.tar"))], sandbox)
        refused(error, "member 'a/link' is a symbolic link to", "outside the sandbox: refused")
        assert os.listdir(sandbox) == []

    def test_zip_symlink_outside(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        server.files["/links.zip"] = zip_bytes([("etc", b"/etc", stat.S_IFLNK | 0o777)])
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/links.zip"))], sandbox)
        refused(error, "member 'etc' is a symbolic link to '/etc'")
        assert os.listdir(sandbox) == []

    def test_symlink_through_symlink(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        """A link that looks inside but goes through another link that leads up."""
        server.files["/chain.tar"] = tar_bytes(
            [
                tar_member("a/b", kind=tarfile.DIRTYPE),
                tar_member("a/b/up", kind=tarfile.SYMTYPE, link="../.."),  # the sandbox
                tar_member("escape", kind=tarfile.SYMTYPE, link="a/b/up/.."),
            ]
        )
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/chain.tar"))], sandbox)
        refused(error, "member 'escape' is a symbolic link to 'a/b/up/..'")
        assert os.listdir(sandbox) == []

    def test_symlink_turned_outward_later(
        self, server: Server, sandbox: Path, fetcher: Fetcher
    ) -> None:
        """The same, in the other order: the link checked first is fine when it is made,
        and points outside once the later one exists."""
        server.files["/chain.tar"] = tar_bytes(
            [
                tar_member("escape", kind=tarfile.SYMTYPE, link="a/b/up/.."),
                tar_member("a/b", kind=tarfile.DIRTYPE),
                tar_member("a/b/up", kind=tarfile.SYMTYPE, link="../.."),
            ]
        )
        server.files["/other.txt"] = b"x"
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/chain.tar")), uri(server.url("/other.txt"))], sandbox)
        refused(
            error,
            f"Failed to fetch '{server.url('/chain.tar')}': Failed to extract archive 'chain.tar'",
            "member 'escape' is a symbolic link that now leads outside",
        )
        assert os.listdir(sandbox) == []

    def test_symlink_then_a_file_through_it(
        self, server: Server, sandbox: Path, fetcher: Fetcher
    ) -> None:
        """A link (even one inside) then a member written through it: refused."""
        server.files["/through.tar"] = tar_bytes(
            [
                tar_member("real", kind=tarfile.DIRTYPE),
                tar_member("via", kind=tarfile.SYMTYPE, link="real"),
                tar_member("via/file", b"x"),
            ]
        )
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/through.tar"))], sandbox)
        refused(error, "'via' goes through a symbolic link")
        assert os.listdir(sandbox) == []

    @pytest.mark.parametrize("suffix", [".tar", ".zip"])
    def test_planted_link_to_a_directory(
        self, suffix: str, server: Server, sandbox: Path, fetcher: Fetcher, outside: Path
    ) -> None:
        """A link another task planted in the sandbox is never written through: not by
        an archive's member, not for an output_file's directory."""
        (sandbox / "conf").symlink_to(outside)
        if suffix == ".zip":
            server.files["/conf.zip"] = zip_bytes([("conf/app.ini", b"x", 0o644)])
        else:
            server.files["/conf.tar"] = tar_bytes([tar_member("conf/app.ini", b"x")])
        server.files["/x"] = b"x"
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url(f"/conf{suffix}"))], sandbox)
        refused(error, "'conf' goes through a symbolic link")
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/x"), output_file="conf/app.ini")], sandbox)
        refused(error, "'conf' goes through a symbolic link")
        assert os.listdir(outside) == []
        assert os.listdir(sandbox) == ["conf"]

    def test_planted_link_at_the_output_name(
        self, server: Server, sandbox: Path, fetcher: Fetcher, outside: Path
    ) -> None:
        """A link at the very name fetched is replaced, not followed: what it pointed to
        is unchanged."""
        victim = outside / "victim"
        victim.write_bytes(b"untouched")
        (sandbox / "app.ini").symlink_to(victim)
        server.files["/app.ini"] = b"fetched"
        fetcher.fetch([uri(server.url("/app.ini"))], sandbox)
        assert victim.read_bytes() == b"untouched"
        assert not (sandbox / "app.ini").is_symlink()
        assert (sandbox / "app.ini").read_bytes() == b"fetched"

    def test_hard_link_outside(
        self, server: Server, sandbox: Path, fetcher: Fetcher, outside: Path
    ) -> None:
        """A hard link to a file outside (by '..' or by an absolute path) is refused."""
        secret = outside / "secret"
        secret.write_bytes(b"root's")
        server.files["/up.tar"] = tar_bytes(
            [tar_member("h", kind=tarfile.LNKTYPE, link=f"../../../../../../../../..{secret}")]
        )
        server.files["/abs.tar"] = tar_bytes(
            [tar_member("h", kind=tarfile.LNKTYPE, link=str(secret))]
        )
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/up.tar"))], sandbox)
        refused(error, "has '..' in its path")
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/abs.tar"))], sandbox)
        refused(error, "member 'h' is a hard link to", "which is not in the sandbox")
        assert secret.stat().st_nlink == 1
        assert os.listdir(sandbox) == []

    def test_hard_link_to_a_link(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        server.files["/l.tar"] = tar_bytes(
            [
                tar_member("target", b"x"),
                tar_member("s", kind=tarfile.SYMTYPE, link="target"),
                tar_member("h", kind=tarfile.LNKTYPE, link="s"),
            ]
        )
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/l.tar"))], sandbox)
        refused(error, "member 'h' is a hard link to 's', which is not a regular file")

    @pytest.mark.parametrize(
        ("kind", "what"),
        [
            (tarfile.CHRTYPE, "a device node"),
            (tarfile.BLKTYPE, "a device node"),
            (tarfile.FIFOTYPE, "a FIFO"),
        ],
    )
    def test_special_files(
        self, kind: bytes, what: str, server: Server, sandbox: Path, fetcher: Fetcher
    ) -> None:
        info, _ = tar_member("dev/mem", kind=kind, mode=0o666)
        info.devmajor, info.devminor = 1, 1
        server.files["/dev.tar"] = tar_bytes([(info, b"")])
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/dev.tar"))], sandbox)
        refused(error, f"member 'dev/mem' is {what}: refused")
        assert os.listdir(sandbox) == []

    def test_zip_device(self, server: Server, sandbox: Path, fetcher: Fetcher) -> None:
        server.files["/dev.zip"] = zip_bytes([("null", b"", stat.S_IFCHR | 0o666)])
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/dev.zip"))], sandbox)
        refused(error, "member 'null' is a device node: refused")

    def test_root_only_file_for_a_nobody_task(
        self, nobody_sandbox: Path, fetcher: Fetcher, outside: Path
    ) -> None:
        """A file:// URI is read with the task's user's permissions, as Mesos' fetcher
        runs as that user: nobody cannot fetch a file only root may read."""
        readable = outside / "public"
        readable.write_bytes(b"anyone")
        readable.chmod(0o644)
        private = outside / "shadow"
        private.write_bytes(b"root only")
        private.chmod(0o600)
        fetcher.fetch([uri(f"file://{readable}")], nobody_sandbox, user="nobody")
        assert (nobody_sandbox / "public").read_bytes() == b"anyone"
        for value in (f"file://{private}", str(private)):
            with pytest.raises(FetchError) as error:
                fetcher.fetch([uri(value, output_file="stolen")], nobody_sandbox, user="nobody")
            refused(error, f"cannot read '{private}': Permission denied")
        with pytest.raises(FetchError):
            fetcher.fetch(
                [uri(str(private), cache=True, output_file="stolen")], nobody_sandbox, user="nobody"
            )
        assert os.listdir(nobody_sandbox) == ["public"]

    @pytest.mark.parametrize("kind", ["device", "fifo"])
    def test_not_a_regular_file(
        self, kind: str, sandbox: Path, fetcher: Fetcher, tmp_path: Path
    ) -> None:
        """A device or a FIFO as a file:// URI is refused (/dev/zero would never end, a
        FIFO could wait for ever)."""
        path = Path("/dev/null")
        if kind == "fifo":
            path = tmp_path / "fifo"
            os.mkfifo(path)
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(str(path))], sandbox)
        refused(error, f"'{path}' is not a regular file")
        assert os.listdir(sandbox) == []

    def test_the_helper_is_the_task_users_and_not_dumpable(
        self, server: Server, nobody_sandbox: Path, fetcher: Fetcher
    ) -> None:
        """While it fetches, the helper is the task's user for good (real, effective and
        saved ids), and not dumpable: that user cannot read its memory or environment
        through /proc (the URIs' credentials are in it), whose files root then owns."""
        server.files["/slow"] = os.urandom(1 << 20)
        server.pause["/slow"] = 0.05
        seen: list[tuple[list[str], int]] = []

        def look() -> bool:
            for pid in helpers():
                with contextlib.suppress(OSError):
                    status = Path(f"/proc/{pid}/status").read_text().splitlines()
                    uids = next(line.split()[1:] for line in status if line.startswith("Uid:"))
                    seen.append((uids, os.stat(f"/proc/{pid}/environ").st_uid))
            return False

        fetcher.fetch(
            [uri(server.url("/slow").replace("://", "://user:pw@"))],
            nobody_sandbox,
            user="nobody",
            cancelled=look,
        )
        # (It starts as root, as Mesos' fetcher does, to read its plan.)
        as_nobody = [owner for uids, owner in seen if uids == [str(NOBODY.pw_uid)] * 4]
        assert as_nobody
        assert set(as_nobody) == {0}
        assert all(uids in ([str(NOBODY.pw_uid)] * 4, ["0"] * 4) for uids, _ in seen)


def helpers(parent: int | None = None) -> list[int]:
    """The fetcher helpers of this process (or of ``parent``) that still exist."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat_line = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if stat_line[1] != str(parent or os.getpid()) or stat_line[0] == "Z":
                continue
            if b"_helper_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
    return found


# --- the cache -------------------------------------------------------------------------


class TestCache:
    def test_hit(self, server: Server, tmp_path: Path, fetcher: Fetcher) -> None:
        """A second fetch of the same URI by the same user is served from the cache."""
        server.files["/pkg.tgz"] = sample(".tgz")
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            fetcher.fetch([uri(server.url("/pkg.tgz"), cache=True)], tmp_path / name)
        assert server.paths() == ["/pkg.tgz"]
        assert contents(tmp_path / "one") == contents(tmp_path / "two")

    def test_per_user(
        self, server: Server, sandbox: Path, nobody_sandbox: Path, fetcher: Fetcher, cache: Path
    ) -> None:
        """Each user has a cache of their own, only root may enter the cache's root."""
        server.files["/a.txt"] = b"a"
        fetcher.fetch([uri(server.url("/a.txt"), cache=True)], sandbox)
        fetcher.fetch([uri(server.url("/a.txt"), cache=True)], nobody_sandbox, user="nobody")
        assert server.paths() == ["/a.txt", "/a.txt"]
        assert stat.S_IMODE(cache.stat().st_mode) == 0o700
        user_dir = cache / str(NOBODY.pw_uid)
        assert (user_dir.stat().st_uid, stat.S_IMODE(user_dir.stat().st_mode)) == (
            NOBODY.pw_uid,
            0o700,
        )

    def test_a_user_directory_left_unfinished(
        self, server: Server, nobody_sandbox: Path, fetcher: Fetcher, cache: Path
    ) -> None:
        """A front end that died between making a user's directory and handing it over
        left it root's: it is handed over, not refused for ever. Another user's is
        refused."""
        (cache / str(NOBODY.pw_uid)).mkdir(mode=0o700, parents=True)
        cache.chmod(0o700)
        server.files["/a"] = b"a"
        fetcher.fetch([uri(server.url("/a"), cache=True)], nobody_sandbox, user="nobody")
        assert (cache / str(NOBODY.pw_uid)).stat().st_uid == NOBODY.pw_uid
        os.chown(cache / str(NOBODY.pw_uid), 1, 1)
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/a"), cache=True)], nobody_sandbox, user="nobody")
        refused(error, f"'{NOBODY.pw_uid}' must be a directory of uid {NOBODY.pw_uid}")

    def test_concurrent_fetches_download_once(
        self, server: Server, tmp_path: Path, fetcher: Fetcher
    ) -> None:
        server.files["/slow.bin"] = os.urandom(1 << 20)
        server.pause["/slow.bin"] = 0.02
        errors: list[BaseException] = []

        def one(name: str) -> None:
            (tmp_path / name).mkdir()
            try:
                fetcher.fetch([uri(server.url("/slow.bin"), cache=True)], tmp_path / name)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=one, args=(f"s{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert server.paths() == ["/slow.bin"]
        for i in range(4):
            assert (tmp_path / f"s{i}/slow.bin").read_bytes() == server.files["/slow.bin"]

    def test_bounded(self, server: Server, tmp_path: Path, cache: Path) -> None:
        """The least recently used entries make room; a file larger than the whole
        cache is used once, then dropped."""
        for name in ("a", "b", "c"):
            server.files[f"/{name}"] = name.encode() * 100
        server.files["/huge"] = b"h" * 1000
        fetcher = Fetcher(cache, cache_size=250)
        for i, name in enumerate(("a", "b", "a", "c", "huge")):
            (tmp_path / f"s{i}").mkdir()
            fetcher.fetch([uri(server.url(f"/{name}"), cache=True)], tmp_path / f"s{i}")
            time.sleep(0.01)  # distinct times of use
        assert (tmp_path / "s4/huge").read_bytes() == b"h" * 1000
        user_dir = cache / str(os.getuid())
        kept = {
            p.read_bytes()[:1].decode() for p in user_dir.iterdir() if not p.name.endswith(".lock")
        }
        assert kept == {"a", "c"}  # b was the least recently used; huge does not fit
        assert sum(p.stat().st_size for p in user_dir.iterdir()) <= 250
        assert len(list(user_dir.glob("*.lock"))) == 2

    def test_recover_removes_partial_downloads(self, cache: Path, fetcher: Fetcher) -> None:
        """What a fetch killed with its front end left is removed, unless a live fetch
        is writing it (it holds the entry's lock)."""
        import fcntl

        user_dir = cache / "65534"
        user_dir.mkdir(parents=True)
        dead = user_dir / f"{'a' * 64}.part-{'0' * 32}"
        live = user_dir / f"{'b' * 64}.part-{'1' * 32}"
        dead.write_bytes(b"partial")
        live.write_bytes(b"partial")
        with open(user_dir / f"{'b' * 64}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fetcher.recover()
        assert not dead.exists()
        assert live.exists()

    def test_unsafe_cache_root(self, server: Server, sandbox: Path, cache: Path) -> None:
        cache.mkdir()
        cache.chmod(0o777)
        server.files["/a"] = b"a"
        with pytest.raises(FetchError) as error:
            fetch([uri(server.url("/a"), cache=True)], sandbox, cache_dir=cache)
        refused(error, "is not safe to use: others can write to it")


# --- failures --------------------------------------------------------------------------


class TestFailures:
    @pytest.mark.parametrize("cached", [False, True])
    def test_not_found(
        self, cached: bool, server: Server, sandbox: Path, fetcher: Fetcher, cache: Path
    ) -> None:
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/missing.tgz"), cache=cached)], sandbox)
        assert str(error.value) == (
            f"Failed to fetch '{server.url('/missing.tgz')}': Error downloading resource, "
            "received HTTP return code 404"
        )
        assert os.listdir(sandbox) == []
        assert leftovers(cache) == []

    def test_connection_refused(self, refused_port: int, sandbox: Path, fetcher: Fetcher) -> None:
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(f"http://127.0.0.1:{refused_port}/a.txt")], sandbox)
        refused(error, f"cannot connect to 127.0.0.1:{refused_port}: Connection refused")
        assert os.listdir(sandbox) == []

    @pytest.mark.parametrize("cached", [False, True])
    def test_a_server_that_never_answers(
        self, cached: bool, silent_port: int, sandbox: Path, cache: Path
    ) -> None:
        started = time.monotonic()
        with pytest.raises(FetchError) as error:
            fetch(
                [uri(f"http://127.0.0.1:{silent_port}/a.tgz", cache=cached)],
                sandbox,
                cache_dir=cache,
                timeout=1,
            )
        assert time.monotonic() - started < 10
        refused(error, f"127.0.0.1:{silent_port} did not answer within 1s")
        assert os.listdir(sandbox) == []
        assert leftovers(cache) == []

    def test_a_tls_server_that_never_answers(
        self, silent_port: int, sandbox: Path, cache: Path
    ) -> None:
        started = time.monotonic()
        with pytest.raises(FetchError):
            fetch([uri(f"https://127.0.0.1:{silent_port}/a")], sandbox, cache_dir=cache, timeout=1)
        assert time.monotonic() - started < 10

    @pytest.mark.parametrize("cached", [False, True])
    def test_cut_short(
        self, cached: bool, server: Server, sandbox: Path, fetcher: Fetcher, cache: Path
    ) -> None:
        server.files["/half.bin"] = b"x" * 200_000
        server.cut.add("/half.bin")
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(server.url("/half.bin"), cache=cached)], sandbox)
        refused(error, "broke after 100000 of 200000 bytes")
        assert os.listdir(sandbox) == []
        assert leftovers(cache) == []

    def test_a_later_failure_undoes_the_whole_fetch(
        self, server: Server, sandbox: Path, fetcher: Fetcher
    ) -> None:
        (sandbox / "stdout").write_bytes(b"the executor's")
        server.files["/pkg.zip"] = sample(".zip")
        server.files["/x"] = b"x"
        with pytest.raises(FetchError) as error:
            fetcher.fetch(
                [
                    uri(server.url("/pkg.zip")),
                    uri(server.url("/x"), output_file="app/deeper/x"),
                    uri(server.url("/missing")),
                ],
                sandbox,
            )
        refused(error, f"Failed to fetch '{server.url('/missing')}'")
        assert contents(sandbox) == {"stdout": "the executor's"}

    def test_cancelled(self, server: Server, sandbox: Path, fetcher: Fetcher, cache: Path) -> None:
        """A launch killed during a fetch stops it at once: nothing left, no helper."""
        server.files["/slow.bin"] = os.urandom(4 << 20)
        server.pause["/slow.bin"] = 0.05
        started = time.monotonic()
        with pytest.raises(LaunchCancelled):
            fetcher.fetch(
                [uri(server.url("/slow.bin"), cache=True)],
                sandbox,
                cancelled=lambda: time.monotonic() - started > 0.5,
            )
        assert time.monotonic() - started < 3
        assert os.listdir(sandbox) == []
        assert leftovers(cache) == []
        assert helpers() == []

    def test_interrupted(
        self, server: Server, sandbox: Path, fetcher: Fetcher, cache: Path
    ) -> None:
        """A signal during the fetch (run raises from its handler) stops it as cleanly."""

        class Interrupt(BaseException):
            pass

        def interrupt(signum: int, frame: Any) -> None:
            raise Interrupt

        server.files["/slow.bin"] = os.urandom(4 << 20)
        server.pause["/slow.bin"] = 0.05
        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        try:
            with pytest.raises(Interrupt):
                fetcher.fetch([uri(server.url("/slow.bin"), cache=True)], sandbox)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert os.listdir(sandbox) == []
        assert leftovers(cache) == []
        assert helpers() == []

    def test_the_helper_dies_with_its_front_end(
        self, server: Server, sandbox: Path, cache: Path
    ) -> None:
        """A front end killed by SIGKILL takes its fetch with it; the next one's recover
        removes the partial download it left in the cache."""
        server.files["/slow.bin"] = os.urandom(4 << 20)
        server.pause["/slow.bin"] = 0.05
        program = (
            "import sys; from mesos_secrets.fetcher import fetch; "
            "from mesos_secrets.mesos import CommandURI; "
            "fetch([CommandURI(value=sys.argv[1], cache=True)], sys.argv[2], cache_dir=sys.argv[3])"
        )
        front_end = subprocess.Popen(
            [sys.executable, "-c", program, server.url("/slow.bin"), str(sandbox), str(cache)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )
        try:
            deadline = time.monotonic() + 30
            while not list(cache.glob("*/*.part-*")):
                assert time.monotonic() < deadline, "the download never started"
                time.sleep(0.02)
            (helper,) = helpers(front_end.pid)
        finally:
            front_end.kill()
            front_end.wait()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{helper}").exists():
            assert time.monotonic() < deadline, "the helper outlived its front end"
            time.sleep(0.02)
        assert list(cache.glob("*/*.part-*"))
        Fetcher(cache).recover()
        assert leftovers(cache) == []

    def test_credentials_never_shown(
        self, server: Server, sandbox: Path, fetcher: Fetcher, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A user and password in a URI are sent (Basic authentication) and shown nowhere:
        not in errors, not in progress, not in logs."""
        caplog.set_level(logging.DEBUG)
        server.files["/private.txt"] = b"p"
        secret_uri = server.url("/private.txt").replace("://", "://alice:s3cr%2Ft@")
        events: list[tuple[str, str, int, int]] = []
        fetcher.progress = lambda *event: events.append(event)
        fetcher.fetch([uri(secret_uri)], sandbox)
        expected = "Basic " + base64.b64encode(b"alice:s3cr/t").decode()
        assert server.requests == [("/private.txt", expected)]
        with pytest.raises(FetchError) as error:
            fetcher.fetch([uri(secret_uri.replace("private", "missing"))], sandbox)
        shown = f"http://***@127.0.0.1:{server.port}/missing.txt"
        assert str(error.value).startswith(f"Failed to fetch '{shown}': ")
        assert error.value.uri == shown
        everything = repr(events) + str(error.value) + caplog.text
        for word in ("alice", "s3cr"):
            assert word not in everything

    def test_shown_uri(self) -> None:
        assert shown_uri("https://u:p@host/x") == "https://***@host/x"
        assert shown_uri("http://u:12345/pw@host/x") == "http://***@host/x"
        assert shown_uri("http://host/a\nb") == "http://host/a\\nb"


# --- through the containerizer ---------------------------------------------------------


class TestContainerizer:
    def test_a_task_with_uris(
        self, server: Server, tmp_path: Path, cache: Path, outside: Path
    ) -> None:
        """run and the executor share this pipeline: the task, as nobody, finds its
        artifacts in its sandbox, and cannot see the fetcher's cache."""
        from mesos_secrets.config import Config
        from mesos_secrets.mesos import CommandInfo, TaskInfo
        from mesos_secrets.registry import get_resolver
        from mesos_secrets.run import build_containerizer

        server.files["/pkg.tgz"] = sample(".tgz")
        server.files["/tool"] = b"#!/bin/sh\necho tool ran\n"
        sandbox = outside / "sandbox"
        sandbox.mkdir()
        script = "; ".join(
            [
                "set -e",
                "./tool",
                "sh app/run.sh",
                "cat app/current",
                'test "$(stat -c %U app/conf.txt)" = nobody',
                f'test -z "$(ls -A {cache})"',
            ]
        )
        task = TaskInfo(
            name="fetching",
            task_id="fetching.1",
            command=CommandInfo(
                value=script,
                user="nobody",
                uris=(
                    CommandURI(value=server.url("/pkg.tgz"), cache=True),
                    CommandURI(value=server.url("/tool"), executable=True),
                ),
            ),
        )
        config = Config(fetcher={"cache_dir": str(cache), "timeout": 5})
        output = tmp_path / "output"
        with get_resolver("value") as resolver, open(output, "wb") as out:
            containerizer = build_containerizer(config, resolver, tmp_path / "runtime")
            assert containerizer.fetcher.cache_dir == cache
            with containerizer.launch(task, sandbox, stdout=out) as container:
                assert container.wait().status == 0
        assert output.read_bytes() == b"tool ran\nran\nconf"
        assert leftovers(cache) != []  # cached for the next task

    def test_a_failed_fetch_fails_the_launch_cleanly(
        self, server: Server, tmp_path: Path, cache: Path
    ) -> None:
        from mesos_secrets.config import Config
        from mesos_secrets.mesos import CommandInfo, TaskInfo
        from mesos_secrets.registry import get_resolver
        from mesos_secrets.run import build_containerizer

        sandbox = tmp_path / "sandbox"
        sandbox.mkdir()
        server.files["/ok"] = b"ok"
        task = TaskInfo(
            name="failing",
            task_id="failing.1",
            command=CommandInfo(
                value="true",
                uris=(
                    CommandURI(value=server.url("/ok")),
                    CommandURI(value=server.url("/missing")),
                ),
            ),
        )
        runtime = tmp_path / "runtime"
        with get_resolver("value") as resolver:
            containerizer = build_containerizer(
                Config(fetcher={"cache_dir": str(cache)}), resolver, runtime
            )
            with pytest.raises(LaunchError) as error:
                containerizer.launch(task, sandbox)
            assert "Error downloading resource, received HTTP return code 404" in str(error.value)
            assert os.listdir(sandbox) == []
            # Killed while it fetches (the executor's KILL): cancelled, as cleanly.
            server.files["/slow"] = os.urandom(1 << 20)
            server.pause["/slow"] = 0.05
            slow = attrs.evolve(
                task,
                command=attrs.evolve(task.command, uris=(CommandURI(value=server.url("/slow")),)),
            )
            with pytest.raises(LaunchCancelled):
                containerizer.launch(slow, sandbox, cancelled=lambda: bool(server.requests))
        assert os.listdir(sandbox) == []
        assert os.listdir(runtime / "containers") == []
        assert helpers() == []


# --- the formats are the ones Python reads ----------------------------------------------


def test_compressors_are_real() -> None:
    """The archives above really are compressed as named (a guard on the builders)."""
    assert sample(".tgz")[:2] == b"\x1f\x8b"
    assert bz2.decompress(sample(".tbz2"))
    assert lzma.decompress(sample(".txz"))
    assert hashlib.sha256(sample(".zip")).digest()


class TestRun:
    """``mesos-secrets run`` of a Marathon app with ``fetch``, end to end."""

    def test_run_app(
        self,
        server: Server,
        home: Path,
        tmp_path: Path,
        cache: Path,
        outside: Path,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        from mesos_secrets.config import Config
        from mesos_secrets.marathon import parse_app
        from mesos_secrets.run import RunOptions, run_app

        server.files["/pkg.tgz"] = sample(".tgz")
        server.files["/settings"] = b"debug=0"
        app = parse_app(
            {
                "id": "/fetching/app",
                "user": "nobody",
                "cmd": 'sh app/run.sh && cat conf/settings.ini && test "$(id -un)" = nobody',
                "fetch": [
                    {"uri": server.url("/pkg.tgz"), "cache": True},
                    {"uri": server.url("/settings"), "destPath": "conf/settings.ini"},
                ],
            }
        )
        config = Config(fetcher={"cache_dir": str(cache), "timeout": 5})
        options = RunOptions(work_dir=outside / "work", runtime_dir=tmp_path / "runtime")
        assert run_app(app, config, options) == 0
        assert capfd.readouterr().out == "ran\ndebug=0"
        assert (outside / "work" / "app" / "run.sh").stat().st_uid == NOBODY.pw_uid

        missing = parse_app(
            {"id": "/fetching/missing", "cmd": "true", "fetch": [{"uri": server.url("/nope.zip")}]}
        )
        with pytest.raises(FetchError) as error:
            run_app(missing, config, RunOptions(runtime_dir=tmp_path / "runtime"))
        assert str(error.value) == (
            f"Failed to fetch '{server.url('/nope.zip')}': Error downloading resource, received "
            "HTTP return code 404"
        )
        assert not list((tmp_path / "runtime" / "containers").iterdir())
        assert not list((tmp_path / "runtime" / "sandboxes").iterdir())


# --- through the executor --------------------------------------------------------------


class TestExecutor:
    """The executor, as an agent starts it: its tasks' URIs fetched, a failed fetch a
    TASK_FAILED with Mesos' reason, a KILL during a fetch a TASK_KILLED."""

    @pytest.fixture
    def running(self, tmp_path: Path, bao: Any, cache: Path) -> Iterator[tuple[Any, Any]]:
        """An executor subscribed to an agent double (tests/test_executor.py's), with a
        fetcher cache of the test's own: (its setup, the agent)."""
        from .test_executor import Setup

        setup = Setup(tmp_path, bao)
        with setup.config.open("a") as config:
            config.write(f'[fetcher]\ncache_dir = "{cache}"\ntimeout = 5\n')
        try:
            yield setup, setup.running("exec-db-password")
        finally:
            setup.close()

    @staticmethod
    def task(agent: Any, task_id: str, cmd: str, uris: list[dict[str, Any]]) -> dict[str, Any]:
        from .test_executor import CHECK_APP, app_task

        task = app_task(dict(CHECK_APP, cmd=cmd), agent, task_id)
        task["command"]["uris"] = uris
        return task

    def test_uris(self, running: tuple[Any, Any], server: Server) -> None:
        setup, agent = running
        server.files["/pkg.zip"] = sample(".zip")
        uris = [{"value": server.url("/pkg.zip"), "cache": True}]
        agent.launch(self.task(agent, "f1", "sh app/run.sh && cat app/current", uris))
        agent.wait_for("f1", "TASK_FINISHED")
        (sandbox,) = (setup.tmp / "sandbox" / "tasks").glob("f1.*")
        assert (sandbox / "stdout").read_text() == "ran\nconf"

    def test_a_failed_fetch(self, running: tuple[Any, Any], server: Server) -> None:
        setup, agent = running
        uris = [{"value": server.url("/missing.tgz").replace("://", "://u:hunter2@")}]
        agent.launch(self.task(agent, "f2", "true", uris))
        update = agent.wait_for("f2", "TASK_FAILED")
        assert update["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
        assert update["message"] == (
            f"Failed to fetch 'http://***@127.0.0.1:{server.port}/missing.tgz': Error "
            "downloading resource, received HTTP return code 404"
        )
        assert "TASK_RUNNING" not in agent.states("f2")
        assert "hunter2" not in setup.log()

    def test_killed_while_fetching(self, running: tuple[Any, Any], server: Server) -> None:
        """The download would take 6 s: the KILL ends it at once."""
        setup, agent = running
        server.files["/slow.bin"] = os.urandom(8 << 20)
        server.pause["/slow.bin"] = 0.05
        agent.launch(self.task(agent, "f3", "true", [{"value": server.url("/slow.bin")}]))
        deadline = time.monotonic() + 30
        while not server.requests:
            assert time.monotonic() < deadline, "the fetch never started"
            time.sleep(0.02)
        killed = time.monotonic()
        agent.kill("f3")
        agent.wait_for("f3", "TASK_KILLED", timeout=10)
        assert time.monotonic() - killed < 3
        assert "TASK_RUNNING" not in agent.states("f3")
        (sandbox,) = (setup.tmp / "sandbox" / "tasks").glob("f3.*")
        assert sorted(os.listdir(sandbox)) == ["stderr", "stdout"]
        assert not list((setup.runtime / "containers").iterdir())
