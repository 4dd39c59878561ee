"""Marathon's fetched artifacts: an app's ``fetch`` (or legacy ``uris``) and a pod
container's ``artifacts``, as the Mesos ``CommandInfo.URI`` list the fetcher gets.

``fetch`` items default to ``extract: true``, ``executable: false``, ``cache: false``;
``destPath`` is the output file. A legacy URI is extracted only when its path ends in
an archive suffix the Mesos fetcher knows (``AppNormalization.Artifacts``,
``FetchUri.isExtract``). Marathon checks every URI with ``java.net.URI``: what that
parser refuses is refused here with Marathon's message.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from .mesos import CommandURI
from .spec_reader import SpecReader

__all__ = [
    "ARCHIVE_SUFFIXES",
    "INVALID_URI",
    "is_extract",
    "java_uri_valid",
    "read_artifacts",
    "read_uris",
]

#: ``FetchUri.supportedFileTypes``: what the Mesos fetcher extracts.
ARCHIVE_SUFFIXES = (
    ".tar",
    ".tar.gz",
    ".tar.bz2",
    ".tar.xz",
    ".gz",
    ".tgz",
    ".tbz2",
    ".txz",
    ".zip",
)
INVALID_URI = "URI has invalid syntax."

# RFC 2396 as java.net.URI reads it: unreserved, reserved and escaped characters, and
# "other" (non-ASCII, not a control or space) characters.
_ALLOWED = re.compile(r"[A-Za-z0-9\-_.!~*'();/?:@&=+$,\[\]#%]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def java_uri_valid(text: str) -> bool:
    """Whether ``new java.net.URI(text)`` accepts ``text``."""
    return _characters_valid(text) and _structure_valid(text)


def _characters_valid(text: str) -> bool:
    for i, char in enumerate(text):
        if ord(char) > 127:
            if not char.isprintable() or char.isspace():
                return False
        elif not _ALLOWED.fullmatch(char) or (
            char == "%" and not re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 1 : i + 3])
        ):
            return False
    return text.count("#") <= 1


def _structure_valid(text: str) -> bool:
    head = text.split("#", 1)[0]
    scheme, colon, rest = head.partition(":")
    if (
        colon
        and "/" not in scheme
        and "?" not in scheme
        and not (_SCHEME.fullmatch(scheme) and rest)
    ):
        return False
    if "[" not in head and "]" not in head:
        return True
    # Only an IPv6 address in the authority may use brackets.
    authority = rest[2:].split("/", 1)[0] if rest.startswith("//") else ""
    host = authority.rsplit("@", 1)[-1]
    outside = head.replace(host, "", 1) if host else head
    return (
        "[" not in outside
        and "]" not in outside
        and re.fullmatch(r"\[[0-9A-Fa-f:.]+\](:\d*)?", host) is not None
    )


def is_extract(uri: str) -> bool:
    """``FetchUri.isExtract``: the URI's path ends in an archive suffix."""
    if not java_uri_valid(uri):
        return False
    path = urllib.parse.urlsplit(uri).path
    return path.endswith(ARCHIVE_SUFFIXES)


def read_artifacts(read: SpecReader, raw: Any, path: str) -> tuple[CommandURI, ...] | None:
    """``fetch`` / ``artifacts``: objects with ``uri`` and the flags."""
    if raw is None:
        return None
    found = []
    for where, item in read.objects(raw, path):
        uri = read.min1(item, "uri", where, required=True)
        extract = read.boolean(item, "extract", where)
        executable = read.boolean(item, "executable", where)
        cache = read.boolean(item, "cache", where)
        dest = read.string(item, "destPath", where)
        if uri is not None:
            found.append(
                CommandURI(
                    value=uri,
                    extract=True if extract is None else extract,
                    executable=bool(executable),
                    cache=bool(cache),
                    output_file=dest,
                )
            )
    return tuple(found)


def read_uris(read: SpecReader, raw: Any) -> tuple[str, ...] | None:
    """The legacy ``uris``: strings."""
    if raw is None:
        return None
    found = []
    for i, item in enumerate(read.array(raw, "/uris")):
        if isinstance(item, str):
            found.append(item)
        else:
            read.fail(f"/uris({i})", "error.expected.jsstring")
    return tuple(found)


def legacy_fetch(uris: tuple[str, ...]) -> tuple[CommandURI, ...]:
    """Legacy ``uris`` as ``fetch`` items."""
    return tuple(
        CommandURI(value=uri, extract=is_extract(uri), executable=False, cache=False)
        for uri in uris
    )


def uri_violations(
    fetch: tuple[CommandURI, ...], path: str, field: str = "/uri"
) -> list[tuple[str, str]]:
    """Every URI must be one ``java.net.URI`` accepts (``Validation.uriIsValid``)."""
    return [
        (f"{path}({i}){field}", INVALID_URI)
        for i, uri in enumerate(fetch)
        if not java_uri_valid(uri.value)
    ]
