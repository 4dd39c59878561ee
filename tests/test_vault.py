"""The vault resolver against a real OpenBao server."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from mesos_secrets import (
    ConfigError,
    ResolveContext,
    ResolverError,
    ResolverUnavailableError,
    Secret,
    SecretAccessDeniedError,
    SecretBytes,
    SecretNotFoundError,
    SecretResolver,
    get_resolver,
)
from mesos_secrets.audit import AuditLog
from mesos_secrets.resolver import resolve_all
from mesos_secrets.testing import ResolverContract, canary, leaks
from resolvers.vault import VaultResolver, _Cache
from resolvers.vault_http import budget

from .bao import Bao
from .certs import CertificateAuthority
from .conftest import requires_root
from .hostile import Answer, ScriptedServer, SilentServer, SlowProxy
from .test_cli import cli
from .test_run import BIN, Runner, checking_app


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def setup(bao: Bao) -> Bao:
    """Mounts, policies and AppRole on the shared server, once."""
    root = bao.client()
    root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    root.sys.create_or_update_policy(
        "allowed-only", 'path "secret/data/allowed/*" { capabilities = ["read"] }'
    )
    root.sys.create_or_update_policy("reader", 'path "secret/data/*" { capabilities = ["read"] }')
    root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("task", token_policies=["reader"], token_ttl="5m")
    return bao


def put(bao: Bao, name: str, fields: dict[str, Any], mount: str = "secret") -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=name.strip("/"), secret=fields, mount_point=mount
    )


@pytest.fixture
def vault(setup: Bao) -> Iterator[Callable[..., VaultResolver]]:
    """Build resolvers for the shared server; all are closed afterwards."""
    made: list[VaultResolver] = []

    def make(**options: Any) -> VaultResolver:
        options.setdefault("address", setup.address)
        if not {"token", "wrapped_token", "role_id"} & set(options):
            options["token"] = setup.root_token
        resolver = VaultResolver.from_options(**options)
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        resolver.close()


class TestVaultContract(ResolverContract):
    @pytest.fixture
    def resolver(self, vault: Callable[..., VaultResolver]) -> SecretResolver:
        return vault()

    def store(self, resolver: SecretResolver, name: str, fields: dict[str, bytes]) -> None:
        assert isinstance(resolver, VaultResolver)
        client = hvac.Client(url=resolver.address, token=resolver.client.token)
        client.secrets.kv.v2.create_or_update_secret(
            path=name.strip("/"),
            secret={k: v.decode("utf-8", "surrogateescape") for k, v in fields.items()},
        )

    def test_reference_with_key(self, resolver: SecretResolver) -> None:
        """KV holds JSON strings: binary values are not what KV stores, so text here."""
        name = self.name()
        self.store(resolver, name, {"username": b"app", "password": b"pw"})
        assert resolver.resolve(Secret.for_reference(name, "password")).reveal() == b"pw"


class TestKV:
    def test_kv2(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        put(setup, "/app/db", {"password": "pw", "port": 5432, "opts": {"ssl": True}})
        resolver = vault()
        assert resolver.resolve(Secret.for_reference("/app/db", "password")).reveal() == b"pw"
        assert resolver.resolve(Secret.for_reference("app/db", "port")).reveal() == b"5432"
        assert resolver.resolve(Secret.for_reference("/app/db", "opts")).reveal() == b'{"ssl":true}'

    def test_kv1_detected(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        """A KV v1 mount is recognised from the mount's own options."""
        setup.client().secrets.kv.v1.create_or_update_secret(
            "legacy", {"v": "one"}, mount_point="kv1"
        )
        assert vault(mount="kv1").resolve(Secret.for_reference("/legacy")).reveal() == b"one"
        assert (
            vault(mount="kv1", kv_version="1").resolve(Secret.for_reference("/legacy")).reveal()
            == b"one"
        )

    def test_wrong_kv_version_configured(
        self, setup: Bao, vault: Callable[..., VaultResolver]
    ) -> None:
        setup.client().secrets.kv.v1.create_or_update_secret(
            "legacy2", {"v": "one"}, mount_point="kv1"
        )
        with pytest.raises(SecretNotFoundError):
            vault(mount="kv1", kv_version=2).resolve(Secret.for_reference("/legacy2"))

    def test_logical_mount(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        """Names under a logical mount are read as plain logical paths."""
        setup.client().secrets.kv.v1.create_or_update_secret(
            "plain", {"v": "raw"}, mount_point="kv1"
        )
        resolver = vault(logical_mounts="kv1")
        assert resolver.resolve(Secret.for_reference("/kv1/plain")).reveal() == b"raw"
        with pytest.raises(SecretNotFoundError, match="'/kv1/absent' not found at"):
            resolver.resolve(Secret.for_reference("/kv1/absent"))

    def test_missing_path_names_address(
        self, setup: Bao, vault: Callable[..., VaultResolver]
    ) -> None:
        with pytest.raises(SecretNotFoundError) as caught:
            vault().resolve(Secret.for_reference("/no/such/secret"))
        assert str(caught.value) == (
            f"secret '/no/such/secret' not found at {setup.address} (mount 'secret')"
        )

    def test_bad_names(self, vault: Callable[..., VaultResolver]) -> None:
        with pytest.raises(ResolverError, match="not a path in a Vault mount"):
            vault().resolve(Secret.for_reference("/a/../b"))

    def test_policy_denial(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        """A token whose policy does not cover the path: denied, named, no response body."""
        put(setup, "/allowed/x", {"v": "ok"})
        put(setup, "/forbidden/x", {"v": "no"})
        token = setup.client().auth.token.create(policies=["allowed-only"], ttl="5m")["auth"][
            "client_token"
        ]
        resolver = vault(token=token)
        assert resolver.resolve(Secret.for_reference("/allowed/x")).reveal() == b"ok"
        with pytest.raises(SecretAccessDeniedError) as caught:
            resolver.resolve(Secret.for_reference("/forbidden/x", "v"))
        message = str(caught.value)
        assert (
            message
            == f"{setup.address} denied access to secret '/forbidden/x@v' (403: the token's policies do not allow it)"
        )
        assert "permission denied" not in message  # the store's body is not echoed


class TestAuthentication:
    def test_environment_variables(self, setup: Bao, monkeypatch: pytest.MonkeyPatch) -> None:
        """VAULT_ADDR and VAULT_TOKEN configure a resolver chosen by name."""
        put(setup, "/env/x", {"v": "from-env"})
        monkeypatch.setenv("VAULT_ADDR", setup.address)
        monkeypatch.setenv("VAULT_TOKEN", setup.root_token)
        with get_resolver("vault") as resolver:
            assert resolver.resolve(Secret.for_reference("/env/x")).reveal() == b"from-env"

    def test_no_credentials(self, setup: Bao) -> None:
        with pytest.raises(ConfigError, match="has no credentials"):
            VaultResolver(address=setup.address)

    def test_no_address(self) -> None:
        with pytest.raises(ConfigError, match="needs an address"):
            VaultResolver(token="x")

    def test_two_methods(self, setup: Bao) -> None:
        with pytest.raises(
            ConfigError, match="one way to authenticate, not token and wrapped_token"
        ):
            VaultResolver(address=setup.address, token="a", wrapped_token="b")

    def test_approle(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        put(setup, "/approle/x", {"v": "ok"})
        root = setup.client()
        role_id = root.auth.approle.read_role_id("task")["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id("task")["data"]["secret_id"]
        resolver = vault(role_id=role_id, secret_id=secret_id)
        assert resolver.resolve(Secret.for_reference("/approle/x")).reveal() == b"ok"
        token = resolver.client.token
        resolver.close()
        with pytest.raises(hvac.exceptions.Forbidden):  # revoked on close
            setup.client(token).auth.token.lookup_self()

    def test_approle_wrapped_secret_id(
        self, setup: Bao, vault: Callable[..., VaultResolver]
    ) -> None:
        put(setup, "/approle/y", {"v": "ok"})
        root = setup.client()
        role_id = root.auth.approle.read_role_id("task")["data"]["role_id"]
        wrapped = root.auth.approle.generate_secret_id("task", wrap_ttl="60s")["wrap_info"]["token"]
        assert (
            vault(role_id=role_id, wrapped_secret_id=wrapped)
            .resolve(Secret.for_reference("/approle/y"))
            .reveal()
            == b"ok"
        )

    def test_approle_bad_secret_id(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        root = setup.client()
        role_id = root.auth.approle.read_role_id("task")["data"]["role_id"]
        with pytest.raises(ResolverError, match="refused to log in with AppRole"):
            vault(role_id=role_id, secret_id="not-a-secret-id").resolve(Secret.for_reference("/x"))


class TestBootstrap:
    """One-time bootstrap: a response-wrapped token, unwrapped exactly once."""

    def wrapped(self, bao: Bao, wrap_ttl: str = "60s", **options: Any) -> str:
        response = bao.client().auth.token.create(
            policies=["reader"], ttl="5m", wrap_ttl=wrap_ttl, **options
        )
        return str(response["wrap_info"]["token"])

    def test_unwrap_once_and_read(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        put(setup, "/boot/x", {"v": "ok"})
        wrapped = self.wrapped(setup)
        resolver = vault(wrapped_token=wrapped)
        resolver.check()  # unwraps now, at start-up
        assert resolver.client.token not in (None, wrapped)
        assert resolver.resolve(Secret.for_reference("/boot/x")).reveal() == b"ok"
        token = resolver.client.token
        resolver.close()
        with pytest.raises(hvac.exceptions.Forbidden):
            setup.client(token).auth.token.lookup_self()

    def test_replay_fails(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        wrapped = self.wrapped(setup)
        vault(wrapped_token=wrapped).check()
        with pytest.raises(
            SecretAccessDeniedError, match="expired or was already unwrapped .*replay"
        ):
            vault(wrapped_token=wrapped).check()

    def test_expired(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        wrapped = self.wrapped(setup, wrap_ttl="1s")
        time.sleep(1.5)
        with pytest.raises(SecretAccessDeniedError, match="has expired or was already unwrapped"):
            vault(wrapped_token=wrapped).check()

    def test_wrong_creation_path(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        """A wrapped response of something else (here a KV read) is not a bootstrap token."""
        put(setup, "/boot/other", {"v": "x"})
        wrapped = setup.client().adapter.get(
            "/v1/secret/data/boot/other", headers={"X-Vault-Wrap-TTL": "60s"}
        )["wrap_info"]["token"]
        with pytest.raises(
            SecretAccessDeniedError,
            match="wraps a response of 'secret/data/boot/other', not of 'auth/token/create'",
        ):
            vault(wrapped_token=wrapped).check()

    def test_renewal(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        """A short-lived renewable token is renewed before it expires."""
        put(setup, "/boot/renew", {"v": "ok"})
        response = setup.client().auth.token.create(
            policies=["reader"], ttl="2s", explicit_max_ttl="60s", renewable=True, wrap_ttl="60s"
        )
        wrapped = response["wrap_info"]["token"]
        resolver = vault(wrapped_token=wrapped, cache_ttl=0)
        resolver.check()
        time.sleep(4)
        assert resolver.resolve(Secret.for_reference("/boot/renew")).reveal() == b"ok"
        # Without renewal the 2 s token would be gone after 4 s, and the read refused.
        assert setup.client(resolver.client.token).auth.token.lookup_self()["data"][
            "last_renewal_time"
        ]


class TestTLS:
    def test_with_ca(self, bao_tls: Bao) -> None:
        bao_tls.client().secrets.kv.v2.create_or_update_secret(path="tls/x", secret={"v": "ok"})
        with VaultResolver(
            address=bao_tls.address, token=bao_tls.root_token, cacert=str(bao_tls.ca_file)
        ) as r:
            assert r.resolve(Secret.for_reference("/tls/x")).reveal() == b"ok"

    def test_wrong_ca(self, bao_tls: Bao, tmp_path: Path) -> None:
        """A CA that did not sign the server's certificate: a clear error, at once."""
        from .certs import CertificateAuthority

        other = CertificateAuthority(tmp_path / "other")
        with VaultResolver(
            address=bao_tls.address,
            token=bao_tls.root_token,
            cacert=str(other.ca.cert),
            deadline=30,
        ) as r:
            started = time.monotonic()
            with pytest.raises(
                ResolverError, match="certificate verify failed \\(check 'cacert' / VAULT_CACERT"
            ):
                r.resolve(Secret.for_reference("/tls/x"))
            assert time.monotonic() - started < 5  # not retried: a wrong CA stays wrong

    def test_client_certificate(self, bao_tls: Bao) -> None:
        """A listener that requires a client certificate accepts ours, refuses none."""
        assert bao_tls.mtls_address is not None
        bao_tls.client().secrets.kv.v2.create_or_update_secret(path="tls/m", secret={"v": "mtls"})
        ca = str(bao_tls.ca.ca.cert)
        with VaultResolver(
            address=bao_tls.mtls_address,
            token=bao_tls.root_token,
            cacert=ca,
            client_cert=str(bao_tls.client_cert.cert),
            client_key=str(bao_tls.client_cert.key),
        ) as r:
            assert r.resolve(Secret.for_reference("/tls/m")).reveal() == b"mtls"
        with (
            VaultResolver(
                address=bao_tls.mtls_address, token=bao_tls.root_token, cacert=ca, deadline=1
            ) as r,
            pytest.raises(ResolverError),
        ):
            r.resolve(Secret.for_reference("/tls/m"))


class TestFaults:
    def test_sealed(self, own_bao: Bao) -> None:
        put(own_bao, "/s", {"v": "ok"})
        own_bao.seal()
        with VaultResolver(address=own_bao.address, token=own_bao.root_token, deadline=1) as r:
            started = time.monotonic()
            with pytest.raises(
                ResolverUnavailableError,
                match=rf"{own_bao.address} is sealed or unavailable \(503\) after \d+ attempts",
            ):
                r.resolve(Secret.for_reference("/s"))
            assert time.monotonic() - started < 3

    def test_unsealed_while_retrying(self, own_bao: Bao) -> None:
        """Retries carry a resolution over a short outage."""
        put(own_bao, "/s", {"v": "ok"})
        own_bao.seal()
        threading.Timer(0.7, own_bao.unseal).start()
        with VaultResolver(address=own_bao.address, token=own_bao.root_token, deadline=20) as r:
            assert r.resolve(Secret.for_reference("/s")).reveal() == b"ok"

    def test_stopped(self, own_bao: Bao) -> None:
        own_bao.stop()
        with VaultResolver(address=own_bao.address, token=own_bao.root_token, deadline=1) as r:
            with pytest.raises(
                ResolverUnavailableError, match=f"cannot connect to {own_bao.address}"
            ):
                r.resolve(Secret.for_reference("/s"))
            with pytest.raises(ResolverUnavailableError):
                r.check()

    def test_coalescing(self, own_bao: Bao) -> None:
        """Concurrent requests for one secret make one store read (OpenBao's own audit log counts)."""
        audit = own_bao.audit_log
        assert audit is not None
        put(own_bao, "/hot", {"a": "1", "b": "2"})
        with VaultResolver(address=own_bao.address, token=own_bao.root_token, cache_ttl=0) as r:
            real = r.client.secrets.kv.v2.read_secret_version

            def slow_read(**kwargs: Any) -> Any:
                time.sleep(0.3)  # hold the read open so that the others arrive meanwhile
                return real(**kwargs)

            r.client.secrets.kv.v2.read_secret_version = slow_read  # type: ignore[method-assign]
            barrier = threading.Barrier(8)
            results: list[bytes] = []

            def one(key: str) -> None:
                barrier.wait()
                results.append(r.resolve(Secret.for_reference("/hot", key)).reveal())

            threads = [threading.Thread(target=one, args=("ab"[i % 2],)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert sorted(results) == [b"1"] * 4 + [b"2"] * 4
        reads = [
            line
            for line in audit.read_text().splitlines()
            if json.loads(line).get("type") == "request"
            and json.loads(line)["request"]["path"] == "secret/data/hot"
            and json.loads(line)["request"]["operation"] == "read"
        ]
        assert len(reads) == 1

    def test_cache(self, setup: Bao, vault: Callable[..., VaultResolver]) -> None:
        """Within cache_ttl a changed secret is not re-read; after it, it is."""
        put(setup, "/cached", {"v": "one"})
        resolver = vault(cache_ttl=0.5)
        assert resolver.resolve(Secret.for_reference("/cached")).reveal() == b"one"
        put(setup, "/cached", {"v": "two"})
        assert resolver.resolve(Secret.for_reference("/cached")).reveal() == b"one"
        time.sleep(0.6)
        assert resolver.resolve(Secret.for_reference("/cached")).reveal() == b"two"


class TestAudit:
    def test_records(self, setup: Bao, vault: Callable[..., VaultResolver], tmp_path: Path) -> None:
        """One JSON line per resolution: who, what, outcome, time, cache hit; never the value."""
        value = canary()
        put(setup, "/audited", {"v": value})
        resolver = vault()
        resolver.audit = AuditLog(tmp_path / "audit.log")
        context = ResolveContext(
            framework_id="fw", task_id="task-1", executor_id="ex", principal="ops"
        )
        resolver.resolve(Secret.for_reference("/audited", "v"), context)
        resolver.resolve(Secret.for_reference("/audited", "v"), context)
        with pytest.raises(SecretNotFoundError):
            resolver.resolve(Secret.for_reference("/absent"), context)
        text = (tmp_path / "audit.log").read_text()
        assert not leaks(value, text)
        records = [json.loads(line) for line in text.splitlines()]
        assert [(r["outcome"], r["cache_hit"]) for r in records] == [
            ("ok", False),
            ("ok", True),
            ("not_found", False),
        ]
        first = records[0]
        assert {
            k: first[k]
            for k in (
                "event",
                "resolver",
                "reference",
                "key",
                "framework_id",
                "task_id",
                "executor_id",
                "principal",
            )
        } == {
            "event": "resolve",
            "resolver": "vault",
            "reference": "/audited",
            "key": "v",
            "framework_id": "fw",
            "task_id": "task-1",
            "executor_id": "ex",
            "principal": "ops",
        }
        assert first["duration_ms"] >= 0
        assert "error" in records[2]

    def test_from_config(
        self,
        setup: Bao,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The [audit] table sends records to a file and to the mesos_secrets.audit logger."""
        put(setup, "/audited2", {"v": "x"})
        config = tmp_path / "c.toml"
        config.write_text(
            f'resolver = "vault"\n[resolvers.vault]\naddress = "{setup.address}"\ntoken = "{setup.root_token}"\n'
            f'[audit]\nfile = "{tmp_path / "a.log"}"\nlogger = true\n'
        )
        caplog.set_level(logging.INFO, logger="mesos_secrets.audit")
        with get_resolver(config=config) as resolver:
            resolver.resolve(Secret.for_reference("/audited2"))
        assert '"reference":"/audited2"' in (tmp_path / "a.log").read_text()
        assert '"reference":"/audited2"' in caplog.text


def test_no_value_in_errors_or_logs(
    setup: Bao, vault: Callable[..., VaultResolver], caplog: pytest.LogCaptureFixture
) -> None:
    """Failures around a secret holding a canary never show it, at DEBUG either."""
    caplog.set_level(logging.DEBUG)
    value = canary()
    put(setup, "/leak/x", {"a": value, "b": value})
    resolver = vault()
    texts = [repr(resolver)]
    for reference in (Secret.for_reference("/leak/x"), Secret.for_reference("/leak/x", "c")):
        with pytest.raises(ResolverError) as caught:
            resolver.resolve(reference)
        texts += [str(caught.value), repr(caught.value)]
    assert not leaks(value, caplog.text, *texts)
    assert not leaks(setup.root_token, caplog.text, *texts)


@requires_root
class TestRunWithVault:
    """`mesos-secrets run` end to end with MESOS_SECRETS_RESOLVER=vault."""

    def test_env_and_file(
        self, setup: Bao, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        value = canary()
        put(setup, "/myapp/db", {"password": value})
        audit = tmp_path / "audit.log"
        config = tmp_path / "config.toml"
        config.write_text(f'[audit]\nfile = "{audit}"\n')
        monkeypatch.setenv("MESOS_SECRETS_RESOLVER", "vault")
        monkeypatch.setenv("MESOS_SECRETS_CONFIG", str(config))
        monkeypatch.setenv("VAULT_ADDR", setup.address)
        monkeypatch.setenv("VAULT_TOKEN", setup.root_token)
        runner = Runner(tmp_path, home)
        result = runner.run(checking_app(value, value))
        assert result.returncode == 0, result.stderr.decode()
        assert b"all-checks-passed" in result.stdout
        runner.assert_no_residue()
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        assert {(r["reference"], r["key"], r["outcome"]) for r in records} == {
            ("/myapp/db", "password", "ok")
        }
        assert all(r["task_id"].startswith("test_app.instance-") for r in records)
        assert not leaks(value, result.stdout, result.stderr, audit.read_bytes())
        assert runner.files_contain(value) == []

    def test_missing_secret(
        self, setup: Bao, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MESOS_SECRETS_RESOLVER", "vault")
        monkeypatch.setenv("VAULT_ADDR", setup.address)
        monkeypatch.setenv("VAULT_TOKEN", setup.root_token)
        runner = Runner(tmp_path, home)
        result = runner.run(
            checking_app("x", "x") | {"secrets": {"db": {"source": "/not/there@password"}}}
        )
        assert result.returncode == 1
        assert f"secret '/not/there' not found at {setup.address}".encode() in result.stderr
        runner.assert_no_residue()

    def test_userinfo_not_printed(
        self, setup: Bao, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A password in VAULT_ADDR's userinfo shows neither in `run`'s errors nor in the
        audit trail."""
        password = canary()
        audit = tmp_path / "audit.log"
        config = tmp_path / "config.toml"
        config.write_text(f'[audit]\nfile = "{audit}"\n')
        monkeypatch.setenv("MESOS_SECRETS_RESOLVER", "vault")
        monkeypatch.setenv("MESOS_SECRETS_CONFIG", str(config))
        monkeypatch.setenv("VAULT_ADDR", setup.address.replace("://", f"://ops:{password}@"))
        monkeypatch.setenv("VAULT_TOKEN", setup.root_token)
        runner = Runner(tmp_path, home)
        result = runner.run(
            checking_app("x", "x") | {"secrets": {"db": {"source": "/not/there@password"}}}
        )
        assert result.returncode == 1
        masked = setup.address.replace("://", "://***@")
        assert f"secret '/not/there' not found at {masked}".encode() in result.stderr
        assert masked in audit.read_text()
        assert not leaks(password, result.stdout, result.stderr, audit.read_bytes())
        runner.assert_no_residue()


@requires_root
def test_dynamic_secret_lease(own_bao: Bao) -> None:
    """A dynamic secret (OpenBao's database engine on a real PostgreSQL): its lease is
    renewed while the resolver lives and revoked when it closes."""
    from .postgres import Postgres, database_engine

    database = Postgres()
    try:
        leases = database_engine(own_bao.client(), database)
        root = own_bao.client()

        with VaultResolver(
            address=own_bao.address, token=own_bao.root_token, logical_mounts="database"
        ) as resolver:
            username = resolver.resolve(
                Secret.for_reference("/database/creds/app", "username")
            ).reveal()
            password = resolver.resolve(
                Secret.for_reference("/database/creds/app", "password")
            ).reveal()
            assert username.startswith(b"v-")
            assert password
            (lease,) = leases()  # one read for both keys (the cache)
            time.sleep(5)  # past the 3 s TTL: only renewal keeps the lease
            info = root.sys.read_lease(f"database/creds/app/{lease}")["data"]
            assert info["ttl"] > 0
            assert info["last_renewal"]
        assert leases() == []  # revoked on close
    finally:
        database.stop()


#: How long past its deadline a cut-off resolution may take, on a loaded shared machine.
MARGIN = 1.5


def resolve_timed(resolver: VaultResolver, name: str) -> tuple[BaseException, float]:
    """Resolve ``name``, expecting a failure: the error and how long it took."""
    started = time.monotonic()
    with pytest.raises(ResolverError) as caught:
        resolver.resolve(Secret.for_reference(name))
    return caught.value, time.monotonic() - started


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether ``condition`` becomes true within ``seconds``."""
    until = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > until:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.timeout(60)  # a regression hangs: it must fail, not block the suite
class TestDeadline:
    """One budget per resolution, on every socket operation: no server, however slow,
    holds a resolution past its deadline (issue 11, item 2)."""

    @pytest.mark.parametrize("option", ["deadline", "timeout"])
    @pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
    def test_deadline_is_a_positive_number(self, option: str, value: str) -> None:
        """A deadline of 0 or NaN would fail every read, or never end one."""
        with pytest.raises(
            ConfigError, match=f"^option '{option}' of resolver 'vault' must be a positive number$"
        ):
            VaultResolver.from_options(address="http://127.0.0.1:1", token="t", **{option: value})

    @pytest.mark.parametrize("scheme", ["http", "https"])
    def test_silent_server(self, scheme: str) -> None:
        """A server that accepts and never answers (nor completes a TLS handshake)."""
        with SilentServer() as server:
            resolver = VaultResolver(address=server.address(scheme), token="t", deadline=1)
            with resolver:
                error, took = resolve_timed(resolver, "/x")
                assert isinstance(error, ResolverUnavailableError)
                assert str(error) == (
                    f"secret '/x' not resolved within the 1s deadline "
                    f"(waiting on {server.address(scheme)} to look up mount 'secret')"
                )
                assert (error.reference, error.resolver) == ("/x", "vault")
                assert took < 1 + MARGIN
                started = time.monotonic()
                with pytest.raises(
                    ResolverUnavailableError,
                    match=r"^could not look up its own token at .* within the 1s deadline$",
                ):
                    resolver.check()
                assert time.monotonic() - started < 1 + MARGIN

    def test_trickling_answer(self, setup: Bao) -> None:
        """A real server's answers, relayed one byte a second: each read gets a byte in
        time, so only a deadline on the whole exchange ends it."""
        put(setup, "/trickle/x", {"v": "ok"})
        with (
            SlowProxy(setup.address, trickle=1.0) as proxy,
            VaultResolver(address=proxy.address(), token=setup.root_token, deadline=1.5) as r,
        ):
            error, took = resolve_timed(r, "/trickle/x")
            assert isinstance(error, ResolverUnavailableError)
            assert "secret '/trickle/x' not resolved within the 1.5s deadline" in str(error)
            assert took < 1.5 + MARGIN
            assert proxy.slowed

    def test_trickling_tls_handshake(self, bao_tls: Bao) -> None:
        """Over TLS, the server's side of the handshake itself comes a byte a second."""
        with (
            SlowProxy(bao_tls.address, trickle=1.0) as proxy,
            VaultResolver(
                address=proxy.address("https"),
                token=bao_tls.root_token,
                cacert=str(bao_tls.ca_file),
                deadline=1.5,
            ) as r,
        ):
            error, took = resolve_timed(r, "/tls/x")
            assert isinstance(error, ResolverUnavailableError)
            assert "secret '/tls/x' not resolved within the 1.5s deadline" in str(error)
            assert took < 1.5 + MARGIN
            assert proxy.slowed

    def test_mount_lookup_and_read_share_one_budget(self, setup: Bao) -> None:
        """Each step in time, both together not: the second is cut at the deadline."""
        put(setup, "/shared/x", {"v": "ok"})
        with SlowProxy(setup.address, delay=0.6, only=b" /v1/s") as proxy:  # sys/…, secret/…
            with VaultResolver(
                address=proxy.address(), token=setup.root_token, deadline=1
            ) as resolver:
                error, took = resolve_timed(resolver, "/shared/x")
            assert str(error) == (
                "secret '/shared/x' not resolved within the 1s deadline "
                f"(waiting on {proxy.address()} to read)"
            )
            assert took < 1 + MARGIN
            # The same proxy, a budget that fits both steps: the answer comes.
            with VaultResolver(
                address=proxy.address(), token=setup.root_token, deadline=5
            ) as resolver:
                assert resolver.resolve(Secret.for_reference("/shared/x")).reveal() == b"ok"

    @staticmethod
    def login_options(bao: Bao, method: str) -> dict[str, Any]:
        root = bao.client()
        if method == "approle":
            role_id = root.auth.approle.read_role_id("task")["data"]["role_id"]
            secret_id = root.auth.approle.generate_secret_id("task")["data"]["secret_id"]
            return {"role_id": role_id, "secret_id": secret_id}
        return {"wrapped_token": TestBootstrap().wrapped(bao)}

    @pytest.mark.parametrize(
        ("method", "cut"), [("approle", "read"), ("bootstrap", "look up mount 'secret'")]
    )
    def test_login_shares_the_budget(self, setup: Bao, method: str, cut: str) -> None:
        """The login (AppRole; the bootstrap token's lookup and unwrap) spends the same
        budget as the mount lookup and the read: every request is in time, all of them
        together not."""
        put(setup, "/login/x", {"v": "ok"})
        with (
            SlowProxy(setup.address, delay=0.4) as proxy,
            VaultResolver(
                address=proxy.address(), deadline=1, **self.login_options(setup, method)
            ) as resolver,
        ):
            error, took = resolve_timed(resolver, "/login/x")
            assert str(error) == (
                "secret '/login/x' not resolved within the 1s deadline "
                f"(waiting on {proxy.address()} to {cut})"
            )
            assert isinstance(error, ResolverUnavailableError)
            assert took < 1 + MARGIN

    @pytest.mark.parametrize(
        ("method", "slow", "cut"),
        [
            ("approle", b"/v1/auth/approle/login", "log in with AppRole"),
            ("bootstrap", b"/v1/sys/wrapping/unwrap", "unwrap the bootstrap token"),
        ],
    )
    def test_login_cut_short(self, setup: Bao, method: str, slow: bytes, cut: str) -> None:
        """A login the deadline cut short names the reference it was for, and is not
        tried again with its spent one-time credentials."""
        put(setup, "/login/y", {"v": "ok"})
        with (
            SlowProxy(setup.address, delay=3, only=slow) as proxy,
            VaultResolver(
                address=proxy.address(), deadline=1, **self.login_options(setup, method)
            ) as resolver,
        ):
            error, took = resolve_timed(resolver, "/login/y")
            assert str(error) == (
                "secret '/login/y' not resolved within the 1s deadline "
                f"(waiting on {proxy.address()} to {cut})"
            )
            assert took < 1 + MARGIN
            with pytest.raises(
                ResolverError,
                match=rf"^cannot log in to {proxy.address()} for secret '/login/y': the login "
                "with one-time credentials failed earlier, and they are spent$",
            ):
                resolver.resolve(Secret.for_reference("/login/y"))

    def test_waiting_for_another_callers_read(self) -> None:
        """A resolution that finds the same secret being read by another caller waits for
        that read no longer than its own budget."""
        cache = _Cache(ttl=0)
        leading, release = threading.Event(), threading.Event()

        def slow_load() -> dict[str, SecretBytes]:
            leading.set()
            release.wait(10)
            return {"v": SecretBytes(b"ok")}

        leader = threading.Thread(target=cache.get, args=(("kv", "hot"), slow_load))
        leader.start()
        try:
            assert leading.wait(5)
            started = time.monotonic()
            with budget(0.5), pytest.raises(TimeoutError):
                cache.get(("kv", "hot"), slow_load)
            assert time.monotonic() - started < 0.5 + MARGIN
        finally:
            release.set()
            leader.join()

    @pytest.mark.parametrize(
        ("slow", "warning", "due"),
        # The lookup 2 s after start; the renewal at 2/3 of the 4 s then left.
        [("lookup-self", "looking up the resolver's token", 2), ("renew-self", "renewing", 5)],
    )
    def test_renewer_calls_are_bounded(
        self, setup: Bao, caplog: pytest.LogCaptureFixture, slow: str, warning: str, due: float
    ) -> None:
        """The renewer's lookup of an operator's token, and its renewals, each have a
        deadline: a trickling answer neither holds up a resolution nor the renewer."""
        caplog.set_level(logging.WARNING, logger="resolvers.vault")
        put(setup, "/renewer/x", {"v": "ok"})
        token = setup.client().auth.token.create(
            policies=["reader"], ttl="6s", explicit_max_ttl="60s", renewable=True
        )["auth"]["client_token"]
        with SlowProxy(setup.address, trickle=1.0, only=f"/v1/auth/token/{slow}".encode()) as proxy:
            started = time.monotonic()
            with VaultResolver(address=proxy.address(), token=token, deadline=1) as resolver:
                assert resolver.resolve(Secret.for_reference("/renewer/x")).reveal() == b"ok"
                assert time.monotonic() - started < 1 + MARGIN
                assert wait_for(lambda: f"{warning}" in caplog.text, due + 1 + MARGIN)
            assert proxy.slowed


class TestAddress:
    """VAULT_ADDR: malformed is a one-line ConfigError; userinfo is never printed."""

    @pytest.mark.parametrize(
        ("address", "shown", "reason"),
        [
            ("127.0.0.1:8200", "127.0.0.1:8200", "must start with https:// or http://"),
            ("ftp://127.0.0.1:8200", "ftp://127.0.0.1:8200", "must start with https://"),
            ("http://127.0.0.1:99999", "http://127.0.0.1:99999", "has a bad port"),
            ("http://127.0.0.1:port", "http://127.0.0.1:port", "has a bad port"),
            ("http://127.0.0.1:0", "http://127.0.0.1:0", "has a bad port"),
            ("http://", "http:", "has no host"),
            ("https://[::1:8200", "https://[::1:8200", "is not a URL"),
            ("http://127.0.0.1:8200?x=1", "http://127.0.0.1:8200?x=1", "must not have a query"),
            ("http://127.0.0.1:8200\n", "http://127.0.0.1:8200\\n", "contains a control"),
            ("http://127.0.0.1:82\x1b[31m00", "http://127.0.0.1:82\\x1b[31m00", "contains a"),
            ("http://127.0.0.1 :8200", "http://127.0.0.1 :8200", "contains a control"),
            ("https://u:pw\x7f@h:x", "https://***@h:x", "contains a control"),
            ("https://ops:pw@127.0.0.1:x", "https://***@127.0.0.1:x", "has a bad port"),
            # Read differently by different parsers: refused, not guessed at.
            ("http://u:12345/pw@vault:8200", "http://***@vault:8200", "has an '@' after its"),
            ("http://vault:8200/a@b", "http://***@b", "has an '@' after its host"),
            ("http://vault\\@evil:8200", "http://***@evil:8200", "contains a backslash"),
            ("http://h#@evil:1", "http://***@evil:1", "must not have a query or a fragment"),
            ("http://h?@evil:1", "http://***@evil:1", "must not have a query or a fragment"),
            ("http://ops:pw@", "http://***@", "has no host"),
            ("http://:8200", "http://:8200", "has no host"),
        ],
    )
    def test_malformed(
        self, address: str, shown: str, reason: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            VaultResolver(address=address, token="t")
        assert str(caught.value).startswith(
            f"resolver 'vault': option 'address' '{shown}' {reason}"
        )
        monkeypatch.setenv("VAULT_ADDR", address)
        with pytest.raises(ConfigError) as caught:
            VaultResolver(token="t")
        message = str(caught.value)
        assert message.startswith(f"resolver 'vault': VAULT_ADDR '{shown}' {reason}")
        assert message.isprintable()
        assert "pw" not in message

    @pytest.mark.parametrize(
        ("address", "shown"),
        [
            ("http://ops:p@w@127.0.0.1:8200", "http://***@127.0.0.1:8200"),
            ("http://ops:pw%40x@127.0.0.1:8200", "http://***@127.0.0.1:8200"),
            ("HTTPS://Vault.Example:8200/prefix/", "https://vault.example:8200/prefix"),
            ("http://[::1]:8200", "http://[::1]:8200"),
            ("http://vault", "http://vault"),
        ],
    )
    def test_shown_as_connected(self, address: str, shown: str) -> None:
        """What messages show is the host and port requests connects to (one parse)."""
        with VaultResolver(address=address, token="t") as resolver:
            assert resolver.address == shown
            assert "pw" not in repr(resolver)

    def test_message_names_the_host_connected_to(self) -> None:
        """A password with a '/' not percent-encoded: the review's case, where messages
        named one host and requests connected to another. Written as %2F, it works,
        and both name the same host."""
        with pytest.raises(ConfigError, match="has an '@' after its host"):
            VaultResolver(address="http://u:12345/pw@vault:8200", token="t")
        with SilentServer() as server:
            address = server.address().replace("://", "://u:12345%2Fpw@")
            with VaultResolver(address=address, token="t", deadline=0.5) as resolver:
                error, _ = resolve_timed(resolver, "/x")
        assert f"http://***@127.0.0.1:{server.port}" in str(error)
        assert "12345" not in str(error)

    def test_malformed_through_the_cli(self) -> None:
        result = cli(
            "check",
            env={
                "MESOS_SECRETS_RESOLVER": "vault",
                "VAULT_ADDR": "http://127.0.0.1:82\x1b[31m00",
                "VAULT_TOKEN": "t",
            },
        )
        assert result.returncode == 1
        assert result.stderr == (
            b"mesos-secrets: error: resolver 'vault': VAULT_ADDR 'http://127.0.0.1:82\\x1b[31m00'"
            b" contains a control character or a space\n"
        )

    def test_userinfo_never_printed(
        self, setup: Bao, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A password in the address's userinfo still reaches the server (basic auth, for a
        proxy in front of it), and nothing printed shows it: errors, repr, audit, logs."""
        caplog.set_level(logging.DEBUG)
        password = canary()
        put(setup, "/userinfo/x", {"a": "1", "b": "2"})
        address = setup.address.replace("://", f"://ops:{password}@")
        masked = setup.address.replace("://", "://***@")
        texts: list[str] = []
        with VaultResolver(address=address, token=setup.root_token) as resolver:
            resolver.audit = AuditLog(tmp_path / "audit.log")
            assert resolver.resolve(Secret.for_reference("/userinfo/x", "a")).reveal() == b"1"
            assert repr(resolver) == f"<VaultResolver {masked} mount='secret'>"
            texts.append(repr(resolver))
            for name in ("/userinfo/absent", "/userinfo/x@c", "/userinfo/x"):
                reference = Secret.for_reference(*name.split("@"))
                with pytest.raises(ResolverError) as caught:
                    resolver.resolve(reference)
                texts += [str(caught.value), repr(caught.value)]
            assert texts[1] == (f"secret '/userinfo/absent' not found at {masked} (mount 'secret')")
        with SilentServer() as server:
            unreachable = server.address().replace("://", f"://ops:{password}@")
            with VaultResolver(address=unreachable, token="t", deadline=0.5) as resolver:
                error, _ = resolve_timed(resolver, "/x")
                texts.append(str(error))
                assert "://***@127.0.0.1:" in str(error)
            result = cli(
                "check",
                env={
                    "MESOS_SECRETS_RESOLVER": "vault",
                    "VAULT_ADDR": unreachable,
                    "VAULT_TOKEN": "t",
                },
            )
        assert result.returncode == 1
        assert b"://***@127.0.0.1:" in result.stderr
        audit = (tmp_path / "audit.log").read_text()
        assert "***@" in audit
        assert not leaks(password, caplog.text, audit, result.stdout, result.stderr, *texts)


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


class TestTLSFiles:
    """VAULT_CACERT, VAULT_CLIENT_CERT, VAULT_CLIENT_KEY (BAO_*, the options) naming
    something that is not a usable file: one line naming the setting and the path."""

    @pytest.fixture
    def pki(self, tmp_path: Path) -> CertificateAuthority:
        return CertificateAuthority(tmp_path / "pki")

    @pytest.mark.parametrize(
        "setting",
        ["VAULT_CACERT", "BAO_CACERT", "cacert", "VAULT_CLIENT_CERT", "client_key"],
    )
    @pytest.mark.parametrize(
        ("make", "reason"),
        [
            (lambda p: p / "missing.pem", "does not exist"),
            (lambda p: p, "is a directory, not a file"),
            (lambda p: _fifo(p / "fifo"), "is not a regular file"),
            (lambda p: Path("/etc/hostname/ca.pem"), "cannot be used (Not a directory)"),
            (lambda p: p / "new\nline", "does not exist"),
        ],
    )
    def test_not_a_usable_file(
        self,
        pki: CertificateAuthority,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        setting: str,
        make: Callable[[Path], Path],
        reason: str,
    ) -> None:
        path = make(tmp_path)
        client = pki.issue("client", server=False)
        good = {"client_cert": str(client.cert), "client_key": str(client.key)}
        options: dict[str, Any] = {"address": "https://127.0.0.1:1", "token": "t"}
        if setting.islower():
            options[setting] = str(path)
            source = f"option '{setting}'"
        else:
            monkeypatch.setenv(setting, str(path))
            source = setting
        if "CLIENT" in setting or "client" in setting:
            other = "client_key" if "CERT" in setting else "client_cert"
            options.setdefault(other, good[other])
        with pytest.raises(ConfigError) as caught:
            VaultResolver(**options)
        shown = str(path).replace("\n", "\\n")
        assert str(caught.value) == f"resolver 'vault': {source} names '{shown}', which {reason}"

    def test_not_pem(self, pki: CertificateAuthority, tmp_path: Path) -> None:
        garbage = tmp_path / "garbage.pem"
        garbage.write_text("not a certificate\n")
        with pytest.raises(
            ConfigError,
            match=r"^resolver 'vault': option 'cacert' names '.*/garbage.pem', which holds no "
            r"PEM certificate \(NO_CERTIFICATE_OR_CRL_FOUND\)$",
        ):
            VaultResolver(address="https://127.0.0.1:1", token="t", cacert=str(garbage))
        client, other = pki.issue("client", server=False), pki.issue("other", server=False)
        with pytest.raises(
            ConfigError,
            match=r"^resolver 'vault': option 'client_cert' '.*/client.pem' and option "
            r"'client_key' '.*/other-key.pem' are not a PEM certificate and its key",
        ):
            VaultResolver(
                address="https://127.0.0.1:1",
                token="t",
                client_cert=str(client.cert),
                client_key=str(other.key),
            )

    def test_encrypted_key(
        self, pki: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An encrypted key is refused at once, not prompted for on the terminal."""
        from cryptography.hazmat.primitives import serialization

        client = pki.issue("client", server=False)
        key = serialization.load_pem_private_key(client.key.read_bytes(), None)
        encrypted = tmp_path / "encrypted-key.pem"
        encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            )
        )
        monkeypatch.setenv("VAULT_CLIENT_KEY", str(encrypted))
        with pytest.raises(
            ConfigError,
            match=r"^resolver 'vault': VAULT_CLIENT_KEY names '.*', which is encrypted",
        ):
            VaultResolver(address="https://127.0.0.1:1", token="t", client_cert=str(client.cert))

    @pytest.mark.parametrize("command", ["check", "run"])
    def test_through_the_cli(self, tmp_path: Path, command: str) -> None:
        """`check` and `run` print one line, no traceback."""
        spec = tmp_path / "app.json"
        spec.write_text(json.dumps({"id": "/app", "cmd": "true"}))
        missing = tmp_path / "missing-ca.pem"
        result = cli(
            *([command] if command == "check" else [command, str(spec)]),
            env={
                "MESOS_SECRETS_RESOLVER": "vault",
                "VAULT_ADDR": "https://127.0.0.1:1",
                "VAULT_TOKEN": "t",
                "VAULT_CACERT": str(missing),
            },
        )
        assert result.returncode == 1
        assert result.stderr.decode() == (
            f"mesos-secrets: error: resolver 'vault': VAULT_CACERT names '{missing}', "
            "which does not exist\n"
        )


# --- hostile answers: every field used is checked (issue 11, review 2, item 1) ------------

LOOKUP = "GET /v1/auth/token/lookup-self"
RENEW = "POST /v1/auth/token/renew-self"
MOUNT = "GET /v1/sys/internal/ui/mounts/secret"
READ = "GET /v1/secret/data/x"
READ_V1 = "GET /v1/secret/x"
LOGIN = "POST /v1/auth/approle/login"
WRAPPING = "POST /v1/sys/wrapping/lookup"
UNWRAP = "POST /v1/sys/wrapping/unwrap"

#: Put in malformed answers where a value could be: no message nor log may show it.
CANARY = "canary-" + secrets.token_hex(8)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def good_answers() -> dict[str, Answer | bytes]:
    """A store that answers every call the resolver makes as its API documents."""
    return {
        LOOKUP: _json({"data": {"ttl": 0, "renewable": False}}),
        RENEW: _json({"auth": {"client_token": CANARY, "lease_duration": 1.5}}),
        MOUNT: _json({"data": {"type": "kv", "options": {"version": "2"}}}),
        READ: _json({"data": {"data": {"v": "ok"}}}),
        READ_V1: _json({"data": {"v": "ok"}}),
        LOGIN: _json({"auth": {"client_token": CANARY, "lease_duration": 1.5}}),
        WRAPPING: _json({"data": {"creation_path": "auth/token/create"}}),
        UNWRAP: _json({"auth": {"client_token": CANARY, "lease_duration": 60}}),
        "POST /v1/auth/token/revoke-self": (204, b"", "application/json"),
    }


#: Malformed whatever the call: (name, answer, reason in the error).
ANY_CALL: list[tuple[str, Answer | bytes, str]] = [
    ("not-json", (200, b"<html>" + CANARY.encode(), "text/html"), "the answer is not JSON"),
    ("list", _json([CANARY]), "the answer is not a JSON object"),
    ("string", _json(CANARY), "the answer is not a JSON object"),
    (
        "deep",
        b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "the answer is nested too deeply to read",
    ),
    ("long-number", b'{"data": ' + b"7" * 5000 + b"}", "the answer is not JSON"),
]

#: Malformed answers to one call: (call, name, answer, reason in the error).
ONE_CALL: list[tuple[str, str, Answer | bytes, str]] = [
    (LOOKUP, "empty", b"{}", "the answer has no 'data' object"),
    (LOOKUP, "data-string", _json({"data": CANARY}), "the answer's 'data' is not a JSON object"),
    (LOOKUP, "ttl-x", _json({"data": {"ttl": CANARY}}), "the answer's 'data.ttl' is not a number"),
    (LOOKUP, "ttl-inf", b'{"data": {"ttl": 1e999}}', "'data.ttl' is not a number of seconds"),
    (LOOKUP, "ttl-negative", _json({"data": {"ttl": -5}}), "'data.ttl' is not a number of sec"),
    (LOOKUP, "renewable", _json({"data": {"renewable": CANARY}}), "'data.renewable' is not true"),
    (MOUNT, "empty", b"{}", "the answer has no 'data' object"),
    (MOUNT, "data-string", _json({"data": CANARY}), "the answer's 'data' is not a JSON object"),
    (
        MOUNT,
        "version-x",
        _json({"data": {"type": "kv", "options": {"version": CANARY}}}),
        "the answer's 'data.options.version' is not 1 or 2",
    ),
    (
        MOUNT,
        "options-string",
        _json({"data": {"type": "kv", "options": CANARY}}),
        "the answer's 'data.options' is not a JSON object",
    ),
    (MOUNT, "type-number", _json({"data": {"type": 5}}), "the answer's 'data.type' is not a str"),
    (READ, "empty", b"{}", "the answer has no 'data' object"),
    (READ, "data-string", _json({"data": CANARY}), "the answer's 'data' is not a JSON object"),
    (READ, "no-data-data", _json({"data": {}}), "the answer has no 'data.data' object"),
    (READ, "data-data-list", _json({"data": {"data": [CANARY]}}), "'data.data' is not a JSON"),
    (LOGIN, "empty", b"{}", "the answer has no 'auth' object"),
    (LOGIN, "auth-missing", _json({"data": {"x": CANARY}}), "the answer has no 'auth' object"),
    (LOGIN, "auth-string", _json({"auth": CANARY}), "the answer's 'auth' is not a JSON object"),
    (LOGIN, "no-token", _json({"auth": {}}), "the answer has no 'auth.client_token'"),
    (LOGIN, "token-number", _json({"auth": {"client_token": 5}}), "'auth.client_token' is not"),
    (
        LOGIN,
        "ttl-x",
        _json({"auth": {"client_token": CANARY, "lease_duration": "x"}}),
        "the answer's 'auth.lease_duration' is not a number",
    ),
    (WRAPPING, "empty", b"{}", "the answer has no 'data' object"),
    (WRAPPING, "path-number", _json({"data": {"creation_path": 5}}), "'data.creation_path' is"),
    (UNWRAP, "empty", b"{}", "the answer has no 'auth' object"),
    (UNWRAP, "auth-string", _json({"auth": CANARY}), "the answer's 'auth' is not a JSON object"),
    (UNWRAP, "token-list", _json({"auth": {"client_token": [CANARY]}}), "'auth.client_token'"),
]

#: How each call is made: the resolver's options, and the action that makes it.
HOW = {
    LOOKUP: ("token", "check"),
    MOUNT: ("token", "resolve"),
    READ: ("token", "resolve"),
    LOGIN: ("approle", "resolve"),
    WRAPPING: ("bootstrap", "resolve"),
    UNWRAP: ("bootstrap", "resolve"),
}

MALFORMED = [
    pytest.param(call, answer, reason, id=f"{call.split()[1]}-{name}")
    for call in HOW
    for name, answer, reason in ANY_CALL
] + [
    pytest.param(call, answer, reason, id=f"{call.split()[1]}-{name}")
    for call, name, answer, reason in ONE_CALL
]


def hostile_resolver(server: ScriptedServer, method: str, **options: Any) -> VaultResolver:
    auth: dict[str, Any] = {
        "token": {"token": CANARY},
        "approle": {"role_id": "role", "secret_id": CANARY},
        "bootstrap": {"wrapped_token": CANARY},
    }[method]
    return VaultResolver(address=server.address(), deadline=5, **auth, **options)


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """The exceptions that ended a thread (what would print a thread's traceback)."""
    caught: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: caught.append(args.exc_value))
    return caught


@pytest.mark.timeout(60)
class TestMalformedAnswers:
    """A store (or something in front of it) that answers with what its API does not
    document: a typed, one-line error naming what was wrong, never the answer; the
    renewer goes on."""

    @pytest.mark.parametrize(("call", "answer", "reason"), MALFORMED)
    def test_call(
        self,
        call: str,
        answer: Answer | bytes,
        reason: str,
        caplog: pytest.LogCaptureFixture,
        thread_errors: list[BaseException | None],
    ) -> None:
        caplog.set_level(logging.DEBUG)
        method, action = HOW[call]
        answers = good_answers()
        answers[call] = answer
        with ScriptedServer(answers) as server, hostile_resolver(server, method) as resolver:
            act = (
                resolver.check
                if action == "check"
                else lambda: resolver.resolve(Secret.for_reference("/x", "v"))
            )
            with pytest.raises(ResolverError) as caught:
                act()
            message = str(caught.value)
            assert reason in message
            assert message.startswith("cannot ")
            assert server.address() in message
            assert "\n" not in message
            assert message.isprintable()
            assert not isinstance(caught.value, SecretAccessDeniedError | SecretNotFoundError)
            assert server.asked(call) == 1  # not retried: the answer came, it is wrong
        assert not leaks(CANARY, message, repr(caught.value), caplog.text)
        assert thread_errors == []

    def test_messages_name_the_call(self) -> None:
        answers = good_answers()
        answers[MOUNT] = b"{}"
        with ScriptedServer(answers) as server, hostile_resolver(server, "token") as resolver:
            with pytest.raises(ResolverError) as caught:
                resolver.resolve(Secret.for_reference("/x", "v"))
            assert str(caught.value) == (
                f"cannot look up mount 'secret' at {server.address()} for secret '/x@v': "
                "the answer has no 'data' object"
            )
            server.answers[MOUNT] = good_answers()[MOUNT]
            server.answers[READ] = _json({"data": CANARY})
            with pytest.raises(ResolverError) as caught:
                resolver.resolve(Secret.for_reference("/x", "v"))
            assert str(caught.value) == (
                f"cannot read secret '/x@v' at {server.address()}: "
                "the answer's 'data' is not a JSON object"
            )

    def test_kv1_read(self) -> None:
        answers = good_answers()
        answers[MOUNT] = _json({"data": {"type": "kv", "options": None}})
        answers[READ_V1] = _json({"data": [CANARY]})
        with (
            ScriptedServer(answers) as server,
            hostile_resolver(server, "token") as resolver,
            pytest.raises(ResolverError, match="the answer's 'data' is not a JSON object"),
        ):
            resolver.resolve(Secret.for_reference("/x", "v"))

    @pytest.mark.parametrize(
        ("call", "method", "answer"),
        [
            pytest.param(call, "token", answer, id=f"lookup-self-{name}")
            for call, name, answer, _ in [(LOOKUP, n, a, r) for n, a, r in ANY_CALL]
            + [row for row in ONE_CALL if row[0] == LOOKUP]
        ]
        + [
            pytest.param(RENEW, "approle", answer, id=f"renew-self-{name}")
            for name, answer in [
                *((n, a) for n, a, _ in ANY_CALL),
                ("empty", b"{}"),
                ("auth-string", _json({"auth": CANARY})),
                ("ttl-x", _json({"auth": {"lease_duration": CANARY}})),
            ]
        ],
    )
    def test_renewer_survives(
        self,
        call: str,
        method: str,
        answer: Answer | bytes,
        caplog: pytest.LogCaptureFixture,
        thread_errors: list[BaseException | None],
    ) -> None:
        """The renewer's lookup (the operator's token) or renewal (a login's) answered
        malformed: a warning naming what was wrong, no traceback, and it tries again."""
        caplog.set_level(logging.DEBUG, logger="resolvers.vault")
        answers = good_answers()
        answers[call] = answer
        with ScriptedServer(answers) as server, hostile_resolver(server, method) as resolver:
            assert resolver.resolve(Secret.for_reference("/x", "v")).reveal() == b"ok"
            assert wait_for(lambda: server.asked(call) >= 2, 8), server.requests
            assert resolver._renewer is not None
            assert resolver._renewer.is_alive()
            # The store answers well again: the renewer carries on as usual.
            server.answers[call] = good_answers()[call]
            asked = server.asked(call)
            if call == RENEW:
                assert wait_for(lambda: server.asked(call) >= asked + 2, 8)
        assert thread_errors == []
        assert "the resolver's token at" in caplog.text
        assert "Traceback" not in caplog.text
        assert not leaks(CANARY, caplog.text)

    def test_renewer_outlives_an_unforeseen_failure(
        self,
        caplog: pytest.LogCaptureFixture,
        thread_errors: list[BaseException | None],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Whatever fails in a round (here a bug), the renewer logs its type and goes on."""
        caplog.set_level(logging.WARNING, logger="resolvers.vault")
        answers = good_answers()
        with ScriptedServer(answers) as server, hostile_resolver(server, "approle") as resolver:
            rounds: list[int] = []

            def broken() -> float:
                rounds.append(1)
                raise ZeroDivisionError(CANARY)

            monkeypatch.setattr(resolver, "_renew_token", broken)
            resolver.resolve(Secret.for_reference("/x", "v"))
            assert wait_for(lambda: len(rounds) >= 2, 8)
            assert resolver._renewer is not None
            assert resolver._renewer.is_alive()
        assert thread_errors == []
        assert "the renewer for" in caplog.text
        assert "ZeroDivisionError" in caplog.text
        assert not leaks(CANARY, caplog.text)


def _cli_env(server: ScriptedServer) -> dict[str, str]:
    return {
        "MESOS_SECRETS_RESOLVER": "vault",
        "VAULT_ADDR": server.address(),
        "VAULT_TOKEN": CANARY,
    }


def _one_line(stderr: bytes) -> str:
    """stderr holds one line (an error), no traceback, no canary."""
    text = stderr.decode()
    assert "Traceback" not in text
    assert not leaks(CANARY, stderr)
    assert text.count("\n") == 1, text
    assert text.endswith("\n")
    return text


@pytest.mark.timeout(120)
class TestMalformedThroughTheCLI:
    """The review's cases, through the command: one line on stderr, no traceback."""

    @pytest.mark.parametrize(
        "answer",
        [b"{}", _json({"data": CANARY}), b"[" * 100_000 + b"]" * 100_000],
        ids=["empty", "data-string", "deep"],
    )
    def test_check(self, answer: bytes) -> None:
        answers = good_answers()
        answers[LOOKUP] = answer
        with ScriptedServer(answers) as server:
            result = cli("check", env=_cli_env(server))
        assert result.returncode == 1
        assert _one_line(result.stderr).startswith(
            "mesos-secrets: error: cannot look up its own token at "
        )

    @pytest.mark.parametrize(
        ("call", "answer", "reason"),
        [
            (MOUNT, _json({"data": {"type": "kv", "options": {"version": "x"}}}), "version'"),
            (READ, (200, b"not json", "text/plain"), "the answer is not JSON"),
            (READ, b'{"data": ' + b"7" * 5000 + b"}", "the answer is not JSON"),
        ],
    )
    def test_run(self, tmp_path: Path, call: str, answer: Answer | bytes, reason: str) -> None:
        """`run` with the renewer's lookup also answered malformed (as in the review)."""
        answers = good_answers()
        answers[call] = answer
        answers[LOOKUP] = _json({"data": "not an object"})
        spec = tmp_path / "app.json"
        app = checking_app("x", "x") | {"id": "/app", "secrets": {"db": {"source": "/x@v"}}}
        spec.write_text(json.dumps(app))
        with ScriptedServer(answers) as server:
            result = subprocess.run(
                [
                    str(BIN),
                    "run",
                    str(spec),
                    "--work-dir",
                    str(tmp_path / "work"),
                    "--runtime-dir",
                    str(tmp_path / "runtime"),
                ],
                capture_output=True,
                env={**os.environ, **_cli_env(server)},
                timeout=60,
                check=False,
            )
        assert result.returncode == 1
        lines = result.stderr.decode().splitlines()
        assert "Traceback" not in result.stderr.decode()
        assert not leaks(CANARY, result.stderr)
        errors = [line for line in lines if line.startswith("mesos-secrets: error: ")]
        assert len(errors) == 1, lines
        assert reason in errors[0]
        # Besides it, at most the renewer's warnings, one line each.
        assert all(
            line.startswith("mesos-secrets: WARNING: looking up the resolver's token at ")
            for line in lines
            if line not in errors
        ), lines


# --- the deadline holds for names with several addresses, and for name lookups ---------

_CONNECT_PROBE = """
import json, sys, time
from mesos_secrets import ResolverError, Secret
from resolvers.vault import VaultResolver

resolver = VaultResolver(
    address=sys.argv[1], token="t", deadline=float(sys.argv[2]), timeout=5, kv_version=2
)
started = time.monotonic()
try:
    resolver.resolve(Secret.for_reference("/x"))
    print(json.dumps({"error": None}))
except ResolverError as error:
    took = time.monotonic() - started
    print(json.dumps({"error": type(error).__name__, "message": str(error), "took": took}))
"""


def _blackholes(addresses: list[str]) -> tuple[int, list[socket.socket]]:
    """Listeners on ``addresses`` (one port) whose accept queues are full: a connection
    to them is never accepted nor refused (the kernel drops its SYNs)."""
    held: list[socket.socket] = []
    port = 0
    for address in addresses:
        listener = socket.socket()
        listener.bind((address, port))
        port = listener.getsockname()[1]
        listener.listen(0)
        held.append(listener)
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((address, port))
            held.append(filler)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(0.3)
    with pytest.raises(TimeoutError):  # the blackhole holds
        probe.connect((addresses[0], port))
    probe.close()
    return port, held


def _resolve_in_namespace(
    tmp_path: Path, hosts: str, resolv: str, address: str, deadline: float
) -> dict[str, Any]:
    """Resolve in a process of a private mount namespace that sees ``hosts`` as
    /etc/hosts and ``resolv`` as /etc/resolv.conf."""
    (tmp_path / "hosts").write_text(hosts)
    (tmp_path / "resolv.conf").write_text(resolv)
    result = _run_in_namespace(tmp_path, address, deadline)
    assert result.returncode == 0, result.stderr.decode()
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


def _run_in_namespace(
    tmp_path: Path, address: str, deadline: float
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/resolv.conf && '
            'exec "$2" -c "$3" "$4" "$5"',
            str(tmp_path / "hosts"),
            str(tmp_path / "resolv.conf"),
            sys.executable,
            _CONNECT_PROBE,
            address,
            str(deadline),
        ],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        timeout=60,
        check=False,
    )


@requires_root
@pytest.mark.timeout(90)
class TestConnectDeadline:
    """A name with several addresses that never answer, a name server that never
    answers: the resolution still ends at its deadline (issue 11, review 2, item 2)."""

    def test_several_addresses(self, tmp_path: Path) -> None:
        addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        port, held = _blackholes(addresses)
        try:
            hosts = "".join(f"{a} vault.multi\n" for a in addresses) + "127.0.0.1 localhost\n"
            outcome = _resolve_in_namespace(
                tmp_path, hosts, "nameserver 127.0.0.1\n", f"http://vault.multi:{port}", 2
            )
        finally:
            for sock in held:
                sock.close()
        assert outcome["error"] == "ResolverUnavailableError"
        assert outcome["message"] == (
            f"secret '/x' not resolved within the 2s deadline "
            f"(waiting on http://vault.multi:{port} to read)"
        )
        assert outcome["took"] < 2 + MARGIN

    def test_silent_name_server(self, tmp_path: Path) -> None:
        """The lookup itself cannot be interrupted: it is waited for no longer than the
        deadline (here glibc would wait 2 attempts of 5 s)."""
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.9.9.53", 53))  # receives the queries, never answers
        try:
            outcome = _resolve_in_namespace(
                tmp_path,
                "127.0.0.1 localhost\n",
                "nameserver 127.9.9.53\noptions timeout:5 attempts:2\n",
                "http://vault.silent-dns.test:8200",
                1,
            )
        finally:
            server.close()
        assert outcome["error"] == "ResolverUnavailableError"
        assert "not resolved within the 1s deadline" in outcome["message"]
        assert outcome["took"] < 1 + MARGIN


@pytest.mark.timeout(60)
class TestConnectDeadlineInProcess:
    """The same, with the system's lookup replaced in the process: what it returns (three
    addresses), or how long it takes (longer than the deadline)."""

    @pytest.fixture
    def lookups(self, monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[[], list[Any]]]:
        """Names looked up by a function of the test's; others as the system does."""
        real = socket.getaddrinfo
        fakes: dict[str, Callable[[], list[Any]]] = {}

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            numeric = len(args) >= 4 and args[3] & socket.AI_NUMERICHOST
            if host in fakes and not numeric:
                return fakes[host]()
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return fakes

    def test_several_addresses(self, lookups: dict[str, Callable[[], list[Any]]]) -> None:
        addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        port, held = _blackholes(addresses)
        lookups["vault.multi"] = lambda: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses
        ]
        try:
            with VaultResolver(
                address=f"http://vault.multi:{port}", token="t", deadline=2, timeout=5
            ) as resolver:
                error, took = resolve_timed(resolver, "/x")
        finally:
            for sock in held:
                sock.close()
        assert isinstance(error, ResolverUnavailableError)
        assert "not resolved within the 2s deadline" in str(error)
        assert took < 2 + MARGIN

    def test_each_address_is_tried(self, lookups: dict[str, Callable[[], list[Any]]]) -> None:
        """Two blackholes before a server that answers: each gets a share of the budget,
        so the third is reached in time."""
        with ScriptedServer(good_answers()) as server:
            blackholed = ["127.0.0.2", "127.0.0.3"]
            port, held = _blackholes(blackholed)
            server_port = server.port
            lookups["vault.some"] = lambda: [
                *((socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in blackholed),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", server_port)),
            ]
            try:
                with VaultResolver(
                    address=f"http://vault.some:{port}", token="t", deadline=3, timeout=5
                ) as resolver:
                    assert resolver.resolve(Secret.for_reference("/x", "v")).reveal() == b"ok"
            finally:
                for sock in held:
                    sock.close()

    def test_slow_lookup(self, lookups: dict[str, Callable[[], list[Any]]]) -> None:
        release = threading.Event()

        def slow() -> list[Any]:
            release.wait(20)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

        lookups["vault.slow"] = slow
        try:
            with VaultResolver(address="http://vault.slow:8200", token="t", deadline=1) as r:
                error, took = resolve_timed(r, "/x")
                assert isinstance(error, ResolverUnavailableError)
                assert "not resolved within the 1s deadline" in str(error)
                assert took < 1 + MARGIN
                started = time.monotonic()
                with pytest.raises(ResolverUnavailableError, match="within the 1s deadline"):
                    r.check()
                assert time.monotonic() - started < 1 + MARGIN
        finally:
            release.set()


class TestTransport:
    """Requests go through urllib3 directly unless the environment names a proxy; then
    through requests, which applies it (and ``NO_PROXY``) as it always did."""

    @pytest.fixture(autouse=True)
    def _no_proxy_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.lower(), raising=False)

    def test_proxy_of_the_environment_is_used(self, monkeypatch: pytest.MonkeyPatch) -> None:
        store = "http://127.0.0.1:9"  # nothing there: only the proxy can answer
        proxied_answers = {
            key.replace(" ", f" {store}", 1): answer for key, answer in good_answers().items()
        }
        with ScriptedServer(proxied_answers) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.address())
            with VaultResolver(address=store, token=CANARY, deadline=5) as resolver:
                assert resolver.resolve(Secret.for_reference("/x", "v")).reveal() == b"ok"
            assert proxy.asked(READ.replace(" ", f" {store}", 1)) == 1

    def test_no_proxy_is_honoured(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with ScriptedServer(good_answers()) as server, ScriptedServer({}) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.address())
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            with hostile_resolver(server, "token") as resolver:
                assert resolver.resolve(Secret.for_reference("/x", "v")).reveal() == b"ok"
            assert server.asked(READ) == 1
            assert not proxy.requests

    def test_standby_redirect_is_followed(self) -> None:
        """A standby answers 307 with the active node's address, as Vault's do."""
        with ScriptedServer(good_answers()) as active, ScriptedServer({}) as standby:
            standby.answers[READ] = (307, b"", "application/json")
            standby.location = active.address()
            with hostile_resolver(standby, "token", kv_version=2) as resolver:
                assert resolver.resolve(Secret.for_reference("/x", "v")).reveal() == b"ok"
            assert standby.asked(READ) == 1
            assert active.asked(READ) == 1


class TestStoreRequests:
    """What a launch costs the store, counted by OpenBao's own audit device: one read per
    secret path, the mount's KV version once per process, no token lookup on the way."""

    @staticmethod
    def requests(bao: Bao) -> list[str]:
        assert bao.audit_log is not None
        return [
            entry["request"]["path"]
            for entry in map(json.loads, bao.audit_log.read_text().splitlines())
            if entry.get("type") == "request"
        ]

    def test_a_launch_reads_each_path_once(self, own_bao: Bao) -> None:
        for i in range(9):
            put(own_bao, f"/app/s{i}", {"a": f"{i}a", "b": f"{i}b"})
        # Ten references: nine paths, one of them with both its keys.
        refs = [Secret.for_reference(f"/app/s{i}", "a") for i in range(9)]
        refs.append(Secret.for_reference("/app/s0", "b"))
        before = len(self.requests(own_bao))
        with VaultResolver(address=own_bao.address, token=own_bao.root_token) as resolver:
            values = resolve_all(resolver, refs)
            asked = self.requests(own_bao)[before:]
        assert [v.reveal() for v in values if isinstance(v, SecretBytes)] == [
            f"{i}a".encode() for i in range(9)
        ] + [b"0b"]
        assert sorted(asked) == sorted(
            [f"secret/data/app/s{i}" for i in range(9)] + ["sys/internal/ui/mounts/secret"]
        ), asked

    def test_mount_looked_up_once_per_process(self, own_bao: Bao) -> None:
        put(own_bao, "/once", {"v": "ok"})
        before = len(self.requests(own_bao))
        for _ in range(3):
            with VaultResolver(address=own_bao.address, token=own_bao.root_token) as resolver:
                barrier = threading.Barrier(4)

                def one(resolver: VaultResolver = resolver, barrier: Any = barrier) -> None:
                    barrier.wait()
                    resolver.resolve(Secret.for_reference("/once"))

                threads = [threading.Thread(target=one) for _ in range(4)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        asked = self.requests(own_bao)[before:]
        assert asked.count("sys/internal/ui/mounts/secret") == 1, asked

    def test_cache_hits_use_no_thread(self, own_bao: Bao) -> None:
        for i in range(4):
            put(own_bao, f"/warm/s{i}", {"v": str(i)})
        refs = [Secret.for_reference(f"/warm/s{i}") for i in range(4)]
        with VaultResolver(address=own_bao.address, token=own_bao.root_token) as resolver:
            resolve_all(resolver, refs)
            started = threading.Thread.start
            calls: list[str] = []

            def counted(thread: threading.Thread) -> None:
                calls.append(thread.name)
                started(thread)

            threading.Thread.start = counted  # type: ignore[method-assign]
            try:
                values = resolve_all(resolver, refs)
            finally:
                threading.Thread.start = started  # type: ignore[method-assign]
        assert [v.reveal() for v in values if isinstance(v, SecretBytes)] == [
            b"0",
            b"1",
            b"2",
            b"3",
        ]
        assert calls == [], calls


@pytest.mark.parametrize(
    ("address", "reads"),
    [
        ("http://127.0.0.1:8200", 2),
        ("http://[::1]:8200", 2),
        ("https://localhost:8200", 2),
        ("https://vault.example:8200", 8),
        ("https://10.0.0.7:8200", 8),
    ],
)
def test_reads_at_once_by_where_the_store_is(address: str, reads: int) -> None:
    """On loopback a read is CPU, shared with the store: two at once; elsewhere eight."""
    with VaultResolver(address=address, token=CANARY) as resolver:
        assert resolver.concurrency == reads
    with VaultResolver(address=address, token=CANARY, concurrency=3) as resolver:
        assert resolver.concurrency == 3


def test_concurrency_is_checked() -> None:
    with pytest.raises(ConfigError, match="'concurrency' of resolver 'vault' must be from 1"):
        VaultResolver(address="http://127.0.0.1:8200", token=CANARY, concurrency=0)
