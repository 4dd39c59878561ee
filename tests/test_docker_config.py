"""Pull secrets: Docker config.json and .dockercfg, read as Mesos reads them."""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesos_secrets import MesosSecretsError, ProvisionerError, SecretBytes
from mesos_secrets.docker_config import parse_auth_url, parse_docker_config
from mesos_secrets.images import ImageReference
from mesos_secrets.testing import canary

from .strategies import any_text, deeply_nested, hostile_json


def auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


entries = st.fixed_dictionaries(
    {},
    optional={
        "auth": st.binary(max_size=16).map(lambda b: base64.b64encode(b).decode())
        | any_text
        | hostile_json,
        "username": any_text | hostile_json,
        "password": any_text | hostile_json,
    },
)


def parse(document: Any) -> Any:
    return parse_docker_config(SecretBytes(json.dumps(document)), source="secret '/pull'")


class TestFormats:
    def test_config_json(self) -> None:
        """Mesos' ParseDockerConfig: `auths`, other top-level keys ignored."""
        config = parse(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": auth("hub", "p1"), "email": "a@b"},
                    "localhost:5000": {"auth": auth("local", "p2")},
                },
                "HttpHeaders": {"User-Agent": "Docker-Client/1.10.2"},
            }
        )
        hub = config.credentials_for("docker.io")
        assert hub is not None
        assert (hub.username, hub.password.reveal()) == ("hub", b"p1")
        local = config.credentials_for("localhost:5000")
        assert local is not None
        assert local.username == "local"

    def test_dockercfg(self) -> None:
        """Mesos' ParseDockercfg: every top-level member is a registry."""
        config = parse(
            {
                "quay.io": {"auth": auth("q", "1")},
                "https://index.docker.io/v1/": {"auth": auth("h", "2")},
                "https://192.168.0.1:5050": {"auth": auth("i", "3")},
            }
        )
        assert config.registries == ("192.168.0.1:5050", "docker.io", "quay.io")

    def test_username_password(self) -> None:
        """Unlike Mesos, username/password entries work too."""
        config = parse({"auths": {"r.example": {"username": "u", "password": "p"}}})
        assert config.credentials_for("r.example") is not None

    @pytest.mark.parametrize(
        ("url", "host"),
        [
            ("https://registry.example.com/v1/", "registry.example.com"),
            ("http://registry.example.com/v1/", "registry.example.com"),
            ("registry.example.com", "registry.example.com"),
            ("registry.example.com/v1/", "registry.example.com"),
            ("localhost:8000/v1/", "localhost:8000"),
            ("https://localhost:8000", "localhost:8000"),
        ],
    )
    def test_parse_auth_url(self, url: str, host: str) -> None:
        """Mesos' ParseAuthUrl."""
        assert parse_auth_url(url) == host

    @pytest.mark.parametrize("alias", ["docker.io", "index.docker.io", "registry-1.docker.io"])
    def test_docker_hub_aliases(self, alias: str) -> None:
        config = parse({"auths": {alias: {"auth": auth("u", "p")}}})
        assert config.credentials_for("https://index.docker.io/v1/") is not None
        assert config.credentials_for("registry-1.docker.io") is not None


class TestMalformed:
    @pytest.mark.parametrize(
        ("document", "reason"),
        [
            (
                "{not json",
                "Invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
            ),
            ("[]", "expected a JSON object"),
            ({"auths": "x"}, "Failed to find 'auths' in docker config file"),
            ({"auths": {"r": "x"}}, "Invalid JSON object for registry entry #1"),
            ({"auths": {"r": {"auth": 5}}}, "'auth' must be a string"),
            ({"auths": {"r": {"auth": "!!!"}}}, "'auth' is not valid base64"),
            (
                {"auths": {"r": {"auth": base64.b64encode(b"nocolon").decode()}}},
                "does not decode to user:password",
            ),
            ({"auths": {"r": {"username": "u"}}}, "must both be strings"),
            ("[" * 50_000 + "]" * 50_000, "Invalid JSON: nested deeper than 100 levels"),
            (
                '{"auths": {"r": {"x": ' + "[" * 50_000 + "]" * 50_000 + "}}}",
                "Invalid JSON: nested deeper than 100 levels",
            ),
            (
                '{"auths": {}, "n": ' + "9" * 5000 + "}",
                "Invalid JSON: a number has more than 4300 digits",
            ),
            (
                {"auths": {"r": {"username": "u", "password": "\ud800"}}},
                "): Invalid JSON: a string holds an unpaired UTF-16 surrogate",
            ),
            (
                {"auths": {"r": {"username": "\udc80", "password": "p"}}},
                "): Invalid JSON: a string holds an unpaired UTF-16 surrogate",
            ),
            (
                {"auths": {"r": {"username": "a:b", "password": "p"}}},
                "registry entry #1: 'username' must not contain ':'",
            ),
            (
                {"auths": {"r": {"username": "a\r\nX-Evil", "password": "p"}}},
                "registry entry #1: 'username' must not contain control characters",
            ),
            (
                {"auths": {"a": {}, "r": {"auth": base64.b64encode(b"u\x1b[2J:p").decode()}}},
                "registry entry #2: the user name in 'auth' must not contain control characters",
            ),
        ],
    )
    def test_clear_errors(self, document: Any, reason: str) -> None:
        data = document if isinstance(document, str) else json.dumps(document)
        with pytest.raises(ProvisionerError) as caught:
            parse_docker_config(SecretBytes(data), source="secret '/pull'")
        assert str(caught.value).startswith("Failed to parse docker config (secret '/pull'): ")
        assert reason in str(caught.value)
        assert "\n" not in str(caught.value)

    @given(
        (st.binary(max_size=64) | deeply_nested)
        | hostile_json.map(lambda v: json.dumps(v).encode())
        | st.dictionaries(
            st.sampled_from(["auths", "r.example", "credsStore"]),
            hostile_json | entries,
            max_size=3,
        ).map(lambda v: json.dumps(v).encode())
        | st.dictionaries(any_text, entries, max_size=3).map(
            lambda v: json.dumps({"auths": v}).encode()
        )
    )
    def test_any_secret_parses_or_is_a_typed_error(self, data: bytes) -> None:
        """Whatever a pull secret holds: a config, or one line saying what is wrong."""
        try:
            config = parse_docker_config(SecretBytes(data), source="secret '/pull'")
        except MesosSecretsError as error:
            caught: MesosSecretsError = error
        else:
            for registry in config.registries:
                auth = config.credentials_for(registry)
                assert auth is not None
                assert ":" not in auth.username
                auth.username.encode("utf-8")
            return
        assert isinstance(caught, ProvisionerError)
        assert str(caught).startswith("Failed to parse docker config (secret '/pull'): ")
        assert "\n" not in str(caught)

    def test_never_echoes_content(self) -> None:
        value = canary()
        for text in (
            '{"auths": {"r": {"auth": "' + value,
            json.dumps({"auths": {"r": {"auth": value + "!"}}}),
            json.dumps({"auths": {"r": value}}),
            json.dumps({value: value}),
        ):
            with pytest.raises(ProvisionerError) as caught:
                parse_docker_config(SecretBytes(text))
            assert value not in str(caught.value)

    def test_password_is_masked(self) -> None:
        value = canary()
        config = parse({"auths": {"r": {"auth": auth("u", value)}}})
        assert value not in repr(config)
        assert value not in repr(config.credentials_for("r"))


class TestImageReference:
    @pytest.mark.parametrize(
        ("name", "parts"),
        [
            ("busybox", ("docker.io", "library/busybox", "latest", None)),
            ("user/app:1.2", ("docker.io", "user/app", "1.2", None)),
            ("registry.example.com/team/app:v1", ("registry.example.com", "team/app", "v1", None)),
            ("localhost:5000/app", ("localhost:5000", "app", "latest", None)),
            (
                "127.0.0.1:5000/a/b@sha256:" + "0" * 64,
                ("127.0.0.1:5000", "a/b", None, "sha256:" + "0" * 64),
            ),
            ("index.docker.io/library/alpine:3", ("docker.io", "library/alpine", "3", None)),
        ],
    )
    def test_parse(self, name: str, parts: tuple[str, str, str | None, str | None]) -> None:
        ref = ImageReference.parse(name)
        assert (ref.registry, ref.repository, ref.tag, ref.digest) == parts

    @pytest.mark.parametrize(
        "name", ["", "UPPER/case", "a:b:c", "x@sha256:123", "https://r/x", " x"]
    )
    def test_bad(self, name: str) -> None:
        with pytest.raises(ProvisionerError, match="Failed to parse docker image"):
            ImageReference.parse(name)


class TestRegistryOptions:
    def test_from_config(self) -> None:
        from mesos_secrets.images import RegistryOptions

        options = RegistryOptions.from_config(
            {"ca_bundle": "/ca.pem", "insecure_registries": ["http://r:5000"], "timeout": 3}
        )
        assert options.insecure_registries == ("r:5000",)
        assert options.verify() == "/ca.pem"

    def test_unknown_setting(self) -> None:
        from mesos_secrets import ConfigError
        from mesos_secrets.images import RegistryOptions

        with pytest.raises(ConfigError, match="unknown \\[images\\] setting 'ca'"):
            RegistryOptions.from_config({"ca": "x"})

    def test_trust_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from mesos_secrets.images import RegistryOptions

        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/bundle.pem")
        assert RegistryOptions().verify() == "/bundle.pem"
        monkeypatch.setenv("SSL_CERT_FILE", "/cert.pem")
        assert RegistryOptions().verify() == "/cert.pem"

    def test_no_credentials_over_plain_http(self) -> None:
        """An insecure (HTTP) registry never gets credentials unless explicitly allowed."""
        from mesos_secrets.docker_config import RegistryAuth
        from mesos_secrets.images import ImageReference, RegistryOptions, _Registry

        image = ImageReference.parse("r.local:5000/app")
        auth = RegistryAuth("u", SecretBytes("p"))
        options = RegistryOptions(insecure_registries=("r.local:5000",))
        with pytest.raises(ProvisionerError, match="credentials are never sent in the clear"):
            _Registry(image, auth, options, "secret '/pull'")
        _Registry(image, auth, attrs.evolve(options, insecure_credentials=True), "secret '/pull'")
        _Registry(image, None, options, "no pull secret")
