"""Who may use which secret: ACL rules, and their enforcement before anything is resolved."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesos_secrets import ConfigError, SecretAccessDeniedError
from mesos_secrets.acls import ACLs, secret_pattern

from .conftest import requires_root
from .test_run import BIN, Runner

EXAMPLE = {
    "permissive": False,
    "access_secrets": [
        {"principals": {"values": ["ops"]}, "secrets": {"values": ["/ops/**", "/shared/*"]}},
        {"principals": {"values": ["dev"]}, "secrets": {"values": ["/dev/*/db"]}},
        {"principals": {"type": "ANY"}, "secrets": {"type": "NONE"}},
    ],
}


class TestRules:
    acls = ACLs.from_json(EXAMPLE)

    @pytest.mark.parametrize(
        ("principal", "secret", "allowed"),
        [
            ("ops", "/ops/db", True),
            ("ops", "/ops/a/b/c", True),  # ** spans segments
            ("ops", "/shared/x", True),
            ("ops", "/shared/x/y", False),  # * stays within one
            ("ops", "shared/x", True),  # names compare with a leading /
            ("ops", "/dev/a/db", False),  # the first rule for ops decides
            ("dev", "/dev/web/db", True),
            ("dev", "/dev/web/api", False),
            ("dev", "/ops/db", False),
            ("someone", "/shared/x", False),  # ANY principal, NONE secret
            (None, "/shared/x", False),
        ],
    )
    def test_matching(self, principal: str | None, secret: str, allowed: bool) -> None:
        assert self.acls.allows(principal, secret) is allowed

    def test_permissive_when_nothing_matches(self) -> None:
        rules = {
            "access_secrets": [{"principals": {"values": ["ops"]}, "secrets": {"type": "ANY"}}]
        }
        assert not ACLs.from_json(rules).allows("dev", "/x")
        assert ACLs.from_json({**rules, "permissive": True}).allows("dev", "/x")

    def test_literal_characters(self) -> None:
        acls = ACLs.from_json(
            {
                "access_secrets": [
                    {"principals": {"type": "ANY"}, "secrets": {"values": ["/a.b/c+d"]}}
                ]
            }
        )
        assert acls.allows("p", "/a.b/c+d")
        assert not acls.allows("p", "/aXb/c+d")

    def test_denial_message(self) -> None:
        with pytest.raises(
            SecretAccessDeniedError, match="^Secret /ops/db is not accessible to principal 'dev'$"
        ):
            self.acls.check("dev", ["/dev/a/db", "/ops/db"])

    @pytest.mark.parametrize(
        ("document", "message"),
        [
            ([], "expected an object"),
            ({"permisive": True}, "unknown key(s) 'permisive'"),
            ({"permissive": "no"}, "'permissive' must be true or false"),
            (
                {"access_secrets": [{"principals": {"type": "ANY"}}]},
                "a rule has exactly 'principals' and 'secrets'",
            ),
            (
                {"access_secrets": [{"principals": {"type": "SOME"}, "secrets": {"type": "ANY"}}]},
                "'type' must be ANY or NONE",
            ),
            (
                {"access_secrets": [{"principals": {"values": "ops"}, "secrets": {"type": "ANY"}}]},
                "'values' must be a list",
            ),
        ],
    )
    def test_bad_files(self, tmp_path: Path, document: Any, message: str) -> None:
        path = tmp_path / "acls.json"
        path.write_text(json.dumps(document))
        with pytest.raises(ConfigError) as caught:
            ACLs.load(path)
        assert message in str(caught.value)
        assert str(path) in str(caught.value)


def write_acls(tmp_path: Path) -> Path:
    path = tmp_path / "acls.json"
    path.write_text(json.dumps(EXAMPLE))
    return path


APP = {
    "id": "/ops/app",
    "cmd": 'test -n "$PW"',
    "env": {"PW": {"secret": "pw"}},
    "secrets": {"pw": {"source": "/ops/db@password"}},
}


@requires_root
class TestRun:
    def run(
        self, tmp_path: Path, home: Path, principal: str
    ) -> tuple[subprocess.CompletedProcess[bytes], Path]:
        runner = Runner(tmp_path, home)
        runner.store.put("/ops/db", {"password": "pw"})
        audit = tmp_path / "audit.log"
        config = tmp_path / "c.toml"
        config.write_text(f'acls = "{write_acls(tmp_path)}"\n[audit]\nfile = "{audit}"\n')
        command = runner.command(APP, "--principal", principal)
        result = subprocess.run(
            [command[0], "--config", str(config), *command[1:]],
            capture_output=True,
            check=False,
            timeout=60,
        )
        runner.assert_no_residue()
        return result, audit

    def test_allowed(self, tmp_path: Path, home: Path) -> None:
        result, audit = self.run(tmp_path, home, "ops")
        assert result.returncode == 0, result.stderr.decode()
        events = [json.loads(line) for line in audit.read_text().splitlines()]
        assert [(e["event"], e["outcome"]) for e in events] == [
            ("authorize", "ok"),
            ("resolve", "ok"),
        ]

    def test_denied(self, tmp_path: Path, home: Path) -> None:
        """Denied before anything is resolved: the audit trail has the denial and no read."""
        result, audit = self.run(tmp_path, home, "dev")
        assert result.returncode == 1
        assert b"Secret /ops/db is not accessible to principal 'dev'" in result.stderr
        events = [json.loads(line) for line in audit.read_text().splitlines()]
        assert [(e["event"], e["outcome"], e["principal"]) for e in events] == [
            ("authorize", "denied", "dev")
        ]


def test_validate_with_acls(tmp_path: Path) -> None:
    """DC/OS refuses a spec naming a secret the service may not use; so does validate."""
    spec = tmp_path / "app.json"
    spec.write_text(json.dumps(APP))
    acls = write_acls(tmp_path)
    ok = subprocess.run(
        [str(BIN), "validate", str(spec), "--acls", str(acls), "--principal", "ops"],
        capture_output=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    denied = subprocess.run(
        [str(BIN), "validate", "--json", str(spec), "--acls", str(acls), "--principal", "dev"],
        capture_output=True,
        check=False,
    )
    assert denied.returncode == 1
    assert json.loads(denied.stdout) == {
        "message": "Object is not valid",
        "details": [
            {
                "path": "/secrets/pw/source",
                "errors": ["Secret /ops/db is not accessible to principal 'dev'"],
            }
        ],
    }


def _regex_of(glob: str) -> re.Pattern[str]:
    """What a glob means, as a regular expression (the oracle; it backtracks)."""
    out = []
    for part in re.split(r"(\*\*|\*)", "/" + glob.lstrip("/")):
        out.append(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part))
    return re.compile("".join(out))


@given(
    glob=st.text(alphabet="ab/*.", max_size=10),
    name=st.text(alphabet="ab/.", max_size=12).map(lambda n: "/" + n),
)
def test_a_secret_pattern_matches_as_its_regular_expression(glob: str, name: str) -> None:
    assert secret_pattern(glob).fullmatch(name) == bool(_regex_of(glob).fullmatch(name))


@pytest.mark.timeout(30)
def test_a_pattern_of_many_stars_cannot_stall_a_check() -> None:
    """The caller chooses the name: one that almost matches a glob of many ``*`` would
    keep a backtracking matcher busy for hours (0.5 s already at 10 stars)."""
    acls = ACLs.from_json(
        {
            "access_secrets": [
                {"principals": {"type": "ANY"}, "secrets": {"values": ["/" + "*a" * 25 + "*b"]}}
            ]
        }
    )
    assert not acls.allows("p", "/" + "a" * 80)
    assert acls.allows("p", "/" + "a" * 30 + "b")
