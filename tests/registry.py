"""A real Docker registry for tests (Debian's docker-registry, distribution 2.8).

On loopback, a random port, TLS from a throw-away CA, htpasswd (bcrypt) users. Images
are built from Debian's busybox-static with umoci and pushed with skopeo.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .bao import free_port, stop_process
from .certs import CertificateAuthority


class Registry:
    def __init__(
        self,
        directory: Path,
        users: dict[str, str],
        *,
        token: bool = False,
        ca: CertificateAuthority | None = None,
    ) -> None:
        """htpasswd (Basic) authentication, or with ``token`` Bearer tokens from a
        :class:`TokenServer` of the test's own (the registry's token auth); with no
        ``users``, no authentication at all (anyone may pull and push). ``ca`` issues the
        server's certificate (another registry's, so that one CA bundle trusts both)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.anonymous = not users
        self.ca = ca or CertificateAuthority(directory / "pki", name="registry test CA")
        server = self.ca.issue(f"registry-{uuid.uuid4().hex[:8]}", server=True)
        self.cert_dir = directory / "certs.d"  # for skopeo: *.crt are trusted CAs
        self.cert_dir.mkdir()
        shutil.copy(self.ca.ca.cert, self.cert_dir / "ca.crt")
        self.token_server: TokenServer | None = None
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(
            "".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                for user, password in users.items()
            )
        )
        self.storage = directory / "storage"
        port = free_port()
        self.host = f"127.0.0.1:{port}"
        settings: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}},
            "http": {
                "addr": self.host,
                "tls": {"certificate": str(server.cert), "key": str(server.key)},
            },
        }
        if token:
            settings["auth"] = self._auth(htpasswd, users)
        elif users:
            settings["auth"] = {"htpasswd": {"realm": "test", "path": str(htpasswd)}}
        config = directory / "config.yml"
        config.write_text(json.dumps(settings))
        self.log = directory / "registry.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _auth(self, htpasswd: Path, users: dict[str, str]) -> dict[str, Any]:
        self.token_server = TokenServer(self.ca, users, service=f"registry-{free_port()}")
        return {
            "token": {
                "realm": f"{self.token_server.url}/token",
                "service": self.token_server.service,
                "issuer": TokenServer.ISSUER,
                "rootcertbundle": str(self.ca.ca.cert),
            }
        }

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(
                    f"https://{self.host}/v2/", verify=str(self.ca.ca.cert), timeout=1
                ).status_code == (200 if self.anonymous else 401):
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not become ready")
            time.sleep(0.05)

    def push(
        self,
        layout: Path,
        tag: str,
        repository: str,
        *,
        user: str | None = None,
        password: str | None = None,
        fmt: str | None = None,
        all_images: bool = False,
    ) -> None:
        args = ["skopeo", "copy", "--quiet", "--dest-cert-dir", str(self.cert_dir)]
        if user is None:
            args.append("--dest-no-creds")
        else:
            args += ["--dest-creds", f"{user}:{password}"]
        if fmt:
            args += ["--format", fmt]
        if all_images:
            args.append("--all")
        args += [f"oci:{layout}:{tag}", f"docker://{self.host}/{repository}"]
        subprocess.run(args, check=True, capture_output=True, timeout=120)

    def blob_data(self, digest: str) -> Path:
        hex_ = digest.split(":", 1)[1]
        return (
            self.storage
            / "docker"
            / "registry"
            / "v2"
            / "blobs"
            / "sha256"
            / hex_[:2]
            / hex_
            / "data"
        )

    def blob_gets(self) -> int:
        """How many blob downloads the registry has served so far."""
        return self.blob_requests("GET")

    def blob_requests(self, method: str) -> int:
        """How many blob requests (``GET``, ``HEAD``) the registry has answered so far."""
        return sum(
            1
            for line in self.log.read_text(errors="replace").splitlines()
            if "/blobs/sha256:" in line
            and f"http.request.method={method}" in line
            and "response completed" in line
        )

    def stop(self) -> None:
        stop_process(self.process)
        if self.token_server is not None:
            self.token_server.stop()


def umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True, timeout=120)


#: The Entrypoint of tag `entrypoint`: it shows its arguments, one per line.
ENTRYPOINT = ("/bin/sh", "-c", 'for a in "$0" "$@"; do echo "[$a]"; done', "entrypoint")
#: Its Env: the task's own variables and secrets win over these.
IMAGE_ENV = ("FROM_IMAGE=image", "SHARED=image", "DB=image", "PATH=/bin")


def build_busybox(layout: Path) -> dict[str, str]:
    """An OCI layout with tag `latest`: busybox in two layers, the second deleting a file
    of the first (a whiteout) and adding a few MiB, and no command of its own; tag
    `entrypoint`, the same with an Entrypoint, a Cmd, an Env, a WorkingDir and a User; tag
    `cmd`, the same with a Cmd only; tag `multi`, an image index.

    Returns the manifest digests by tag.
    """
    bundle = layout.parent / "bundle"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:latest")
    umoci("unpack", "--image", f"{layout}:latest", str(bundle))
    rootfs = bundle / "rootfs"
    for directory in ("bin", "etc", "tmp", "mnt/mesos/sandbox", "data"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    applets = subprocess.run(
        ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
    )
    (rootfs / "etc" / "deleteme").write_text("from the first layer\n")
    umoci("repack", "--image", f"{layout}:latest", str(bundle))
    (rootfs / "etc" / "deleteme").unlink()
    (rootfs / "etc" / "hello").write_text("hello from the second layer\n")
    (rootfs / "data" / "filler").write_bytes(os.urandom(4 << 20))
    umoci("repack", "--image", f"{layout}:latest", str(bundle))
    shutil.rmtree(bundle)
    # The same layers, with a command of the image's own.
    umoci(
        "config",
        "--image",
        f"{layout}:latest",
        "--tag",
        "entrypoint",
        *(f"--config.entrypoint={part}" for part in ENTRYPOINT),
        *(f"--config.cmd={part}" for part in ("from-cmd", "two words")),
        *(f"--config.env={entry}" for entry in IMAGE_ENV),
        "--config.workingdir=/srv/app",  # not in the image: made when the task starts
        "--config.user=nobody",  # not taken, as under Mesos
    )
    umoci(
        "config",
        "--image",
        f"{layout}:latest",
        "--tag",
        "cmd",
        *(f"--config.cmd={part}" for part in ("/bin/echo", "cmd-only", "default")),
    )

    index = json.loads((layout / "index.json").read_text())
    (latest,) = [
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    ]
    image_index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                **{k: latest[k] for k in ("mediaType", "digest", "size")},
                "platform": {"os": "linux", "architecture": arch},
            }
            for arch in ("s390x", "amd64" if os.uname().machine == "x86_64" else "arm64")
        ],
    }
    blob = json.dumps(image_index).encode()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(blob)
    index["manifests"].append(
        {
            "mediaType": image_index["mediaType"],
            "digest": digest,
            "size": len(blob),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }
    )
    (layout / "index.json").write_text(json.dumps(index))
    return {"latest": latest["digest"], "multi": digest}


class TokenServer:
    """A test double for a registry token service (the Docker registry token
    authentication spec): GET /token?service=…&scope=repository:NAME:ACTIONS with Basic
    credentials answers {"token": JWT}, an ES256 JWT whose ``x5c`` certificate the
    registry trusts through its ``rootcertbundle``. Wrong credentials are a 401."""

    ISSUER = "mesos-secrets-test-token-issuer"

    def __init__(self, ca: CertificateAuthority, users: dict[str, str], *, service: str) -> None:
        self.users = users
        self.service = service
        self.requests: list[str] = []
        signer = ca.issue("token-signer", server=False)
        self._key = signer.key.read_bytes()
        self._x5c = [
            base64.b64encode(
                x509.load_pem_x509_certificate(signer.cert.read_bytes()).public_bytes(
                    serialization.Encoding.DER
                )
            ).decode()
        ]
        tls = ca.issue("token-server", server=True)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.handle(self)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls.cert), str(tls.key))
        self.http.socket = context.wrap_socket(self.http.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(request.path).query)
        self.requests.append(request.path)
        scheme, _, encoded = (request.headers.get("Authorization") or "").partition(" ")
        user, _, password = base64.b64decode(encoded or "").decode(errors="replace").partition(":")
        if scheme != "Basic" or not hmac.compare_digest(self.users.get(user, "\0"), password):
            request.send_response(401)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.ISSUER,
            "sub": user,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


class HostileRegistry:
    """An attacker's registry, anonymous, over TLS: it serves the manifests it is given
    (any bytes, for any repository), claims to hold every blob (HEAD answers 200) and
    serves only the blobs it is given (GET of any other is a 404). Requests are kept in
    ``requests`` as (method, path). With ``unchallenged``, every request is refused with
    a 401 that carries no ``WWW-Authenticate`` challenge."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.manifests: dict[str, tuple[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.unchallenged = False
        #: Whether a HEAD of a blob it does not serve answers 200 ("I have it").
        self.claims_every_blob = True
        tls = ca.issue(f"hostile-{uuid.uuid4().hex[:8]}", server=True)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.handle(self, body=True)

            def do_HEAD(self) -> None:
                server.handle(self, body=False)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls.cert), str(tls.key))
        self.http.socket = context.wrap_socket(self.http.socket, server_side=True)
        self.host = f"127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def serve(self, tag: str, manifest: bytes | dict[str, Any], media_type: str = "") -> str:
        """Serve ``manifest`` (bytes as they are) under ``tag`` and its digest."""
        content = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        if not media_type and isinstance(manifest, dict):
            media_type = str(manifest.get("mediaType") or "")
        kind = media_type or "application/vnd.oci.image.manifest.v1+json"
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        self.manifests[tag] = self.manifests[digest] = (kind, content)
        return digest

    def handle(self, request: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = urllib.parse.urlparse(request.path).path
        self.requests.append((request.command, path))
        status, headers, content = 404, {"Content-Type": "application/json"}, b"{}"
        if self.unchallenged:
            status = 401
        elif path == "/v2/":
            status = 200
        elif "/manifests/" in path:
            found = self.manifests.get(path.rsplit("/manifests/", 1)[1])
            if found is not None:
                status, content = 200, found[1]
                headers["Content-Type"] = found[0]
                headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(content).hexdigest()
        elif "/blobs/" in path:
            digest = path.rsplit("/blobs/", 1)[1]
            if digest in self.blobs:
                status, content = 200, self.blobs[digest]
            elif not body and self.claims_every_blob:
                status, content = 200, b"\0" * 1024  # "I have it"
                headers["Docker-Content-Digest"] = digest
            headers["Content-Type"] = "application/octet-stream"
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(content)))
        request.end_headers()
        if body:
            request.wfile.write(content)

    def blob_requests(self, method: str) -> list[str]:
        return [path for m, path in self.requests if m == method and "/blobs/" in path]

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
