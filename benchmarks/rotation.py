"""``python -m benchmarks.rotation``: how long a new version takes to reach running tasks.

N tasks (``mesos-secrets run`` of an app holding one secret file through a node agent,
the embedded store behind it) run. A new value is put in the store and pushed
(``mesos-secrets agent refresh``); timed from the push to the moment every task has the
new value, two ways side by side:

- ``in place``: ``mesos-secrets/on-change: signal:SIGUSR1``. The file is rewritten in
  the running task (the ``..data`` swap), and the task, told by the signal, copies it
  out, so the time includes the task noticing;
- ``restart``: ``mesos-secrets/on-change: restart`` with every task in one batch, what
  orchestrators that can only restart offer: each task is stopped and launched again,
  and copies the file out as it starts.

Prints one line per round and the medians; writes them to ``benchmarks/rotation.json``.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "rotation.json"
SECRET = "/bench/rotated"

#: Copies the secret out when told (SIGUSR1), and once as it starts.
TASK = (
    "copy() { cat secret/pw > seen.tmp && mv seen.tmp seen; }; trap copy USR1; copy; "
    "while :; do sleep 1 & wait; done"
)


def _app(on_change: str, tasks: int) -> dict[str, Any]:
    return {
        "id": "/bench/rotated",
        "cmd": TASK,
        "container": {
            "type": "MESOS",
            "volumes": [{"containerPath": "secret/pw", "secret": "pw"}],
        },
        "secrets": {"pw": {"source": f"{SECRET}@password"}},
        "labels": {
            "mesos-secrets/on-change": on_change,
            "mesos-secrets/restart-batch": str(tasks),
        },
    }


def _round(
    tasks: int,
    spec: Path,
    env: dict[str, str],
    directory: Path,
    put: Callable[[str], None],
) -> float:
    binary = str(Path(sys.executable).parent / "mesos-secrets")
    sandboxes = []
    processes = []
    old, new = os.urandom(16).hex(), os.urandom(16).hex()
    put(old)
    refresh = [binary, "agent", "refresh", SECRET]
    subprocess.run(refresh, env=env, capture_output=True, check=True)  # the agent has it
    try:
        for number in range(tasks):
            sandbox = Path(tempfile.mkdtemp(dir=directory, prefix=f"task{number}-"))
            sandboxes.append(sandbox)
            processes.append(
                subprocess.Popen(
                    [
                        binary,
                        "run",
                        str(spec),
                        "--work-dir",
                        str(sandbox),
                        "--runtime-dir",
                        str(directory / "runtime"),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=(directory / f"task{number}.log").open("wb"),
                    start_new_session=True,
                )
            )
        try:
            _until(lambda: all(_seen(s) == old for s in sandboxes), "the tasks to start")
        except RuntimeError:
            for number, sandbox in enumerate(sandboxes):
                if _seen(sandbox) != old:
                    log = (directory / f"task{number}.log").read_text(errors="replace")
                    print(f"task {number} did not start: {log[-2000:]}", file=sys.stderr)
            raise
        put(new)
        started = time.monotonic()
        subprocess.run(refresh, env=env, capture_output=True, check=True)
        _until(lambda: all(_seen(s) == new for s in sandboxes), "every task to have it")
        return time.monotonic() - started
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for sandbox in sandboxes:
            shutil.rmtree(sandbox, ignore_errors=True)


def _seen(sandbox: Path) -> str:
    try:
        return (sandbox / "seen").read_text()
    except FileNotFoundError:
        return ""


def _until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rotation")
    parser.add_argument("--tasks", type=int, default=20, help="tasks per round (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (default 5)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from resolvers.local import LocalStore  # noqa: PLC0415
    from tests.node_agent import NodeAgent  # noqa: PLC0415

    directory = Path(tempfile.mkdtemp(prefix="mesos-secrets-rotation-", dir="/var/tmp"))
    os.environ["MESOS_SECRETS_HOME"] = str(directory / "store")

    def put(value: str) -> None:
        store = LocalStore(directory / "store")
        try:
            store.put(SECRET, {"password": value.encode()})
        finally:
            store.close()

    put("first")
    node = NodeAgent(directory / "agent", agent="cache_ttl = 300\n")
    results: dict[str, Any] = {"tasks": args.tasks}
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
        env.update(
            PYTHONPATH=str(ROOT),
            MESOS_SECRETS_RESOLVER="agent",
            MESOS_SECRETS_AGENT_SOCKET=str(node.socket),
        )
        for way, on_change in (("in_place", "signal:SIGUSR1"), ("restart", "restart")):
            spec = directory / f"{way}.json"
            spec.write_text(json.dumps(_app(on_change, args.tasks)))
            rounds = []
            for number in range(1, args.rounds + 1):
                seconds = _round(args.tasks, spec, env, directory, put)
                rounds.append(seconds)
                print(
                    f"{way} round {number}: {args.tasks} tasks have the new value "
                    f"{seconds:.3f} s after the push",
                    flush=True,
                )
            results[way] = {"rounds": rounds, "median_s": round(statistics.median(rounds), 3)}
    finally:
        node.stop()
        node.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(
        f"median, {args.tasks} tasks: in place {results['in_place']['median_s']} s, "
        f"restarted {results['restart']['median_s']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
