"""``python -m benchmarks.revocation``: how long the break-glass takes.

N tasks (``mesos-secrets run`` of an app holding one secret through a node agent, the
embedded store behind it) run; ``mesos-secrets revoke --secret`` is timed from the moment
it starts to the moment the last of those ``run`` processes has exited, its task killed
and cleaned up. Each round starts N fresh tasks. Prints one line per round and the
medians; writes them to ``benchmarks/revocation.json``.

Needs root (as ``run`` does for its containers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "revocation.json"
SECRET = "/bench/revoked"


def _round(
    tasks: int, spec: Path, env: dict[str, str], runtime: Path, status: Any
) -> dict[str, float]:
    binary = str(Path(sys.executable).parent / "mesos-secrets")
    processes = [
        subprocess.Popen(
            [binary, "run", str(spec), "--runtime-dir", str(runtime)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(tasks)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(status()["containers"]) < tasks:
            if time.monotonic() > deadline:
                raise RuntimeError("the tasks did not all start within 60 s")
            time.sleep(0.02)
        started = time.monotonic()
        done = subprocess.run(
            [binary, "revoke", "--secret", SECRET, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        answered = time.monotonic() - started
        pending = list(processes)
        while pending:
            pending = [p for p in pending if p.poll() is None]
            if time.monotonic() - started > 60:
                raise RuntimeError(f"{len(pending)} task(s) still ran 60 s after the revocation")
            time.sleep(0.002)
        exited = time.monotonic() - started
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    reported = json.loads(done.stdout)
    if reported["holders"] != tasks:
        raise RuntimeError(f"{reported['holders']} of {tasks} tasks were told to stop")
    return {"stopped_s": reported["seconds"], "command_s": answered, "all_exited_s": exited}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.revocation")
    parser.add_argument("--tasks", type=int, default=20, help="tasks per round (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from resolvers.local import LocalStore  # noqa: PLC0415
    from tests.node_agent import NodeAgent, request  # noqa: PLC0415

    directory = Path(tempfile.mkdtemp(prefix="mesos-secrets-revocation-", dir="/var/tmp"))
    os.environ["MESOS_SECRETS_HOME"] = str(directory / "store")
    store = LocalStore(directory / "store")
    store.put(SECRET, {"password": os.urandom(16).hex().encode()})
    store.close()
    node = NodeAgent(directory / "agent", agent="cache_ttl = 60\n")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
        env.update(
            PYTHONPATH=str(ROOT),
            MESOS_SECRETS_RESOLVER="agent",
            MESOS_SECRETS_AGENT_SOCKET=str(node.socket),
        )
        spec = directory / "app.json"
        spec.write_text(
            json.dumps(
                {
                    "id": "/bench/app",
                    "cmd": "sleep 120",
                    "env": {"S": {"secret": "s"}},
                    "secrets": {"s": {"source": f"{SECRET}@password"}},
                }
            )
        )
        rounds = []
        for number in range(1, args.rounds + 1):
            one = _round(
                args.tasks,
                spec,
                env,
                directory / "runtime",
                lambda: request(node.socket, "GET", "/v1/status")[1],
            )
            rounds.append(one)
            print(
                f"round {number}: {args.tasks} tasks told to stop and stopped in "
                f"{one['stopped_s']:.3f} s; all their front ends exited in "
                f"{one['all_exited_s']:.3f} s",
                flush=True,
            )
    finally:
        node.stop()
        node.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
    medians = {key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]}
    results = {"tasks": args.tasks, "rounds": rounds, "median": medians}
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(
        f"median: revoked and stopped in {medians['stopped_s']} s, every front end exited "
        f"in {medians['all_exited_s']} s ({args.tasks} tasks)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
