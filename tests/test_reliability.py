"""The reliability suite's fast part (``python -m reliability --quick``): every fault
once, a few launches at once, a few hundred inputs per parser; its targets all met."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import requires_root

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
