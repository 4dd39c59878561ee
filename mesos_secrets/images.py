"""The image provisioner: private registry pulls with credentials from a secret.

``Image.Docker.config`` names a secret holding a Docker config; the provisioner
resolves it, uses the credentials in memory to pull, and never writes them anywhere
(not to disk, not to a command line, not to a log).

Pulling speaks the Registry HTTP API v2 through python-dxf (Basic and Bearer-token
authentication, manifest and blob requests): an image index or manifest list is
narrowed to this machine's platform, Docker schema 2 and OCI manifests are read, every
manifest and blob is checked against its digest before it is kept. Layers are stored
by digest in an OCI image layout, and each image is unpacked once, by umoci (whiteouts,
ownership, no path escapes), into a cached root filesystem; a container gets an
overlay on top of it, so the cache is never written to.

A cached image pulled with credentials is private: it is served only to a caller whose
own credentials the registry accepts for it (an authenticated manifest request), and
concurrent pulls never lend one caller's credentials to another — each caller proves
its access with its own request before it may use blobs already in the store.

Blobs are shared between images, so the store remembers, for each blob, the (registry,
repository) pairs that served it (a digest-checked download) or vouched for it to a
caller. A pull from (R, P), which starts with this caller's own manifest request to
R for P, uses a stored blob only if (R, P) is among them, or if R is among them and
answers a HEAD of the blob in P with this caller's credentials; any other blob is
downloaded from R and checked against its digest, so naming a digest gets nobody the
bytes behind it. An unpacked root filesystem is used only once every blob of its
manifest has passed that rule for the caller. It is named by the digest of the OCI
manifest umoci unpacked, which is written here from the fields that were checked:
never the registry's bytes, which umoci (Go: keys match case-insensitively, the last
duplicate wins) could read as naming other blobs than Python did.

Without root, umoci unpacks rootless, into a directory of its own: every file is the
user's, which the container's user namespace, where the user is root and no one else
is mapped, shows as root's (an image's other owners are not kept). The overlay is
mounted in that namespace (``containerizer.userns``, ``containerizer.runc``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import requests
from dxf import DXF
from dxf import exceptions as dxf_errors

from . import linux, nofollow
from ._codec import loads
from .containerizer.pipeline import Rootfs
from .containerizer.runtime import container_part, default_store_dir, pulls_under_way
from .docker_config import DOCKER_HUB, RegistryAuth, canonical_registry, parse_docker_config
from .errors import (
    ConfigError,
    ProvisionerError,
    ResolverError,
    SecretValidationError,
    printable,
)
from .image_config import MAX_CONFIG_BYTES, ImageConfig, parse_image_config
from .image_reference import ImageReference
from .isolator import ContainerConfig, Mount
from .mesos import ImageType, TaskInfo
from .resolver import ResolveContext, SecretResolver

__all__ = [
    "ImageReference",
    "ImageStore",
    "Progress",
    "Provisioner",
    "RegistryOptions",
    "default_store_dir",
]

log = logging.getLogger(__name__)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": (
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ),
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    ),
    "application/vnd.oci.image.layer.v1.tar+gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar": "application/vnd.oci.image.layer.v1.tar",
}
_ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}

#: Called with (event, detail, done bytes, total bytes) while an image is pulled.
Progress = Callable[[str, str, int, int], None]


def this_platform() -> tuple[str, str]:
    machine = platform.machine()
    return "linux", _ARCH.get(machine, machine)


@attrs.frozen
class RegistryOptions:
    """How registries are reached: TLS trust, insecure (plain HTTP) registries, timeout."""

    ca_bundle: str | None = None
    insecure_registries: tuple[str, ...] = ()
    insecure_credentials: bool = False
    timeout: float = 30.0
    #: Mesos' ``--docker_registry``: where images named without a registry are pulled
    #: from (a mirror), instead of Docker Hub.
    registry: str | None = None

    @classmethod
    def from_config(cls, table: Mapping[str, Any] | None) -> RegistryOptions:
        table = dict(table or {})
        known = {
            "ca_bundle",
            "insecure_registries",
            "insecure_credentials",
            "timeout",
            "store",
            "registry",
        }
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"unknown [images] setting {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(known))})"
            )
        insecure = table.get("insecure_registries", [])
        if not isinstance(insecure, list) or not all(isinstance(r, str) for r in insecure):
            raise ConfigError("[images] 'insecure_registries' must be a list of host[:port]")
        ca_bundle = table.get("ca_bundle")
        if ca_bundle is not None and not (isinstance(ca_bundle, str) and ca_bundle):
            raise ConfigError("[images] 'ca_bundle' must be the path of a file of certificates")
        insecure_credentials = table.get("insecure_credentials", False)
        if not isinstance(insecure_credentials, bool):
            raise ConfigError("[images] 'insecure_credentials' must be true or false")
        timeout = table.get("timeout", 30.0)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= sys.float_info.max  # an int past a double too
        ):
            raise ConfigError("[images] 'timeout' must be a positive number of seconds")
        registry = table.get("registry")
        if registry is not None and not (
            isinstance(registry, str) and re.fullmatch(r"[A-Za-z0-9.-]+(:\d{1,5})?", registry)
        ):
            raise ConfigError("[images] 'registry' must be a registry's host[:port]")
        return cls(
            registry=canonical_registry(registry) if registry else None,
            ca_bundle=ca_bundle,
            insecure_registries=tuple(canonical_registry(r) for r in insecure),
            insecure_credentials=insecure_credentials,
            timeout=float(timeout),
        )

    def verify(self) -> str | bool:
        """The [images] ca_bundle, else SSL_CERT_FILE / REQUESTS_CA_BUNDLE, else the system's."""
        return (
            self.ca_bundle
            or os.environ.get("SSL_CERT_FILE")
            or os.environ.get("REQUESTS_CA_BUNDLE")
            or True
        )


class _Registry:
    """One repository on one registry, with one caller's credentials (or none)."""

    def __init__(
        self,
        image: ImageReference,
        auth: RegistryAuth | None,
        options: RegistryOptions,
        source: str,
    ) -> None:
        self.image = image
        self.source = source
        insecure = image.registry in options.insecure_registries
        if insecure and auth is not None and not options.insecure_credentials:
            raise ProvisionerError(
                f"registry {image.registry} is reached over plain HTTP (insecure_registries), and "
                "credentials are never sent in the clear unless [images] insecure_credentials "
                "is true"
            )
        self._auth = auth

        def authenticate(client: Any, response: requests.Response) -> None:
            if self._auth is None:
                client.authenticate(response=response, actions=["pull"])
            else:
                # The password's very bytes, whatever they are (python-dxf would encode
                # a str again, and fail on bytes that are not UTF-8).
                basic = base64.b64encode(
                    self._auth.username.encode() + b":" + self._auth.password.reveal()
                )
                client.authenticate(
                    authorization="Basic " + basic.decode(), response=response, actions=["pull"]
                )

        self.client = DXF(
            image.api_host,
            image.repository,
            auth=authenticate,
            insecure=insecure,
            tlsverify=options.verify(),
            timeout=options.timeout,
        )

    def __enter__(self) -> _Registry:
        self.client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(*exc)
        self._auth = None

    def error(self, error: BaseException, what: str) -> ProvisionerError:  # noqa: PLR0911
        """Map a registry failure to a clear error; nothing from the response is kept."""
        image, registry = self.image, self.image.registry
        if isinstance(error, dxf_errors.DXFUnauthorizedError):
            if self._auth is None:
                return ProvisionerError(
                    f"registry {registry} requires credentials for image '{image}', and the task "
                    "has none (Image.Docker.config / Marathon pullConfig)"
                )
            return ProvisionerError(
                f"registry {registry} refused the credentials from {self.source} "
                f"for image '{image}' (401)"
            )
        if isinstance(error, dxf_errors.DXFDigestMismatchError):
            return ProvisionerError(
                f"{what} of image '{image}' does not match its digest: nothing was kept"
            )
        if isinstance(error, requests.exceptions.SSLError):
            return ProvisionerError(
                f"cannot reach registry {registry}: TLS certificate verify failed (set [images] "
                "ca_bundle, SSL_CERT_FILE or REQUESTS_CA_BUNDLE)"
            )
        if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return ProvisionerError(
                f"cannot reach registry {registry} for image '{image}': {type(error).__name__}"
            )
        if isinstance(error, requests.HTTPError) and error.response is not None:
            status = error.response.status_code
            if status == 404:
                return ProvisionerError(
                    f"image '{image}' not found at registry {registry} ({what}: 404)"
                )
            if status == 403:
                return ProvisionerError(
                    f"registry {registry} denied access to image '{image}' (403)"
                )
            return ProvisionerError(
                f"registry {registry} failed to serve {what} of image '{image}' ({status})"
            )
        if isinstance(error, dxf_errors.DXFAuthInsecureError):
            return ProvisionerError(
                f"registry {registry} asks for credentials over plain HTTP; refusing"
            )
        return ProvisionerError(f"cannot pull {what} of image '{image}': {type(error).__name__}")

    @contextlib.contextmanager
    def answers(self, what: str) -> Iterator[None]:
        """Registry failures, and answers python-dxf cannot read (a 401 without a
        challenge, a token service's reply without a token…), as clear errors."""
        try:
            yield
        except (dxf_errors.DXFError, requests.RequestException) as error:
            raise self.error(error, what) from None
        except (
            KeyError,
            IndexError,
            TypeError,
            ValueError,
            AttributeError,
            RecursionError,
        ) as error:
            raise ProvisionerError(
                f"registry {self.image.registry} gave an answer that does not follow the "
                f"registry API, for {what} of image '{self.image}' ({type(error).__name__})"
            ) from None

    def get(self, kind: str, reference: str) -> tuple[bytes, str]:
        """A manifest (or index) by tag or digest; its bytes are checked against its digest."""
        with self.answers(kind):
            response = self.client._request(
                "get", "manifests/" + reference, headers={"Accept": _ACCEPT}, stream=True
            )
            with contextlib.closing(response):
                content = bytearray()
                for chunk in response.iter_content(1 << 16):
                    content += chunk
                    if len(content) > MAX_MANIFEST_BYTES:
                        raise ProvisionerError(
                            f"the {kind} of image '{self.image}' is larger than "
                            f"{MAX_MANIFEST_BYTES >> 20} MiB: refused"
                        )
            claimed = response.headers.get("Docker-Content-Digest")
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        if (reference.startswith("sha256:") and digest != reference) or (
            claimed and claimed != digest
        ):
            raise ProvisionerError(
                f"the {kind} of image '{self.image}' does not match its digest: nothing was kept"
            )
        return bytes(content), digest

    def head(self, reference: str) -> str | None:
        """The cheap, authenticated check: the digest the registry gives this caller."""
        with self.answers("manifest"):
            response = self.client._request(
                "head", "manifests/" + reference, headers={"Accept": _ACCEPT}
            )
            digest = response.headers.get("Docker-Content-Digest")
        return str(digest) if digest else None

    def has_blob(self, digest: str) -> bool:
        """Whether the registry says this caller may read ``digest`` in this repository."""
        with self.answers(f"blob {digest}"):
            try:
                self.client._request("head", "blobs/" + digest)
            except dxf_errors.DXFUnauthorizedError:
                return False
            except requests.HTTPError as error:
                if error.response is not None and error.response.status_code in (403, 404):
                    return False
                raise
        return True

    def blob(self, digest: str, what: str) -> Iterable[bytes]:
        """The bytes of a blob; the store checks them against ``digest``."""
        with self.answers(f"{what} ({digest})"):
            try:
                chunks = self.client.pull_blob(digest, chunk_size=1 << 16)
            except requests.HTTPError as error:
                if error.response is not None and error.response.status_code == 404:
                    raise ProvisionerError(
                        f"registry {self.image.registry} has no {what} ({digest}) of image "
                        f"'{self.image}' (404)"
                    ) from None
                raise
        assert not isinstance(chunks, bytes | tuple)
        return chunks


class ImageStore:
    """Blobs by digest in an OCI image layout, and unpacked root filesystems, on disk.

    Layout::

        <root>/oci/          an OCI image layout (oci-layout, index.json, blobs/sha256/…)
        <root>/rootfs/<hex>  an unpacked image, by the digest of the OCI manifest it was
                             unpacked from, one written here from checked fields (read-only)
        <root>/rootfs-rootless/<hex>
                             the same, unpacked without root: every file the user's
                             (writable by the user, hidden from tasks like the rest)
        <root>/images/<hex>  what is known of an image reference (digests, private or not)
        <root>/sources/<hex> where a blob came from: the (registry, repository) pairs that
                             served it or vouched for it to a caller (see the module's doc)
        <root>/tmp/          partial downloads and unpacks, used under a shared lock:
                             what a provisioner that died left there, ``recover`` removes
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.oci = self.root / "oci"
        self.blobs = self.oci / "blobs" / "sha256"
        self.rootfs_dir = self.root / "rootfs"
        self.rootless_rootfs_dir = self.root / "rootfs-rootless"
        self.records = self.root / "images"
        self.provenance = self.root / "sources"
        self.tmp = pulls_under_way(self.root)
        self.locks = self.root / "locks"
        for directory in (
            self.blobs,
            self.rootfs_dir,
            self.records,
            self.provenance,
            self.tmp,
            self.locks,
        ):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self.lock("index"):
            if not (self.oci / "oci-layout").exists():
                (self.oci / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
            if not (self.oci / "index.json").exists():
                self._write_index({"schemaVersion": 2, "manifests": []})

    @contextlib.contextmanager
    def lock(self, name: str, *, shared: bool = False) -> Iterator[None]:
        """A lock across threads and processes (flock on a lock file)."""
        fd = os.open(self.locks / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def recover(self) -> None:
        """Remove what dead pullers left in ``tmp/`` (only when no one is using it)."""
        fd = os.open(self.locks / "tmp", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a pull or an unpack is under way: a later recover will do
            left = os.listdir(self.tmp)
            removed = 0
            for name in left:
                try:
                    nofollow.remove_tree(self.tmp / name)
                    removed += 1
                except OSError as error:  # still written to: the next recover removes it
                    log.warning(
                        "cannot remove the partial download '%s' yet: %s",
                        self.tmp / name,
                        error.strerror or type(error).__name__,
                    )
            if removed:
                log.warning("removed %d partial download(s) from the image store", removed)
        finally:
            os.close(fd)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def add_blob(
        self, digest: str, chunks: Iterable[bytes], on_bytes: Callable[[int], None] | None = None
    ) -> None:
        """Store a blob: written to tmp, checked against ``digest``, then renamed into place."""
        with self.lock("tmp", shared=True):
            self._add_blob(digest, chunks, on_bytes)

    def _add_blob(
        self, digest: str, chunks: Iterable[bytes], on_bytes: Callable[[int], None] | None
    ) -> None:
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        temporary = Path(name)
        try:
            sha = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    sha.update(chunk)
                    out.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if "sha256:" + sha.hexdigest() != digest:
                raise dxf_errors.DXFDigestMismatchError("sha256:" + sha.hexdigest(), digest)
            temporary.rename(self.blob_path(digest))
        finally:
            temporary.unlink(missing_ok=True)

    def sources(self, digest: str) -> set[tuple[str, str]]:
        """The (registry, repository) pairs a stored blob came from or was vouched for by."""
        try:
            pairs = json.loads((self.provenance / digest.split(":", 1)[1]).read_text())
        except (OSError, ValueError):
            return set()
        if not isinstance(pairs, list):
            return set()
        return {
            (pair[0], pair[1])
            for pair in pairs
            if isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(part, str) for part in pair)
        }

    def add_source(self, digest: str, registry: str, repository: str) -> None:
        """Record that ``registry`` served ``digest`` (or vouched for it) in ``repository``.

        Callers hold the blob's lock, so updates of one blob's sources never race."""
        pairs = self.sources(digest)
        if (registry, repository) in pairs:
            return
        pairs.add((registry, repository))
        path = self.provenance / digest.split(":", 1)[1]
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(sorted(map(list, pairs))))
        temporary.rename(path)

    def add_bytes(self, content: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        if not self.has_blob(digest):
            self.add_blob(digest, [content])
        return digest

    def tag(self, manifest_digest: str, size: int) -> str:
        """List a manifest in index.json under its own hex digest (a ref name umoci reads)."""
        name = manifest_digest.split(":", 1)[1]
        with self.lock("index"):
            index = json.loads((self.oci / "index.json").read_text())
            if not any(m.get("digest") == manifest_digest for m in index["manifests"]):
                index["manifests"].append(
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": manifest_digest,
                        "size": size,
                        "annotations": {"org.opencontainers.image.ref.name": name},
                    }
                )
                self._write_index(index)
        return name

    def _write_index(self, index: Mapping[str, Any]) -> None:
        temporary = self.oci / "index.json.tmp"
        temporary.write_text(json.dumps(index))
        temporary.rename(self.oci / "index.json")

    def record(self, image: ImageReference) -> dict[str, Any] | None:
        path = self._record_path(image)
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):
            return None

    def save_record(self, image: ImageReference, record: Mapping[str, Any]) -> None:
        path = self._record_path(image)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"image": str(image), **record}))
        temporary.rename(path)

    def _record_path(self, image: ImageReference) -> Path:
        return self.records / hashlib.sha256(str(image).encode()).hexdigest()

    def rootfs(self, manifest_digest: str, ref_name: str) -> Path:
        """The unpacked root filesystem of a manifest, unpacked by umoci the first time.

        Without root, umoci's rootless unpack (every file the user's, which the user's
        namespace shows as root's; see ``containerizer.userns``), kept apart from root's.
        """
        rootless = not linux.is_root()
        directory = self.rootless_rootfs_dir if rootless else self.rootfs_dir
        directory.mkdir(mode=0o700, exist_ok=True)
        target = directory / manifest_digest.split(":", 1)[1]
        with self.lock(f"unpack-{target.name}"), self.lock("tmp", shared=True):
            if target.is_dir():
                return target
            work = Path(tempfile.mkdtemp(dir=self.tmp, prefix="unpack-"))
            try:
                result = subprocess.run(  # noqa: S603 (paths and a digest only)
                    _dies_with_us(
                        [
                            shutil.which("umoci") or "/usr/bin/umoci",
                            "raw",
                            "unpack",
                            *(["--rootless"] if rootless else []),
                            "--image",
                            f"{self.oci}:{ref_name}",
                            str(work / "rootfs"),
                        ]
                    ),
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if result.returncode != 0:
                    detail = result.stderr.strip().splitlines()[-1:] or ["no output"]
                    raise ProvisionerError(
                        f"cannot unpack image {manifest_digest}: umoci: {printable(detail[0], 300)}"
                    )
                (work / "rootfs").rename(target)
            finally:
                nofollow.remove_tree(work)
        return target


def _dies_with_us(argv: list[str]) -> list[str]:
    """``argv`` run so that it is killed when the thread that started it dies (util-linux
    ``setpriv --pdeathsig``, never a ``preexec_fn`` in a threaded process): an unpack
    whose front end was killed does not go on writing into the store by itself."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


class Provisioner:
    """Provides a task's image: resolve the pull secret, pull (or check the cache), unpack.

    ``provision`` returns the container's root filesystem: an overlay over the cached
    image, mounted by the container's init in its own mount namespace (upper and work
    directories in the container's runtime directory), with what the image's config
    blob says about running it (Entrypoint, Cmd, Env, WorkingDir: ``image_config``);
    ``destroy`` removes those.
    """

    def __init__(
        self,
        resolver: SecretResolver,
        store: ImageStore | Path,
        runtime_dir: Path,
        options: RegistryOptions | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.resolver = resolver
        self._store = store
        self.runtime_dir = Path(runtime_dir)
        self.options = options or RegistryOptions()
        self.progress = progress

    @property
    def store(self) -> ImageStore:
        """The image store, created the first time an image is needed."""
        if not isinstance(self._store, ImageStore):
            self._store = ImageStore(self._store)
        return self._store

    def container_dir(self, container_id: str) -> Path:
        return container_part(self.runtime_dir, container_id, "provisioner")

    def __call__(self, task: TaskInfo, config: ContainerConfig) -> Rootfs | None:
        return self.provision(task, config)

    def provision(self, task: TaskInfo, config: ContainerConfig) -> Rootfs | None:
        image = task.container.mesos.image if task.container and task.container.mesos else None
        if image is None:
            return None
        if image.type is not ImageType.DOCKER or image.docker is None:
            raise ProvisionerError("Docker provisioner store only supports Docker images")
        reference = ImageReference.parse(image.docker.name)
        if reference.registry == DOCKER_HUB and self.options.registry:
            reference = attrs.evolve(reference, registry=self.options.registry)
        auth, source = self._credentials(reference, image.docker.config, config.context)
        manifest_digest, ref_name = self._fetch(reference, auth, source, cached=image.cached)
        runtime = self._image_config(reference, manifest_digest)
        lower = self.store.rootfs(manifest_digest, ref_name)
        return attrs.evolve(self._overlay(config.container_id, lower), config=runtime)

    def destroy(self, container_id: str) -> None:
        nofollow.remove_tree(self.container_dir(container_id))

    def _image_config(self, image: ImageReference, manifest_digest: str) -> ImageConfig:
        """The image's runtime configuration, from its config blob in the store (checked
        against its digest when it was stored), named by the OCI manifest written here."""
        manifest = parse_manifest(
            self.store.blob_path(manifest_digest).read_bytes(), image, index=False
        )
        assert isinstance(manifest, Manifest)
        path = self.store.blob_path(manifest.config.digest)
        with path.open("rb") as blob:
            content = blob.read(MAX_CONFIG_BYTES + 1)
        config = parse_image_config(content, str(image))
        if config.user is not None:
            # Mesos warns, and runs the task as its CommandInfo's user (or the agent's).
            log.warning(
                "image %s names user %s, which is not taken: the task runs as its own user "
                "(CommandInfo.user, Marathon's user), as under Mesos",
                image,
                shown(config.user),
            )
        return config

    def recover(self) -> None:
        root = self._store.root if isinstance(self._store, ImageStore) else Path(self._store)
        if pulls_under_way(root).is_dir():
            self.store.recover()

    # --- credentials ----------------------------------------------------------------

    def _credentials(
        self, image: ImageReference, secret: Any, context: ResolveContext | None
    ) -> tuple[RegistryAuth | None, str]:
        if secret is None:
            return None, "no pull secret"
        source = secret.describe()
        try:
            data = self.resolver.resolve(secret, context)
        except ResolverError as error:
            raise ProvisionerError(
                f"cannot resolve the pull secret for image '{image}': {error}"
            ) from error
        config = parse_docker_config(data, source=source)
        auth = config.credentials_for(image.registry)
        if auth is None:
            log.info(
                "%s has no credentials for registry %s; pulling anonymously", source, image.registry
            )
        return auth, source

    # --- pulling ----------------------------------------------------------------------

    def _fetch(
        self, image: ImageReference, auth: RegistryAuth | None, source: str, *, cached: bool
    ) -> tuple[str, str]:
        """Make sure the image is in the store for *this* caller; returns the digest of the
        OCI manifest umoci unpacks (which names the root filesystem) and its ref name."""
        record = self.store.record(image)
        with _Registry(image, auth, self.options, source) as registry:
            if record is not None and cached and self._complete(record, image):
                if not record["private"]:
                    return record["oci_manifest"], record["ref"]
                # A private image is served only if the registry accepts this caller for it.
                if registry.head(image.reference) == record["reference_digest"]:
                    log.info(
                        "image %s: the registry accepts this caller; using the stored copy", image
                    )
                    return record["oci_manifest"], record["ref"]
            return self._pull(image, registry, private=auth is not None)

    def _complete(self, record: Mapping[str, Any], image: ImageReference) -> bool:
        """Every blob of the record is stored and came from this very repository."""
        here = (image.registry, image.repository)
        return self.store.has_blob(record["oci_manifest"]) and all(
            self.store.has_blob(d) and here in self.store.sources(d) for d in record["layers"]
        )

    def _authorised(self, registry: _Registry, digest: str) -> bool:
        """May this pull use the stored ``digest``? (The caller's manifest request to this
        repository was accepted already: each pull starts with it.)"""
        if not self.store.has_blob(digest):
            return False
        image = registry.image
        here = (image.registry, image.repository)
        sources = self.store.sources(digest)
        if here in sources:
            return True
        # Only a registry that holds the blob is believed about it: another one's HEAD
        # proves nothing, its bytes must match the digest.
        if any(host == image.registry for host, _ in sources) and registry.has_blob(digest):
            log.info("image %s: the registry vouches for stored blob %s", image, digest)
            self.store.add_source(digest, *here)
            return True
        return False

    def _pull(
        self, image: ImageReference, registry: _Registry, *, private: bool
    ) -> tuple[str, str]:
        content, digest = registry.get("manifest", image.reference)
        reference_digest = digest
        parsed = parse_manifest(content, image)
        if isinstance(parsed, Index):
            content, digest = registry.get("manifest", _choose_platform(parsed, image))
            parsed = parse_manifest(content, image, index=False)
        assert isinstance(parsed, Manifest)
        manifest = parsed
        total = sum(blob.size for blob in manifest.blobs)
        done = 0
        self._report("pull", str(image), 0, total)
        for number, blob in enumerate(manifest.blobs):
            with self.store.lock(f"blob-{blob.digest.split(':')[1]}"):
                if self._authorised(registry, blob.digest):
                    done += blob.size
                else:
                    what = "config" if number == 0 else f"layer {number}/{len(manifest.layers)}"
                    chunks = registry.blob(blob.digest, what)

                    def advance(count: int, digest: str = blob.digest) -> None:
                        nonlocal done
                        done += count
                        self._report("bytes", digest, done, total)

                    with registry.answers(what):
                        try:
                            self.store.add_blob(blob.digest, chunks, advance)
                        except dxf_errors.DXFDigestMismatchError:
                            raise ProvisionerError(
                                f"{what} ({blob.digest}) of image '{image}' does not match its "
                                "digest: nothing was kept"
                            ) from None
                    self.store.add_source(blob.digest, image.registry, image.repository)
            self._report("blob", blob.digest, done, total)
        oci_bytes = json.dumps(_as_oci(manifest), separators=(",", ":")).encode()
        oci_digest = self.store.add_bytes(oci_bytes)
        ref = self.store.tag(oci_digest, len(oci_bytes))
        self.store.save_record(
            image,
            {
                "reference_digest": reference_digest,
                "manifest": digest,
                "oci_manifest": oci_digest,
                "ref": ref,
                "layers": [blob.digest for blob in manifest.blobs],
                "private": private,
            },
        )
        self._report("done", str(image), total, total)
        return oci_digest, ref

    def _report(self, event: str, detail: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(event, detail, done, total)

    def _overlay(self, container_id: str, lower: Path) -> Rootfs:
        directory = self.container_dir(container_id)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The overlay's root takes the upper directory's owner and mode: make them the image's.
        info = lower.stat()
        (directory / "upper").mkdir(mode=0o700, exist_ok=True)
        os.chown(directory / "upper", info.st_uid, info.st_gid)
        os.chmod(directory / "upper", stat.S_IMODE(info.st_mode))
        (directory / "work").mkdir(mode=0o700, exist_ok=True)
        (directory / "rootfs").mkdir(mode=0o755, exist_ok=True)
        options = f"lowerdir={lower},upperdir={directory / 'upper'},workdir={directory / 'work'}"
        rootfs = directory / "rootfs"
        overlay = Mount("overlay", rootfs, read_only=False, fstype="overlay", options=options)
        return Rootfs(rootfs, (overlay,))


#: The largest manifest or index read (distribution's own limit is 4 MiB).
MAX_MANIFEST_BYTES = 4 << 20
_ANY_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
_MAX_SIZE = (1 << 63) - 1  # descriptors' sizes are int64


@attrs.frozen
class Descriptor:
    """A blob named by a manifest or an index: its digest, size and media type."""

    digest: str
    size: int
    media_type: str | None = None


@attrs.frozen
class Manifest:
    """An image manifest, Docker schema 2 or OCI: the blobs that make the image."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config, *self.layers)


@attrs.frozen
class IndexEntry:
    descriptor: Descriptor
    os: str | None = None
    architecture: str | None = None


@attrs.frozen
class Index:
    """An OCI image index or a Docker manifest list: one manifest per platform."""

    manifests: tuple[IndexEntry, ...]


def shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a one-line message (see :func:`printable`)."""
    return "'" + printable(text, limit) + "'"


def parse_manifest(
    content: bytes, image: ImageReference, *, index: bool = True
) -> Manifest | Index:
    """Read a manifest (or, with ``index``, an index) a registry returned for ``image``.

    Every field used is checked for its type; errors say where, as a JSON pointer:
    ``image 'reg/x:1': manifest /layers/0: 'digest' is missing``."""

    def fail(what: str, where: str, reason: str) -> ProvisionerError:
        return ProvisionerError(f"image '{image}': {what}{' ' + where if where else ''}: {reason}")

    try:  # read as strictly as a spec; the error says why and where, never what
        document = loads(content)
    except SecretValidationError as error:
        raise fail("manifest", "", str(error)) from None
    if not isinstance(document, dict):
        raise fail("manifest", "", "not a JSON object")
    media = document.get("mediaType")
    if media is not None and not isinstance(media, str):
        raise fail("manifest", "", "'mediaType' must be a string")
    if media in (OCI_INDEX, DOCKER_LIST) or (media is None and "manifests" in document):
        if not index:
            raise fail("index", "", "an index may name manifests only, not another index")
        return _parse_index(document, functools.partial(fail, "index"))
    if media is None and "config" in document:
        media = OCI_MANIFEST
    if media is None:
        raise fail("manifest", "", "no 'mediaType', 'config' or 'manifests': not a manifest")
    if media not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise fail("manifest", "", f"unsupported kind {shown(media)} (not Docker schema 2 or OCI)")
    return _parse_image_manifest(document, media, functools.partial(fail, "manifest"))


_Fail = Callable[[str, str], ProvisionerError]


def _schema_version(document: Mapping[str, Any], fail: _Fail) -> None:
    version = document.get("schemaVersion", 2)
    if type(version) is not int or version != 2:  # True == 1 and 2.0 == 2: neither is 2
        raise fail("", "'schemaVersion' must be 2")


def _parse_image_manifest(document: Mapping[str, Any], media: str, fail: _Fail) -> Manifest:
    _schema_version(document, fail)
    if "config" not in document:
        raise fail("", "'config' is missing")
    config = _descriptor(document["config"], "/config", fail, media_type=True)
    if "layers" not in document:
        raise fail("", "'layers' is missing")
    raw = document["layers"]
    if not isinstance(raw, list):
        raise fail("", "'layers' must be an array")
    layers = []
    for number, entry in enumerate(raw):
        layer = _descriptor(entry, f"/layers/{number}", fail, media_type=True)
        if media == DOCKER_MANIFEST and layer.media_type not in _LAYER_TYPES:
            raise fail(
                f"/layers/{number}",
                f"unsupported layer kind {shown(layer.media_type or '')}",
            )
        layers.append(layer)
    return Manifest(media, config, tuple(layers))


def _parse_index(document: Mapping[str, Any], fail: _Fail) -> Index:
    _schema_version(document, fail)
    if "manifests" not in document:
        raise fail("", "'manifests' is missing")
    raw = document["manifests"]
    if not isinstance(raw, list):
        raise fail("", "'manifests' must be an array")
    entries = []
    for number, entry in enumerate(raw):
        where = f"/manifests/{number}"
        descriptor = _descriptor(entry, where, fail, media_type=False)
        platform = entry.get("platform")
        if platform is None:
            entries.append(IndexEntry(descriptor))
            continue
        if not isinstance(platform, dict):
            raise fail(f"{where}/platform", "must be an object")
        for key in ("os", "architecture"):
            if not isinstance(platform.get(key, ""), str):
                raise fail(f"{where}/platform", f"'{key}' must be a string")
        entries.append(IndexEntry(descriptor, platform.get("os"), platform.get("architecture")))
    return Index(tuple(entries))


def _descriptor(entry: Any, where: str, fail: _Fail, *, media_type: bool) -> Descriptor:
    """A descriptor's digest, size and media type (required with ``media_type``)."""
    if not isinstance(entry, dict):
        raise fail(where, "must be an object")
    for key in ("digest", "size", *(("mediaType",) if media_type else ())):
        if key not in entry:
            raise fail(where, f"'{key}' is missing")
    digest, size, kind = entry["digest"], entry["size"], entry.get("mediaType")
    if not isinstance(digest, str):
        raise fail(where, "'digest' must be a string")
    if not _ANY_DIGEST.fullmatch(digest):
        raise fail(where, "'digest' must be sha256:<64 hex digits> or sha512:<128 hex digits>")
    if not digest.startswith("sha256:"):
        raise fail(where, "sha512 digests are not supported (sha256 only)")
    if type(size) is not int or size < 0:
        raise fail(where, "'size' must be a non-negative integer")
    if size > _MAX_SIZE:
        raise fail(where, "'size' is larger than 2^63-1")
    if kind is not None and not isinstance(kind, str):
        raise fail(where, "'mediaType' must be a string")
    return Descriptor(digest, size, kind)


def _choose_platform(index: Index, image: ImageReference) -> str:
    system, arch = this_platform()
    for entry in index.manifests:
        if entry.os == system and entry.architecture == arch:
            return entry.descriptor.digest
    offered = [
        f"{printable(entry.os or '?', 20)}/{printable(entry.architecture or '?', 20)}"
        for entry in index.manifests[:8]
    ]
    if len(index.manifests) > len(offered):
        offered.append(f"and {len(index.manifests) - len(offered)} more")
    raise ProvisionerError(
        f"image '{image}' has no {system}/{arch} variant (it has: {', '.join(offered) or 'none'})"
    )


def _as_oci(manifest: Manifest) -> dict[str, Any]:
    """The OCI manifest umoci unpacks, written from what was checked: never the registry's
    bytes, which another JSON reader (Go's matches keys case-insensitively, and keeps
    the last of duplicate keys) could read as naming other blobs."""

    def descriptor(blob: Descriptor, kind: str) -> dict[str, Any]:
        return {"mediaType": kind, "digest": blob.digest, "size": blob.size}

    docker = manifest.media_type == DOCKER_MANIFEST
    config_kind = OCI_CONFIG if docker else manifest.config.media_type or OCI_CONFIG
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(manifest.config, config_kind),
        "layers": [
            descriptor(
                layer,
                _LAYER_TYPES[layer.media_type or ""] if docker else layer.media_type or "",
            )
            for layer in manifest.layers
        ],
    }
