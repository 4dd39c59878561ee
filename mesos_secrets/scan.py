"""``mesos-secrets scan``: likely plaintext secrets in a spec, where Marathon and Mesos show
them to anyone who can read their state endpoints.

Marathon's ``/v2/apps`` and Mesos' ``/state`` show an app's environment, labels, command
line, fetch URIs and Docker parameters to every reader. A password put there, rather than
in ``secrets``, is no longer a secret. This finds the likely ones, in:

- environment values (an app's ``env``, a pod's and its containers' ``environment``);
- labels (an app's, a pod's, a pod container's, a network's);
- command lines (``cmd``, ``args``, a pod container's ``exec.command``, health checks'
  and checks' commands);
- fetch URIs (``fetch``, ``uris``, a pod container's ``artifacts``): a password in the
  userinfo, a token in the query;
- Docker parameters (``container.docker.parameters``).

It finds them in three ways:

- **known formats**: cloud and service keys (AWS, GitHub, GitLab, Slack, Stripe, Google),
  PEM private keys, JWTs, Vault tokens, and URLs or connection strings with a password;
- **names**: a value under a name that says it is a secret (``DB_PASSWORD``,
  ``api-token``), unless the value is plainly not one (empty, a path, a URL without
  credentials, a number, a boolean, a ``$VARIABLE``, a placeholder such as ``<password>``);
  ``--password=…`` style options on a command line count as names too;
- **entropy**: a long random-looking token (20+ characters of base64 or hex alphabet,
  high Shannon entropy) in an environment value or a label, which is what a generated
  key looks like. UUIDs, digests (``sha256:…``) and versions are left alone.

Each finding names the file, the JSON path and the kind, never the value. A finding in
a spec that is not a secret can be silenced only by moving the value: there is no
allow-list to forget about.
"""

from __future__ import annotations

import base64
import itertools
import math
import re
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

__all__ = ["KINDS", "Finding", "scan_spec", "scan_value"]


@attrs.frozen
class Finding:
    """A likely plaintext secret: where (a JSON path) and what kind, never the value."""

    path: str
    kind: str

    @property
    def description(self) -> str:
        return KINDS[self.kind]

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "description": self.description}


#: Where a string is: an environment value, a label, a command line, a URI, a Docker
#: parameter. Entropy is looked for only in environment values and labels (command
#: lines and URIs are full of long random-looking, harmless tokens: hashes, image ids).
ENV, LABEL, COMMAND, URI, PARAMETER = "env", "label", "command", "uri", "parameter"

#: Every kind of finding, and what it means.
KINDS: dict[str, str] = {
    "private-key": "a PEM private key",
    "aws-access-key": "an AWS access key id",
    "github-token": "a GitHub token",
    "gitlab-token": "a GitLab token",
    "slack-token": "a Slack token",
    "stripe-key": "a Stripe secret key",
    "google-api-key": "a Google API key",
    "vault-token": "a Vault or OpenBao token",
    "jwt": "a JSON Web Token",
    "url-password": "a password in a URL or connection string",
    "url-query-credential": "a credential in a URL's query",
    "named-secret": "a value under a name that says it is a secret",
    "command-line-secret": "a secret given as a command-line option or assignment",
    "high-entropy": "a long random-looking token, as generated keys are",
}

#: Known formats: (kind, pattern). Each is specific enough to need no name.
_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("private-key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_\w{60,})\b")),
    ("gitlab-token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20}\b")),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("stripe-key", re.compile(r"\b[rs]k_live_[A-Za-z0-9]{20,}\b")),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("vault-token", re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
)

#: A URL (or connection string) with a password in its userinfo.
_USERINFO = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://([^\s/@:]+):([^\s/@]+)@[^\s/]")
#: Query parameters that carry credentials.
_QUERY_SECRET = re.compile(
    r"(?:^|[_-])(?:token|access[_-]?token|api[_-]?key|apikey|key|secret|signature|sig|"
    r"password|passwd|pwd|auth|credential|x-amz-signature|x-amz-credential)$",
    re.I,
)

#: Words in a name that say its value is a secret; and last words that say it is not the
#: secret itself (where a secret is, how it is used).
_SECRET_WORDS = {
    "password", "passwd", "pwd", "pass", "passphrase", "secret", "token", "apikey",
    "credential", "credentials", "privatekey", "accesskey", "secretkey",
}  # fmt: skip
#: Words that say secret only as a name's last word (``REDIS_AUTH``, not
#: ``AUTH_GOOGLE_ALLOWED_DOMAINS``).
_SECRET_LAST_WORDS = {"auth"}
_KEY_WORDS = {"api", "access", "secret", "private", "signing", "encryption", "master"}
_NOT_THE_SECRET = {
    "location", "path", "file", "dir", "url", "uri", "endpoint", "host", "port", "user",
    "username", "name", "id", "type", "enabled", "enable", "method", "mode", "length",
    "ttl", "expiry", "timeout", "header", "policy", "provider", "backend", "store",
    "keystore", "truststore", "format", "algorithm", "version", "role", "scope", "domain",
}  # fmt: skip
#: Values that are plainly not a secret.
_NOT_A_SECRET = re.compile(
    r"""^(?:
        |true|false|yes|no|on|off|none|null|nil|enabled|disabled|required|optional
        |-?\d+(?:\.\d+)?                       # a number
        |\$\{?[A-Za-z_][A-Za-z0-9_]*\}?        # a $VARIABLE
        |\{\{.*\}\}                            # a template
        |<[^<>]*>|\[[^\[\]]*\]|\*+|x+|\.\.\.   # a placeholder
        |/[^\s]*|\./[^\s]*|~/[^\s]*            # a path
        |file:.*|secret:.*|vault:.*            # a reference
    )$""",
    re.I | re.X,
)
#: ``--password=VALUE`` / ``--db-password VALUE`` / ``-Dapp.secret=VALUE`` on a
#: command line (the value: up to a space or a quote).
_OPTION = re.compile(r"(?:^|\s)-{1,2}(?:D)?([A-Za-z][\w.-]*)(?:=|\s+)(['\"]?)([^\s'\"]+)\2")
_ASSIGNMENT = re.compile(r"(?:^|\s|;|export\s+)([A-Za-z_][A-Za-z0-9_]*)=(['\"]?)([^\s'\";]+)\2")

#: Random-looking tokens, for entropy: base64-ish or hex runs.
_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{20,}")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_HEX = re.compile(r"^[0-9a-fA-F]+$")
#: A path, not a key (a key's base64 has '/' too, but not between words).
_PATH = re.compile(r"^/|/[a-z][a-z0-9_.-]{2,}/|/[a-z][a-z0-9_-]{2,}\.[a-z]{1,4}$")


def _words(name: str) -> list[str]:
    """``DB_PASSWORD`` → db, password; ``apiToken`` → api, token; ``x.secret-key`` → …"""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def named_secret(name: str) -> bool:
    """Whether a name says its value is a secret (and not where a secret is)."""
    words = _words(name)
    if not words or words[-1] in _NOT_THE_SECRET or words[-1].rstrip("s") in _NOT_THE_SECRET:
        return False
    joined = {a + b for a, b in itertools.pairwise(words)}
    if words[-1] == "key" and len(words) > 1 and words[-2] in _KEY_WORDS:
        return True
    if words[-1] in _SECRET_LAST_WORDS:
        return True
    return any(w in _SECRET_WORDS for w in words) or bool(joined & _SECRET_WORDS)


def _not_a_secret(value: str) -> bool:
    text = value.strip()
    if _NOT_A_SECRET.match(text):
        return True
    # a URL without credentials (a token endpoint, say)
    return "://" in text and _USERINFO.search(text) is None


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _encoded_document(token: str) -> bool:
    """Base64 of a JSON document (a DC/OS package's metadata labels, say): data, not a
    key."""
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=False)
        text = decoded.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return text.lstrip()[:1] in ("{", "[")


def _random_token(value: str) -> bool:
    for found in _TOKEN.findall(value):
        token = found.strip("=")
        if len(token) < 20 or _UUID.match(token) or _PATH.search(token):
            continue
        if _encoded_document(token):
            continue
        if _HEX.match(token):
            if len(token) >= 32 and _entropy(token) > 3.5 and not _digest_length(token):
                return True
            continue
        classes = sum(
            1 for c in (str.islower, str.isupper, str.isdigit) if any(c(ch) for ch in token)
        )
        if classes == 3 and _entropy(token) > 4.2:
            return True
    return False


def _digest_length(token: str) -> bool:
    """A hex run of a digest's length (MD5, SHA-1, SHA-256, SHA-512): a checksum."""
    return len(token) in (32, 40, 64, 128)


def scan_value(value: str, where: str, name: str | None = None) -> list[str]:
    """The kinds of likely secret in one string (``where``: :data:`ENV`, :data:`LABEL`,
    :data:`COMMAND`, :data:`URI`, :data:`PARAMETER`; ``name``: the variable's or label's
    name, if it has one)."""
    kinds = [kind for kind, pattern in _FORMATS if pattern.search(value)]
    if _USERINFO.search(value):
        kinds.append("url-password")
    if where in (URI, COMMAND, ENV, PARAMETER) and "://" in value:
        kinds += _query_secrets(value)
    if name is not None and named_secret(name) and not _not_a_secret(value):
        kinds.append("named-secret")
    if where in (COMMAND, PARAMETER):
        for pattern in (_OPTION, _ASSIGNMENT):
            for match in pattern.finditer(value):
                option, found = match.group(1), match.group(3)
                if named_secret(option) and not _not_a_secret(found):
                    kinds.append("command-line-secret")
                    break
    if where in (ENV, LABEL) and not kinds and _random_token(value):
        kinds.append("high-entropy")
    return sorted(set(kinds))


def _query_secrets(value: str) -> list[str]:
    found = []
    for url in re.findall(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", value):
        query = urllib.parse.urlsplit(url).query
        for key, item in urllib.parse.parse_qsl(query, keep_blank_values=False):
            if _QUERY_SECRET.search(key) and not _not_a_secret(item):
                found.append("url-query-credential")
    return found


def scan_spec(spec: Any) -> list[Finding]:
    """Every likely plaintext secret in a parsed spec (an app, a pod, a group, an array
    of apps: what ``validate`` reads), in document order, one per path and kind."""
    return list(dict.fromkeys(_walk(spec)))


def _walk(spec: Any, path: str = "") -> Iterator[Finding]:
    if isinstance(spec, list):
        for index, item in enumerate(spec):
            yield from _walk(item, f"{path}/{index}")
        return
    if not isinstance(spec, Mapping):
        return
    if "containers" in spec and isinstance(spec.get("containers"), list):
        yield from _pod(spec, path)
    else:
        yield from _app(spec, path)
    for key in ("apps", "pods", "groups"):
        if isinstance(spec.get(key), list):
            yield from _walk(spec[key], f"{path}/{key}")


def _strings(value: Any, path: str, where: str, name: str | None) -> Iterator[Finding]:
    if isinstance(value, str):
        for kind in scan_value(value, where, name):
            yield Finding(path, kind)


def _mapping(spec: Any, path: str, where: str) -> Iterator[Finding]:
    """An ``env``/``environment``/``labels`` object: name → string (secret references,
    objects, are what they should be)."""
    if isinstance(spec, Mapping):
        for name, value in spec.items():
            yield from _strings(value, f"{path}/{name}", where, str(name))


def _app(app: Mapping[str, Any], path: str) -> Iterator[Finding]:
    yield from _mapping(app.get("env"), f"{path}/env", ENV)
    yield from _mapping(app.get("labels"), f"{path}/labels", LABEL)
    yield from _strings(app.get("cmd"), f"{path}/cmd", COMMAND, None)
    if isinstance(app.get("args"), list):
        yield from _arguments(app["args"], f"{path}/args")
    yield from _uris(app.get("fetch"), f"{path}/fetch", "uri")
    if isinstance(app.get("uris"), list):
        for index, uri in enumerate(app["uris"]):
            yield from _strings(uri, f"{path}/uris/{index}", URI, None)
    yield from _checks(app, path)
    container = app.get("container")
    if isinstance(container, Mapping):
        docker = container.get("docker")
        if isinstance(docker, Mapping) and isinstance(docker.get("parameters"), list):
            for index, parameter in enumerate(docker["parameters"]):
                if isinstance(parameter, Mapping):
                    at = f"{path}/container/docker/parameters/{index}/value"
                    yield from _strings(parameter.get("value"), at, PARAMETER, None)
    yield from _networks(app.get("networks"), f"{path}/networks")


def _arguments(args: list[Any], path: str) -> Iterator[Finding]:
    """An argv: each item alone, and each ``--option VALUE`` pair."""
    for index, arg in enumerate(args):
        yield from _strings(arg, f"{path}/{index}", COMMAND, None)
        if (
            isinstance(arg, str)
            and arg.startswith("-")
            and "=" not in arg
            and index + 1 < len(args)
            and isinstance(args[index + 1], str)
            and named_secret(arg.lstrip("-"))
            and not _not_a_secret(args[index + 1])
        ):
            yield Finding(f"{path}/{index + 1}", "command-line-secret")


def _uris(fetch: Any, path: str, key: str) -> Iterator[Finding]:
    if isinstance(fetch, list):
        for index, item in enumerate(fetch):
            if isinstance(item, Mapping):
                yield from _strings(item.get(key), f"{path}/{index}/{key}", URI, None)


def _checks(spec: Mapping[str, Any], path: str) -> Iterator[Finding]:
    for key in ("healthChecks", "readinessChecks"):
        checks = spec.get(key)
        if isinstance(checks, list):
            for index, check in enumerate(checks):
                command = check.get("command") if isinstance(check, Mapping) else None
                if isinstance(command, Mapping):
                    at = f"{path}/{key}/{index}/command/value"
                    yield from _strings(command.get("value"), at, COMMAND, None)
    check = spec.get("check") or spec.get("healthCheck")
    if isinstance(check, Mapping):
        for kind in ("exec", "command"):
            command = check.get(kind)
            if isinstance(command, Mapping):
                inner = command.get("command")
                shell = inner.get("shell") if isinstance(inner, Mapping) else command.get("value")
                yield from _strings(shell, f"{path}/{kind}", COMMAND, None)


def _networks(networks: Any, path: str) -> Iterator[Finding]:
    if isinstance(networks, list):
        for index, network in enumerate(networks):
            if isinstance(network, Mapping):
                yield from _mapping(network.get("labels"), f"{path}/{index}/labels", LABEL)


def _pod(pod: Mapping[str, Any], path: str) -> Iterator[Finding]:
    yield from _mapping(pod.get("environment"), f"{path}/environment", ENV)
    yield from _mapping(pod.get("labels"), f"{path}/labels", LABEL)
    yield from _networks(pod.get("networks"), f"{path}/networks")
    for index, container in enumerate(pod["containers"]):
        if not isinstance(container, Mapping):
            continue
        at = f"{path}/containers/{index}"
        yield from _mapping(container.get("environment"), f"{at}/environment", ENV)
        yield from _mapping(container.get("labels"), f"{at}/labels", LABEL)
        command = container.get("exec")
        inner = command.get("command") if isinstance(command, Mapping) else None
        if isinstance(inner, Mapping):
            yield from _strings(inner.get("shell"), f"{at}/exec/command/shell", COMMAND, None)
            if isinstance(inner.get("argv"), list):
                yield from _arguments(inner["argv"], f"{at}/exec/command/argv")
        yield from _uris(container.get("artifacts"), f"{at}/artifacts", "uri")
        yield from _checks(container, at)
