"""``mesos-secrets``: the command-line tool.

Exit status: 0 on success, 1 on an error the tool explains (bad input, missing secret,
unusable store), 2 on a usage error, 130 when interrupted. Errors are one line on
stderr, never a traceback (``-v`` adds the traceback for debugging) and never a value.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import MesosSecretsError, SecretValidationError, printable
from .hardening import protect_process

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    import logging
    from pathlib import Path
    from typing import Any

    from resolvers.agent import AgentResolver
    from resolvers.local import LocalStore

    from .groups import AppList, Group
    from .marathon import App, SpecError
    from .pods import Pod
    from .scan import Finding

# Each command imports what it needs when it runs: `--version` and `--help` load almost
# nothing (not even pathlib or logging), and `run` only the machinery its spec asks for.

__all__ = ["main"]

PROG = "mesos-secrets"


class UsageError(MesosSecretsError):
    """Bad command-line usage (exit status 2)."""


def _log() -> logging.Logger:
    import logging  # noqa: PLC0415

    return logging.getLogger("mesos_secrets.cli")


def _store(args: argparse.Namespace) -> LocalStore:
    from resolvers.local import LocalStore  # noqa: PLC0415  (keeps `--help` fast)

    return LocalStore(args.home)


def _read_field(spec: str, stdin_used: list[bool]) -> tuple[str, bytes]:
    key, sep, source = spec.partition("=")
    if not sep or not key:
        raise UsageError("expected KEY=VALUE, KEY=@FILE or KEY=-, got an argument without '='")
    if source == "-":
        if stdin_used[0]:
            raise UsageError("only one field can be read from standard input ('-')")
        stdin_used[0] = True
        if sys.stdin.isatty():
            import getpass  # noqa: PLC0415

            return key, getpass.getpass(f"{key}: ").encode("utf-8")
        return key, sys.stdin.buffer.read()
    if source.startswith("@"):
        path = _path(source[1:])
        try:
            return key, path.read_bytes()
        except OSError as error:
            raise SecretValidationError(
                f"cannot read the value of '{key}' from '{path}': {error.strerror}"
            ) from None
    _log().warning(
        "the value of '%s' was given on the command line, where process listings and shell "
        "history can see it; prefer %s=- (standard input) or %s=@FILE",
        key,
        key,
        key,
    )
    return key, source.encode("utf-8")


def cmd_secret_put(args: argparse.Namespace) -> int:
    stdin_used = [False]
    fields: dict[str, bytes] = {}
    for spec in args.fields:
        key, value = _read_field(spec, stdin_used)
        if key in fields:
            raise UsageError(f"key '{key}' is given twice")
        fields[key] = value
    version = _store(args).put(args.name, fields)
    print(f"stored {args.name} version {version} ({', '.join(sorted(fields))})", file=sys.stderr)
    return 0


def cmd_secret_get(args: argparse.Namespace) -> int:
    from .names import split_source  # noqa: PLC0415
    from .resolver import select_field  # noqa: PLC0415
    from .secret import Reference  # noqa: PLC0415

    name, key = split_source(args.name)
    key = args.key or key
    fields = _store(args).get(name, args.version)
    value = select_field(Reference(name, key), fields, resolver="local").reveal()
    out = sys.stdout.buffer
    out.write(value)
    if sys.stdout.isatty() and not value.endswith(b"\n"):
        out.write(b"\n")
    out.flush()
    return 0


def cmd_secret_ls(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    infos = _store(args).list(args.prefix)
    if args.json:
        json.dump(
            [
                {
                    "name": i.name,
                    "version": i.version,
                    "keys": list(i.keys),
                    "created": _iso(i.created),
                    "updated": _iso(i.updated),
                }
                for i in infos
            ],
            sys.stdout,
            indent=2,
        )
        print()
        return 0
    if not infos:
        print("no secrets", file=sys.stderr)
        return 0
    width = max(len(i.name) for i in infos)
    for i in infos:
        print(f"{i.name:<{width}}  v{i.version:<3} {_iso(i.updated)}  {', '.join(i.keys)}")
    return 0


def cmd_secret_rm(args: argparse.Namespace) -> int:
    _store(args).delete(args.name)
    print(f"removed {args.name}", file=sys.stderr)
    return 0


def cmd_secret_migrate(args: argparse.Namespace) -> int:
    store = _store(args)
    sealed = store.migrate()
    where = f"the embedded store at '{printable(str(store.home))}'"
    if sealed is None:
        print(f"{where} is already of format 2", file=sys.stderr)
    else:
        plural = "" if sealed == 1 else "s"
        print(f"migrated {where} to format 2 ({sealed} secret{plural})", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .config import load_config  # noqa: PLC0415
    from .registry import choose_resolver, get_resolver, resolvers  # noqa: PLC0415

    config = load_config(args.config, known=resolvers.names())
    name = choose_resolver(args.resolver, config)
    with get_resolver(name, config=config) as resolver:
        resolver.check()
    print(f"resolver '{name}' is ready", file=sys.stderr)
    return 0


def cmd_resolvers(args: argparse.Namespace) -> int:
    from .registry import resolvers  # noqa: PLC0415

    for name in resolvers.names():
        print(name)
    return 0


def cmd_install_executor(args: argparse.Namespace) -> int:
    from .install_executor import install, pymesos_imports  # noqa: PLC0415

    if pymesos_imports() and not args.again:
        print("pymesos is installed and imports: nothing to do (--again to reinstall)")
        return 0
    install()
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415

    from .agent import build_agent  # noqa: PLC0415
    from .agent.server import serve  # noqa: PLC0415
    from .config import load_config  # noqa: PLC0415
    from .registry import resolvers  # noqa: PLC0415

    if not args.verbose:  # a daemon says what it does: start, stop, refusals
        logging.getLogger("mesos_secrets.agent").setLevel(logging.INFO)
    config = load_config(args.config, known=resolvers.names())
    agent = build_agent(
        config,
        resolver=args.resolver,
        acls=args.acls,
        runtime_dir=args.runtime_dir,
        socket=args.socket,
        socket_group=args.socket_group,
        cache_ttl=args.cache_ttl,
        max_stale=args.max_stale,
        executor_secret_key=args.executor_secret_key,
        metrics_address=args.metrics_address,
    )
    return serve(agent)


def _agent_client(args: argparse.Namespace) -> AgentResolver:
    """The node agent's client, on ``--socket`` or where the resolver finds it."""
    from resolvers.agent import AgentResolver  # noqa: PLC0415

    return AgentResolver(socket=str(args.socket) if args.socket else None)


def cmd_agent_status(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    with _agent_client(args) as client:
        status = client.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    agent = status.get("agent", {})
    print(
        f"agent pid {agent.get('pid')} on {agent.get('socket')}: resolver "
        f"'{agent.get('resolver')}', {agent.get('cached')} cached, up {agent.get('uptime')}s"
    )
    for holder in status.get("containers", []):
        ids = " ".join(
            f"{name}={holder[name]}"
            for name in ("framework_id", "executor_id", "task_id", "container_id")
            if holder.get(name)
        )
        print(
            f"{holder.get('principal') or '-'} (uid {holder.get('uid')}, pid {holder.get('pid')})"
            f"{' ' + ids if ids else ''} since {holder.get('since')}"
        )
        for secret in holder.get("secrets", []):
            print(f"  {_holding_line(secret)}")
    for rollout in status.get("rollouts", []):
        stopped = f": stopped, {rollout['stopped']}" if rollout.get("stopped") else ""
        print(
            f"rollout of app {rollout['app']} for {rollout['change']}: "
            f"{len(rollout['healthy'])} restarted and healthy, "
            f"{len(rollout['restarting'])} restarting{stopped}"
        )
    return 0


def _holding_line(secret: dict[str, Any]) -> str:
    """One secret a caller holds, as ``agent status`` shows it."""
    key = f"@{secret['key']}" if secret.get("key") else ""
    if secret.get("missing"):
        return f"{secret['name']}{key}: not in the store (optional), waited for"
    version = f" version {secret['version']}" if secret.get("version") else ""
    line = f"{secret['name']}{key}{version}, {secret['age']}s old"
    if secret.get("stale"):
        line += f", {secret['stale']}s stale"
    if secret.get("outdated"):
        line += ", a newer version is in the store"
    if secret.get("refresh_failing_since"):
        line += (
            f", cannot be refreshed since {secret['refresh_failing_since']} "
            f"({secret.get('refresh_error', '')})"
        )
    return line


def cmd_agent_refresh(args: argparse.Namespace) -> int:
    with _agent_client(args) as client:
        answer = client.refresh(args.name)
    name = "/" + args.name.strip("/")
    version = f" (version {answer['version']})" if answer.get("version") else ""
    if answer.get("changed"):
        print(f"secret '{name}' changed{version}: {answer.get('told', 0)} task(s) told")
    else:
        print(f"secret '{name}' is unchanged{version}")
    return 0


#: How often ``revoke`` looks whether the tasks it revoked have stopped.
_REVOKE_POLL_S = 0.02


def cmd_revoke(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415
    import time  # noqa: PLC0415

    if args.all:
        scope, value = "all", ""
    elif args.secret is not None:
        value = args.secret
        scope = "prefix" if value.endswith(("/", "/*")) else "secret"
        value = value.removesuffix("*")
    elif args.task is not None:
        scope, value = "task", args.task
    else:
        scope, value = "framework", args.framework
    started = time.monotonic()
    with _agent_client(args) as client:
        answer = client.revoke(scope, value, args.reason or "")
        number = answer["revocation"]
        waiting: list[dict[str, Any]] = []
        deadline = started + args.wait
        while True:
            waiting = [
                entry
                for entry in client.status().get("stopping", [])
                if entry.get("revocation") == number
            ]
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(_REVOKE_POLL_S)
    seconds = time.monotonic() - started
    if args.json:
        print(json.dumps({**answer, "seconds": round(seconds, 3), "not_stopped": waiting}))
    else:
        names = answer.get("names", [])
        tasks = answer.get("tasks", [])
        print(
            f"{answer.get('reason')}: {len(names)} secret(s) forgotten, {len(tasks)} task(s) "
            f"told to stop; {len(tasks) - len(waiting)} stopped in {seconds:.3f} s"
        )
        for name in names:
            print(f"  secret {name}")
        for task in tasks:
            print(f"  task {task.get('task_id', '?')}")
    if waiting:
        ids = ", ".join(str(entry.get("task_id", entry.get("pid"))) for entry in waiting)
        print(
            f"{PROG}: error: {len(waiting)} task(s) had not stopped {args.wait:g} s after the "
            f"revocation: {ids}",
            file=sys.stderr,
        )
        return 1
    return 0


def _read_spec(path: str) -> bytes:
    """The bytes of the spec at ``path``; one line saying why if it cannot be read."""
    try:
        return _path(path).read_bytes()
    except OSError as error:
        raise SecretValidationError(f"cannot read spec '{path}': {error.strerror}") from None


def _load_spec(path: str, strict: bool = False) -> App | Pod | Group | AppList:
    from .marathon import load_spec  # noqa: PLC0415

    return load_spec(_read_spec(path), strict=strict)


def _report_spec_error(path: str, error: SpecError, as_json: bool) -> None:
    if as_json:
        import json  # noqa: PLC0415

        json.dump(error.to_json(), sys.stdout, indent=2)
        print()
        return
    print(printable(f"{path}: {error.message}"), file=sys.stderr)
    for detail in error.to_json()["details"]:
        for message in detail["errors"]:
            print(printable(f"  {detail['path']}: {message}"), file=sys.stderr)


def _spec_or_report(
    args: argparse.Namespace, as_json: bool = False
) -> App | Pod | Group | AppList | None:
    from .marathon import SpecError  # noqa: PLC0415

    try:
        return _load_spec(args.spec, strict=getattr(args, "strict", False))
    except SpecError as error:
        _report_spec_error(args.spec, error, as_json)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    from .acls import ACLs  # noqa: PLC0415
    from .config import load_config  # noqa: PLC0415
    from .errors import SecretAccessDeniedError  # noqa: PLC0415
    from .groups import AppList, Group  # noqa: PLC0415
    from .marathon import App  # noqa: PLC0415
    from .registry import resolvers  # noqa: PLC0415
    from .spec_reader import NOT_VALID, SpecError  # noqa: PLC0415

    spec = _spec_or_report(args, args.json)
    if spec is None:
        return 1
    acls_file = args.acls or load_config(args.config, known=resolvers.names()).acls
    if acls_file:
        acls = ACLs.load(acls_file)
        denied = []
        located = spec.located_apps() if isinstance(spec, Group | AppList) else (("", spec),)
        for where, one in located:
            for name, source in one.secrets.items():
                try:
                    acls.check(args.principal, [source.rpartition("@")[0] or source])
                except SecretAccessDeniedError as error:
                    denied.append((f"{where}/secrets/{name}/source", str(error)))
        if denied:
            _report_spec_error(args.spec, SpecError(NOT_VALID, denied), args.json)
            return 1
    if isinstance(spec, Group | AppList):
        count = len(spec.apps_in_order())
        apps = f"{count} app{'' if count == 1 else 's'}"
        what = f"group '{spec.id}' ({apps})" if isinstance(spec, Group) else f"array of {apps}"
    else:
        what = f"{'app' if isinstance(spec, App) else 'pod'} '{spec.id}'"
    print(f"{args.spec}: valid {what}", file=sys.stderr)
    if args.scan:
        for finding in _scan_file(args.spec):
            print(
                printable(
                    f"{args.spec}: warning: {finding.path}: {finding.kind} "
                    f'({finding.description}); move it into "secrets"'
                ),
                file=sys.stderr,
            )
    return 0


def _scan_file(path: str) -> list[Finding]:
    """The likely plaintext secrets of the spec at ``path`` (any JSON: not validated)."""
    import json  # noqa: PLC0415

    from .scan import scan_spec  # noqa: PLC0415

    text = _read_spec(path)
    try:
        spec = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        where = (
            f" (line {error.lineno}, column {error.colno}: {error.msg})"
            if isinstance(error, json.JSONDecodeError)
            else ""
        )
        raise SecretValidationError(f"spec '{path}' is not JSON{where}") from None
    return scan_spec(spec)


def cmd_scan(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    found: list[tuple[str, Finding]] = []
    failed = 0
    for path in args.specs:
        try:
            found += [(path, finding) for finding in _scan_file(path)]
        except SecretValidationError as error:
            print(f"{PROG}: error: {printable(str(error))}", file=sys.stderr)
            failed += 1
    if args.json:
        json.dump([{"file": path, **f.to_json()} for path, f in found], sys.stdout, indent=2)
        print()
    else:
        for path, finding in found:
            print(printable(f"{path}: {finding.path}: {finding.kind} ({finding.description})"))
    if found:
        files = len({path for path, _ in found})
        print(
            f"{PROG}: {len(found)} likely plaintext secret{'' if len(found) == 1 else 's'} in "
            f"{files} of {len(args.specs)} spec{'' if len(args.specs) == 1 else 's'}: Marathon "
            "and Mesos show them to anyone who can read their state; move each into "
            '"secrets" and refer to it ({"secret": NAME})',
            file=sys.stderr,
        )
    return 2 if failed else 1 if found else 0


def cmd_task_info(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from .marathon import App  # noqa: PLC0415
    from .pods import Pod  # noqa: PLC0415

    spec = _spec_or_report(args)
    if spec is None:
        return 1
    if isinstance(spec, App):
        shown: Any = spec.to_task_info().to_json()
    elif isinstance(spec, Pod):  # Mesos' LAUNCH_GROUP: the default executor and the task group
        executor, group = spec.to_launch_group()
        shown = {"executor": executor.to_json(), "task_group": group.to_json()}
    else:  # a group or an array: every app's task, dependencies first
        shown = [task.to_json() for task in spec.to_task_infos()]
    json.dump(shown, sys.stdout, indent=2)
    print()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config  # noqa: PLC0415
    from .registry import resolvers  # noqa: PLC0415
    from .run import Interrupted, RunOptions, run_app  # noqa: PLC0415

    spec = _spec_or_report(args)
    if spec is None:
        return 1
    config = load_config(args.config, known=resolvers.names())
    options = RunOptions(
        work_dir=args.work_dir,
        runtime_dir=args.runtime_dir,
        isolation=args.isolation,
        grace_period=args.grace_period,
        principal=args.principal,
        acls=args.acls,
        redact_output=True if args.redact_output else None,
    )
    try:
        return run_app(spec, config, options)
    except Interrupted as interrupted:
        print(
            f"{PROG}: interrupted while launching the task; "
            "it was stopped and nothing was left behind",
            file=sys.stderr,
        )
        return 128 + interrupted.signum


def _seconds(text: str) -> float:
    """A duration option: a finite, non-negative number of seconds."""
    import math  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("expected a finite, non-negative number of seconds")
    return value


def _path(text: str) -> Path:
    """A path argument (pathlib is loaded when a command takes one, not for `--version`)."""
    from pathlib import Path  # noqa: PLC0415

    return Path(text)


def _iso(timestamp: float) -> str:
    import datetime  # noqa: PLC0415

    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _add_access_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--acls",
        type=_path,
        metavar="FILE",
        help="who may use which secret (default: config 'acls')",
    )
    parser.add_argument("--principal", help="the principal the spec runs as, for the ACLs")


def _add_agent_parser(commands: Any) -> None:
    agent = commands.add_parser(
        "agent",
        help="the node agent: serve secrets to every task on this node from one cache",
        description="Run the node agent in the foreground: it alone holds the store's "
        "credentials and answers the 'agent' resolver of run and the executor on its Unix "
        "socket, checking each caller against the ACLs. Settings come from [agent] in the "
        "configuration; these flags override them. 'agent status' prints what each "
        "container holds.",
    )
    agent.add_argument(
        "--socket", type=_path, metavar="PATH", help="default <runtime-dir>/agent.sock"
    )
    agent.add_argument("--socket-group", metavar="GROUP", help="the group that may connect")
    agent.add_argument("--resolver", metavar="NAME", help="the store's resolver (not 'agent')")
    agent.add_argument(
        "--runtime-dir", type=_path, metavar="DIR", help="default /run/mesos-secrets as root"
    )
    agent.add_argument("--cache-ttl", type=_seconds, metavar="SECONDS", help="default 5")
    agent.add_argument(
        "--max-stale",
        type=_seconds,
        metavar="SECONDS",
        help="serve a value up to this long past its TTL while the store is down (default 0)",
    )
    agent.add_argument(
        "--executor-secret-key",
        type=_path,
        metavar="FILE",
        help="the Mesos agent's executor JWT key, to check executors' tokens",
    )
    agent.add_argument(
        "--metrics-address", metavar="HOST:PORT", help="serve Prometheus metrics on /metrics"
    )
    agent.add_argument("--acls", type=_path, metavar="FILE", help="default: config 'acls'")
    agent.set_defaults(func=cmd_agent)
    agent_actions = agent.add_subparsers(dest="action", metavar="ACTION")
    agent_status = agent_actions.add_parser(
        "status", help="each live container, its principal, and the secrets it holds"
    )
    agent_status.add_argument("--json", action="store_true", help="JSON output")
    agent_status.add_argument(
        "--socket", type=_path, metavar="PATH", default=argparse.SUPPRESS, help="the agent's"
    )
    agent_status.set_defaults(func=cmd_agent_status)
    agent_refresh = agent_actions.add_parser(
        "refresh",
        help="read a secret from the store now; tell the tasks holding it if it changed",
    )
    agent_refresh.add_argument("name", help="the secret's name, e.g. /myapp/db")
    agent_refresh.add_argument(
        "--socket", type=_path, metavar="PATH", default=argparse.SUPPRESS, help="the agent's"
    )
    agent_refresh.set_defaults(func=cmd_agent_refresh)


def _add_revoke_parser(commands: Any) -> None:
    revoke = commands.add_parser(
        "revoke",
        help="break-glass: revoke secrets on this node and stop the tasks holding them",
        description="Tell the node agent to revoke: the tasks that hold the secrets named "
        "(or the task, the framework, everything) are killed at once with a message saying "
        "why, their holdings end (their dynamic secrets' leases are revoked), the agent's "
        "cache forgets the secrets, their executor tokens are refused from then on, and the "
        "audit trail records it. Waits until every such task has stopped. Exit status 1 "
        "if some had not stopped within --wait.",
    )
    scope = revoke.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--secret",
        metavar="NAME",
        help="a secret by name, or every secret under a prefix ending in '/' (e.g. /myapp/)",
    )
    scope.add_argument("--task", metavar="ID", help="every secret of one task")
    scope.add_argument("--framework", metavar="ID", help="every secret of a framework's tasks")
    scope.add_argument("--all", action="store_true", help="everything this node's agent gave")
    revoke.add_argument("--reason", help="why, for the tasks' messages and the audit trail")
    revoke.add_argument(
        "--wait",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the tasks to stop (default 30)",
    )
    revoke.add_argument("--json", action="store_true", help="JSON output")
    revoke.add_argument(
        "--socket", type=_path, metavar="PATH", help="the agent's (default: as the resolver)"
    )
    revoke.set_defaults(func=cmd_revoke)


def _add_secret_parser(commands: Any) -> None:
    secret = commands.add_parser("secret", help="manage secrets in the embedded store")
    actions = secret.add_subparsers(dest="action", metavar="ACTION", required=True)

    put = actions.add_parser(
        "put",
        help="store a new version of a secret",
        description="Store a new version of secret NAME. KEY=- reads the value from "
        "standard input (prompting without echo on a terminal), KEY=@FILE from a file; "
        "KEY=VALUE works but leaves the value in shell history and process listings.",
    )
    put.add_argument("name", metavar="NAME", help="secret name, a path such as /myapp/db")
    put.add_argument("fields", metavar="KEY=VALUE|KEY=@FILE|KEY=-", nargs="+")
    put.set_defaults(func=cmd_secret_put)

    get = actions.add_parser("get", help="print a secret's value to standard output")
    get.add_argument("name", metavar="NAME", help="secret name, or NAME@KEY")
    get.add_argument("--key", "-k", help="the key to print, when the secret has several")
    get.add_argument("--version", type=int, help="an older version (default: the newest)")
    get.set_defaults(func=cmd_secret_get)

    ls = actions.add_parser("ls", help="list secrets (names and keys, never values)")
    ls.add_argument("prefix", metavar="PREFIX", nargs="?", help="only secrets under this path")
    ls.add_argument("--json", action="store_true", help="JSON output")
    ls.set_defaults(func=cmd_secret_ls)

    rm = actions.add_parser("rm", help="remove a secret and all its versions")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(func=cmd_secret_rm)

    migrate = actions.add_parser(
        "migrate",
        help="authenticate the metadata of a store written by an earlier version (format 1)",
        description="Seal the metadata of an embedded store written in format 1 (which "
        "versions are current and kept, which fields each has) as it stands, once; a "
        "store of format 2 is left as it is. Every other command refuses a format 1 store "
        "until then. Run it only on a store you know an earlier version wrote: one turned "
        "back to format 1 may have had its rows edited, and migrating it would trust them.",
    )
    migrate.add_argument(
        "--home",
        metavar="DIR",
        type=_path,
        default=argparse.SUPPRESS,
        help="the store's directory (as the global --home)",
    )
    migrate.set_defaults(func=cmd_secret_migrate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deliver secrets to Mesos tasks; manage the embedded secret store.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output")
    parser.add_argument(
        "--config", metavar="FILE", help="configuration file (default: $MESOS_SECRETS_CONFIG)"
    )
    parser.add_argument(
        "--home",
        metavar="DIR",
        type=_path,
        help="embedded store directory (default: $MESOS_SECRETS_HOME, "
        "else ~/.local/share/mesos-secrets)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_secret_parser(commands)

    check = commands.add_parser("check", help="check that the configured resolver works")
    check.add_argument("--resolver", metavar="NAME", help="resolver to check")
    check.set_defaults(func=cmd_check)

    validate = commands.add_parser(
        "validate",
        help="check a Marathon-style app, pod, group or array of apps as Marathon would",
        description="Exit 0 when the spec is valid; exit 1 with its violations otherwise.",
    )
    validate.add_argument("spec", metavar="SPEC.json")
    validate.add_argument(
        "--json", action="store_true", help="violations in Marathon's JSON error shape, on stdout"
    )
    validate.add_argument(
        "--strict",
        action="store_true",
        help="add Metronome's rules (unused secrets, file secrets only with MESOS containers) "
        "and, for groups, dependencies on what the spec does not define",
    )
    validate.add_argument(
        "--scan",
        action="store_true",
        help="also warn of likely plaintext secrets (as 'scan'; the exit status stays)",
    )
    _add_access_options(validate)
    validate.set_defaults(func=cmd_validate)

    scan = commands.add_parser(
        "scan",
        help="find likely plaintext secrets in specs (env, labels, commands, URIs, Docker "
        "parameters)",
        description="Each finding names the file, the JSON path and the kind, never the value. "
        "Exit 0: none found; 1: found; 2: a spec could not be read.",
    )
    scan.add_argument("specs", metavar="SPEC.json", nargs="+")
    scan.add_argument("--json", action="store_true", help="the findings as JSON, on stdout")
    scan.set_defaults(func=cmd_scan)

    task_info = commands.add_parser(
        "task-info",
        help="print the Mesos v1 TaskInfo (app), TaskGroupInfo (pod) or TaskInfos (group, "
        "array of apps: dependencies first) a spec launches",
    )
    task_info.add_argument("spec", metavar="SPEC.json")
    task_info.set_defaults(func=cmd_task_info)

    run = commands.add_parser(
        "run",
        help="run a spec here: resolve, isolate, launch, wait, clean up",
        description="Run a Marathon-style app, pod, group or array of apps on this machine. "
        "The exit status is the task's (128+N when killed by signal N); a pod's is its first "
        "failing container's, a group's its first failing app's (a group's apps start in "
        "dependency order). Without root, SECRET volumes and images run in a user namespace "
        "of the user's own; network modes other than host need root.",
    )
    run.add_argument("spec", metavar="SPEC.json")
    run.add_argument(
        "--work-dir",
        type=_path,
        metavar="DIR",
        help="the task's sandbox (kept afterwards; default: a temporary directory, removed)",
    )
    run.add_argument(
        "--runtime-dir",
        type=_path,
        metavar="DIR",
        help="where containers' runtime state lives (default: /run/mesos-secrets as root)",
    )
    run.add_argument(
        "--isolation",
        metavar="LIST",
        help="isolators, in order (default: environment_secret,volume_secret)",
    )
    run.add_argument(
        "--grace-period",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="after passing on SIGINT/SIGTERM, how long before the task is killed (default 10)",
    )
    run.add_argument(
        "--redact-output",
        action="store_true",
        help="replace every value a task was given (and its base64 and URL encodings) in "
        "its stdout and stderr with [redacted:NAME] (default: [containers] redact_output; "
        "a task's label mesos-secrets/redact-output overrides both)",
    )
    _add_access_options(run)
    run.set_defaults(func=cmd_run)

    _add_agent_parser(commands)
    _add_revoke_parser(commands)

    install_executor = commands.add_parser(
        "install-executor",
        help="install the executor's dependency, pymesos, into this Python environment",
        description="pymesos needs http-parser, whose C extension does not build on CPython "
        "3.11 and later: this builds it without (pymesos then uses its pure-Python parser), "
        "then installs pymesos, with this interpreter's pip.",
    )
    install_executor.add_argument(
        "--again", action="store_true", help="even if pymesos already imports"
    )
    install_executor.set_defaults(func=cmd_install_executor)

    resolvers_cmd = commands.add_parser("resolvers", help="list the available resolvers")
    resolvers_cmd.set_defaults(func=cmd_resolvers)
    return parser


def executor_main() -> int:
    """``mesos-secrets-executor``: the executor, once pymesos (its extra) imports; else
    one line saying how to install it."""
    try:
        import pymesos  # noqa: F401, PLC0415  # type: ignore[import-untyped,unused-ignore]
    except ImportError as error:
        print(
            f"mesos-secrets-executor: pymesos does not import ({printable(str(error), 200)}): "
            "install it with 'mesos-secrets install-executor'",
            file=sys.stderr,
        )
        return 1
    from .executor import main as executor  # noqa: PLC0415

    return executor()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line ``argv`` (default: this process's own, ``sys.argv``); returns
    the exit status."""
    status = _main(argv)
    if argv is None:
        # The process ends with this command. Whatever it built stays until then: frozen,
        # the interpreter's last collections skip it instead of walking every object of
        # every module loaded (~15 ms, a tenth of a `run`). Everything is still released
        # and closed at exit as before; only garbage cycles left now are not collected.
        import gc  # noqa: PLC0415

        gc.freeze()
    return status


def _main(argv: Sequence[str] | None) -> int:
    protect_process()  # before anything is read: tokens, values, keys
    parser = build_parser()
    args = parser.parse_args(argv)
    import logging  # noqa: PLC0415 (not before: `--version` and `--help` end in parse_args)

    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format=f"{PROG}: %(levelname)s: %(message)s",
    )
    # -vv is about our own steps, not every netlink message pyroute2 decodes
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    log = _log()
    if args.home is not None:
        os.environ["MESOS_SECRETS_HOME"] = str(args.home)
    try:
        return int(args.func(args))
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {printable(str(error))}", file=sys.stderr)
        return 2
    except MesosSecretsError as error:
        if args.verbose:
            log.exception("failed")
        print(f"{PROG}: error: {printable(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mesos-secrets secret get x | head -c1`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as error:  # a bug, ours or a plugin's
        if args.verbose:
            log.exception("failed")
        # Named by type only: the text of an error we did not write may quote a value.
        print(
            f"{PROG}: internal error: {type(error).__name__} "
            "(its message is withheld as it may quote a secret; -v shows it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
