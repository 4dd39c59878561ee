"""The reliability suite's fast part (``python -m reliability --quick``): every fault
once, a few launches at once, a few hundred inputs per parser; its targets all met."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mesos_secrets.testing import canary
from reliability import sweep
from reliability.launches import Launched, Outcome
from resolvers.local import LocalStore

from .bao import Bao
from .conftest import requires_root
from .node_agent import NodeAgent, request, resolve

ROOT = Path(__file__).resolve().parents[1]


@requires_root
@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    output = tmp_path / "reliability.json"
    done = subprocess.run(
        [sys.executable, "-m", "reliability", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    results = json.loads(output.read_text())
    summary = results["summary"]
    assert summary["launches"] >= 15
    assert summary["faulted"] >= 10
    for key in ("hung", "failed_unclearly", "unexpected", "leaked_canaries", "residue"):
        assert summary[key] == 0, (key, results["problems"])
    assert summary["fuzz_crashes"] == 0
    assert set(results["faults"]) >= {"none", "task-killed", "run-killed", "concurrent"}
    assert "| target |" in done.stdout


# --- the sweep finds what it looks for ------------------------------------------------


def _lab(tmp_path: Path, bao: Bao | None = None, agent: NodeAgent | None = None) -> Any:
    """What the sweep reads of a lab: its directories; its OpenBao and node agent, for
    the tokens and the holdings (none: not looked at)."""
    for name in ("runtime", "store", "agent", "logs", "work", "small"):
        (tmp_path / name).mkdir(exist_ok=True)
    return SimpleNamespace(
        runtime=tmp_path / "runtime",
        home=tmp_path / "store",
        agent=agent or SimpleNamespace(base=tmp_path / "agent", socket=tmp_path / "none.sock"),
        logs=tmp_path / "logs",
        small=tmp_path / "small",
        directory=tmp_path,
        bao=bao,
    )


def _launched(tmp_path: Path, value: str, output: bytes = b"") -> Launched:
    outcome = Outcome("app", "local", "none", "succeeded", 0.1, 0, "", expected=True)
    return Launched(outcome, (value,), tmp_path / "work", output)


def test_the_sweep_finds_a_canary_in_a_file_and_in_the_output(tmp_path: Path) -> None:
    lab, value = _lab(tmp_path), canary()
    before = sweep.baseline()
    (tmp_path / "logs" / "deep").mkdir()
    (tmp_path / "logs" / "deep" / "trail.log").write_text(f"x {value} y")
    leaks, residue = sweep.check(lab, _launched(tmp_path, value, value.encode()), before)
    assert leaks == ["file " + str(tmp_path / "logs" / "deep" / "trail.log"), "the launch's output"]
    assert residue == []
    # Another launch's canary in the same file is not this one's leak.
    assert sweep.check(lab, _launched(tmp_path, canary()), before)[0] == []


def test_the_sweep_finds_a_canary_in_a_process_environment(tmp_path: Path) -> None:
    lab, value = _lab(tmp_path), canary()
    before = sweep.baseline()
    holder = subprocess.Popen(["sleep", "60"], env={"LEAKED": value})
    try:
        leaks, _ = sweep.check(lab, _launched(tmp_path, value), before)
    finally:
        holder.kill()
        holder.wait()
    assert leaks == [f"process {holder.pid}: sleep 60 "]


def test_the_sweep_finds_what_a_launch_left_in_tmp(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    before = sweep.baseline()
    left = Path(tempfile.mkdtemp(prefix="mesos-secrets-left-by-a-launch-"))
    try:
        _, residue = sweep.check(lab, _launched(tmp_path, canary()), before)
    finally:
        left.rmdir()
    assert residue == [str(left)]


def test_the_sweep_finds_a_canary_encoded(tmp_path: Path) -> None:
    """In base64 inside a longer text (a Docker config's ``auth``, a status update's
    ``data``) and in hex (a record, a dump): still the canary."""
    lab, value = _lab(tmp_path), canary()
    before = sweep.baseline()
    auth = base64.b64encode(f"pull:{value}".encode())
    (tmp_path / "work" / "dump").write_text(f"[{value.encode().hex().upper()}]")
    leaks, _ = sweep.check(lab, _launched(tmp_path, value, b'{"auth":"' + auth + b'"}'), before)
    assert leaks == ["file " + str(tmp_path / "work" / "dump"), "the launch's output"]
    assert sweep.canaries_in_files([tmp_path / "work"]) == {
        tmp_path / "work" / "dump": {value.encode()}
    }


def test_the_final_pass_finds_canaries_in_base64_at_any_alignment(tmp_path: Path) -> None:
    """The whole-directory pass knows no launch's values: it finds the canary's shape in
    base64 too, wherever in the encoded text it starts, standard or URL-safe."""
    values = [canary() for _ in range(4)]
    work = tmp_path / "work"
    work.mkdir()
    for skew, value in enumerate(values[:3]):
        encoded = base64.b64encode(b"u" * skew + f":{value}".encode())
        (work / f"auth{skew}").write_bytes(b'{"auth":"' + encoded + b'"}')
    (work / "url").write_bytes(b"?t=" + base64.urlsafe_b64encode(b"\xfb\xff" + values[3].encode()))
    (work / "innocent").write_bytes(base64.b64encode(b"no canary here, only text " * 4))
    found = sweep.canaries_in_files([work])
    assert found == {
        **{work / f"auth{skew}": {values[skew].encode()} for skew in range(3)},
        work / "url": {values[3].encode()},
    }


def test_the_sweep_finds_a_process_a_launch_left(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    before = sweep.baseline()
    left = subprocess.Popen(["sleep", "60"])
    try:
        _, residue = sweep.check(lab, _launched(tmp_path, canary()), before)
    finally:
        left.kill()
        left.wait()
    assert residue == [f"process {left.pid}: sleep 60 "]


@requires_root
def test_the_sweep_finds_a_store_token_no_one_revoked(tmp_path: Path, bao: Bao) -> None:
    """An executor revokes its token as it shuts down: one still alive after the launch
    is residue."""
    lab = _lab(tmp_path, bao=bao)
    before = sweep.baseline(lab)
    client = bao.client()
    try:
        accessor = client.auth.token.create(policies=["default"], ttl="5m")["auth"]["accessor"]
        try:
            _, residue = sweep.check(lab, _launched(tmp_path, canary()), before)
        finally:
            client.auth.token.revoke_accessor(accessor)
    finally:
        client.adapter.close()
    assert residue == [f"unrevoked store token {accessor}"]
    assert sweep.check(lab, _launched(tmp_path, canary()), before)[1] == []


@requires_root
def test_the_sweep_finds_a_holding_the_node_agent_still_records(
    tmp_path: Path, bao: Bao, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holding the agent keeps for a caller (here: this process, which never releases
    it) is residue once the launch is over; released, it is gone."""
    LocalStore(home).put("/reliability/held", {"password": canary().encode()})
    monkeypatch.setattr(sweep, "HOLDINGS_S", 0.5)
    agent = NodeAgent(tmp_path / "node-agent")
    try:
        lab = _lab(tmp_path, bao=bao, agent=agent)
        before = sweep.baseline(lab)
        assert resolve(agent.socket, {"name": "/reliability/held", "key": "password"})[0] == 200
        _, residue = sweep.check(lab, _launched(tmp_path, canary()), before)
        assert residue == [f"node agent holding for pid {os.getpid()}: /reliability/held"]
        assert request(agent.socket, "POST", "/v1/release", b"{}")[0] == 200
        assert sweep.check(lab, _launched(tmp_path, canary()), before)[1] == []
    finally:
        agent.stop()
        agent.cleanup()
