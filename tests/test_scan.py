"""``mesos-secrets scan``: likely plaintext secrets, each named by its path and kind, never
its value; the false-positive rate measured on the ``marathon-wild`` corpus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesos_secrets.scan import KINDS, Finding, named_secret, scan_spec, scan_value
from mesos_secrets.testing import canary

BIN = Path(sys.executable).parent / "mesos-secrets"
WILD = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "marathon-wild"

#: Every finding in marathon-wild, each a real plaintext secret (a password, a MinIO
#: key, an openssl passphrase on a command line): none is a false positive.
WILD_FINDINGS = {
    ("091_tp_cmplxsource_mysql.json", "/env/MYSQL_ROOT_PASSWORD", "named-secret"),
    ("091_tp_cmplxsource_mysql.json", "/env/MYSQL_PASSWORD", "named-secret"),
    ("113_tp_dcos-examples_minio.json", "/env/MINIO_ACCESS_KEY", "named-secret"),
    ("113_tp_dcos-examples_minio.json", "/env/MINIO_SECRET_KEY", "named-secret"),
    ("126_dcosdocs_2.2-storage-persistent-volume_804ba4.json", "/env/MYSQL_PASSWORD", "named-secret"),
    ("126_dcosdocs_2.2-storage-persistent-volume_804ba4.json", "/env/MYSQL_ROOT_PASSWORD", "named-secret"),
    ("134_dcosdocs_2.2-storage-persistent-volume_c9e31f.json", "/env/POSTGRES_PASSWORD", "named-secret"),
    ("135_dcosdocs_2.2-tutorials-stateful-services_fbc9ba.json", "/env/POSTGRES_PASSWORD", "named-secret"),
    ("169_tp_roger_test-app-grafana.json", "/env/GF_DATABASE_PASSWORD", "named-secret"),
    ("177_tp_dcos-vagrant_stress.json", "/cmd", "command-line-secret"),
    ("188_olddocs_1.8-storage-persistent-volume_321128.json", "/env/MYSQL_PASSWORD", "named-secret"),
    ("188_olddocs_1.8-storage-persistent-volume_321128.json", "/env/MYSQL_ROOT_PASSWORD", "named-secret"),
    ("192_olddocs_1.8-storage-persistent-volume_c144c1.json", "/env/POSTGRES_PASSWORD", "named-secret"),
    ("194_olddocs_1.8-tutorials-stateful-index_f8ae4c.json", "/env/POSTGRES_PASSWORD", "named-secret"),
    ("203_olddocs_1.10-storage-persistent-volume_d5ae65.json", "/env/POSTGRES_PASSWORD", "named-secret"),
    ("215_mar_docsmd_persistent-volumes_4e43b6.json", "/env/POSTGRES_PASSWORD", "named-secret"),
    ("216_mar_docsmd_persistent-volumes_fb4a6d.json", "/env/MYSQL_PASSWORD", "named-secret"),
    ("216_mar_docsmd_persistent-volumes_fb4a6d.json", "/env/MYSQL_ROOT_PASSWORD", "named-secret"),
}  # fmt: skip


def wild_specs() -> list[Path]:
    return sorted(p for p in WILD.glob("*.json") if p.name != "expect.json")


def test_marathon_wild_has_no_false_positive() -> None:
    """Every spec of the corpus that is JSON (212 of 217) is scanned: the 18 findings
    are the corpus's plaintext passwords and keys, nothing else."""
    found = set()
    scanned = 0
    for path in wild_specs():
        try:
            spec = json.loads(path.read_bytes())
        except ValueError:
            continue  # the corpus's broken specs
        scanned += 1
        found |= {(path.name, f.path, f.kind) for f in scan_spec(spec)}
    assert scanned == 212
    assert found == WILD_FINDINGS


KEYS: dict[str, str] = {
    "private-key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----",
    "aws-access-key": "AKIA" + "Q3EGRIJUNJ5XTVXH",
    "github-token": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "gitlab-token": "glpat-" + "Ab3dEf6hIj9kLm2nOp5q",
    "slack-token": "xoxb-" + "123456789012-abcdefABCDEF",
    "stripe-key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "google-api-key": "AIza" + "SyA-1234567890abcdefghijklmnopqrstu",
    "vault-token": "hvs." + "CAESIJ4yWhfk0aBcDeFgHiJkLmNo",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


@pytest.mark.parametrize(("kind", "value"), sorted(KEYS.items()))
def test_known_formats_anywhere(kind: str, value: str) -> None:
    """A known format is found under any name, in every place a spec shows."""
    assert kind in scan_value(value, "env", "CONFIG")
    assert kind in scan_value(f"serve --config {value}", "command")
    assert kind in scan_value(value, "label", "note")


@pytest.mark.parametrize(
    ("value", "where", "kind"),
    [
        ("postgres://app:s3cretpw@db:5432/app", "env", "url-password"),
        ("https://user:pa55@example.com/file.tgz", "uri", "url-password"),
        ("https://example.com/a.tgz?X-Amz-Signature=abc123def&x=1", "uri", "url-query-credential"),
        ("https://example.com/a.tgz?access_token=abcdef123", "uri", "url-query-credential"),
        ("./run --db-password=hunter2x", "command", "command-line-secret"),
        ("export API_TOKEN=zz9plural; ./run", "command", "command-line-secret"),
        ("-Dapp.secret=opensesame", "parameter", "command-line-secret"),
        ("Kq8vN2xR5tY7uI0pL3mZ9wB4cV6nM1aS", "env", "high-entropy"),
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzXq2LmKEY", "env", "high-entropy"),  # base64, '/'s
        (
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08aa",
            "label",
            "high-entropy",
        ),
    ],
)
def test_found(value: str, where: str, kind: str) -> None:
    assert kind in scan_value(value, where, "SETTING")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_PASSWORD_FILE", "/run/secrets/db"),
        ("TOKEN_URL", "https://accounts.google.com/o/oauth2/token"),
        ("KEYSTORE_LOCATION", "/etc/ssl/keystore"),
        ("DB_PASSWORD", "$DB_PASSWORD"),
        ("DB_PASSWORD", "${VAULT_DB}"),
        ("API_KEY", "<your key>"),
        ("SECRET", ""),
        ("AUTH_ENABLED", "true"),
        ("AUTH_ALLOWED_DOMAINS", "example.com"),
        ("TOKEN_TTL", "3600"),
        ("IMAGE", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
        ("ID", "123e4567-e89b-12d3-a456-426614174000"),
        ("CHECKSUM", "d41d8cd98f00b204e9800998ecf8427e"),
        ("JAVA_OPTS", "-Xmx512m -XX:+UseG1GC"),
        ("DCOS_PACKAGE_METADATA", "eyJwYWNrYWdpbmdWZXJzaW9uIjoiMy4wIiwibmFtZSI6Im1pbmlvIn0="),
    ],
)
def test_not_found(name: str, value: str) -> None:
    assert scan_value(value, "env", name) == []


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("DB_PASSWORD", True),
        ("apiToken", True),
        ("aws-secret-access-key", True),
        ("API_KEY", True),
        ("REDIS_AUTH", True),
        ("PRIVATE_KEY", True),
        ("MONKEY", False),
        ("KEY_ID", False),
        ("PASSWORD_FILE", False),
        ("SECRET_NAME", False),
        ("AUTH_PROVIDER", False),
        ("TOKENS_URLS", False),
    ],
)
def test_names(name: str, says: bool) -> None:
    assert named_secret(name) is says


def test_every_place_of_every_shape() -> None:
    """Apps (env, labels, cmd, args, fetch, uris, checks, Docker parameters, network
    labels), pods (environment, containers' environment, labels, argv, artifacts) and
    groups, with their paths; secret references are what they should be."""
    leaked = canary()
    app: dict[str, Any] = {
        "id": "/a",
        "env": {"DB_PASSWORD": leaked, "REF": {"secret": "db"}},
        "labels": {"api_key": leaked},
        "args": ["serve", "--password", leaked],
        "fetch": [{"uri": f"https://u:{leaked}@example.com/x.tgz"}],
        "uris": [f"https://example.com/x.tgz?token={leaked}"],
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": f"check --token={leaked}"}}],
        "container": {"docker": {"parameters": [{"key": "env", "value": f"SECRET={leaked}"}]}},
        "networks": [{"mode": "container", "labels": {"secret": leaked}}],
    }
    pod = {
        "id": "/p",
        "environment": {"PASSWORD": leaked},
        "containers": [
            {
                "environment": {"TOKEN": leaked},
                "labels": {"auth": leaked},
                "exec": {"command": {"argv": ["x", "--secret", leaked]}},
                "artifacts": [{"uri": f"ftp://u:{leaked}@h/f"}],
            }
        ],
    }
    group = {"id": "/g", "apps": [app], "pods": [pod], "groups": [{"id": "/g/h", "apps": [app]}]}
    found = scan_spec(group)
    paths = [f.path for f in found]
    assert paths == [
        "/apps/0/env/DB_PASSWORD",
        "/apps/0/labels/api_key",
        "/apps/0/args/2",
        "/apps/0/fetch/0/uri",
        "/apps/0/uris/0",
        "/apps/0/healthChecks/0/command/value",
        "/apps/0/container/docker/parameters/0/value",
        "/apps/0/networks/0/labels/secret",
        "/pods/0/environment/PASSWORD",
        "/pods/0/containers/0/environment/TOKEN",
        "/pods/0/containers/0/labels/auth",
        "/pods/0/containers/0/exec/command/argv/2",
        "/pods/0/containers/0/artifacts/0/uri",
        "/groups/0/apps/0/env/DB_PASSWORD",
        "/groups/0/apps/0/labels/api_key",
        "/groups/0/apps/0/args/2",
        "/groups/0/apps/0/fetch/0/uri",
        "/groups/0/apps/0/uris/0",
        "/groups/0/apps/0/healthChecks/0/command/value",
        "/groups/0/apps/0/container/docker/parameters/0/value",
        "/groups/0/apps/0/networks/0/labels/secret",
    ]
    assert all(f.kind in KINDS for f in found)
    assert leaked not in repr(found)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["env", "labels", "cmd", "args", "containers", "apps", "exec"])
                | st.text(max_size=8),
                inner,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_any_json_is_scanned_without_error(spec: Any) -> None:
    for finding in scan_spec(spec):
        assert isinstance(finding, Finding)


class TestCommand:
    def test_findings_exit_1_and_never_the_value(self, tmp_path: Path) -> None:
        leaked = canary()
        spec = tmp_path / "app.json"
        spec.write_text(json.dumps({"id": "/a", "cmd": "x", "env": {"DB_PASSWORD": leaked}}))
        clean = tmp_path / "clean.json"
        clean.write_text(json.dumps({"id": "/b", "cmd": "x", "env": {"MODE": "prod"}}))
        result = subprocess.run(
            [str(BIN), "scan", str(spec), str(clean)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 1
        assert result.stdout == (
            f"{spec}: /env/DB_PASSWORD: named-secret "
            "(a value under a name that says it is a secret)\n"
        )
        assert "1 likely plaintext secret in 1 of 2 specs" in result.stderr
        assert leaked not in result.stdout + result.stderr
        as_json = subprocess.run(
            [str(BIN), "scan", "--json", str(spec)], capture_output=True, text=True, check=False
        )
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout) == [
            {
                "file": str(spec),
                "path": "/env/DB_PASSWORD",
                "kind": "named-secret",
                "description": "a value under a name that says it is a secret",
            }
        ]
        assert leaked not in as_json.stdout + as_json.stderr

    def test_nothing_found_exit_0(self, tmp_path: Path) -> None:
        clean = tmp_path / "clean.json"
        clean.write_text(json.dumps({"id": "/b", "cmd": "x"}))
        result = subprocess.run([str(BIN), "scan", str(clean)], capture_output=True, check=False)
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")

    def test_unreadable_exit_2_in_one_line(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.json"
        bad.write_text('{"id": "/a",\n  "cmd" "x"}')
        result = subprocess.run(
            [str(BIN), "scan", str(bad), str(tmp_path / "none.json")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"mesos-secrets: error: spec '{bad}' is not JSON (line 2, column 9: "
            "Expecting ':' delimiter)",
            f"mesos-secrets: error: cannot read spec '{tmp_path / 'none.json'}': "
            "No such file or directory",
        ]

    def test_validate_warns_and_stays_valid(self, tmp_path: Path) -> None:
        leaked = canary()
        spec = tmp_path / "app.json"
        spec.write_text(json.dumps({"id": "/a", "cmd": "x", "env": {"API_TOKEN": leaked}}))
        result = subprocess.run(
            [str(BIN), "validate", "--scan", str(spec)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0
        assert result.stderr.splitlines() == [
            f"{spec}: valid app '/a'",
            f"{spec}: warning: /env/API_TOKEN: named-secret (a value under a name that says "
            'it is a secret); move it into "secrets"',
        ]
        assert leaked not in result.stdout + result.stderr
