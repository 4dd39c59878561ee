"""``mesos-secrets run``: run a spec on this machine through the containerizer pipeline.

Resolve, (provision), isolate, launch, wait, clean up. The exit status is the task's
(128 + N when a signal N killed it). SIGINT, SIGTERM and SIGHUP are passed on to the
task; if it is still running ``grace_period`` seconds later it is killed. Before the
task starts they abort the launch. Either way nothing is left behind.

With the node agent's resolver, a task whose secrets are revoked on the node
(``mesos-secrets revoke``) is killed at once, and ``run`` says so (:mod:`.watcher`);
new versions of its secrets reach it as its labels say (:mod:`.rotation`), a restart
launching it again in the same sandbox.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeGuard

import attrs

from . import nofollow
from .config import Config
from .containerizer import Authorizer, Container, Containerizer, default_runtime_dir
from .containerizer import capabilities as caps
from .containerizer.launcher import PosixLauncher, Termination, keeping_the_terminal
from .containerizer.runc import RuncLauncher
from .containerizer.runtime import (
    RuntimeDir,
    container_part,
    default_fetcher_cache_dir,
    default_store_dir,
    pulls_under_way,
)
from .errors import ConfigError, LaunchCancelled, LaunchError, MesosSecretsError, printable
from .isolator import ContainerConfig, ContainerGroup, TaskUser, create_isolators
from .labels import labels_of
from .labels import redacts_output as label_redacts
from .marathon import App
from .mesos import CommandURI, ContainerType, TaskInfo
from .registry import get_resolver
from .resolver import ResolveContext, SecretResolver

# What only some specs need is imported when one does: images and registries (python-dxf,
# requests) for a task with an image, the fetcher (urllib3, archives) for one with URIs,
# checks for one with a health check or check, pods and groups for those specs, ACLs when
# configured. A command run on the host loads none of them.
if TYPE_CHECKING:
    from .checks import TaskChecks
    from .containerizer.pipeline import Provisioner, Rootfs
    from .fetcher import Fetcher
    from .groups import AppList, Group
    from .images import Progress
    from .pods import Pod
    from .rotation import Rotator
    from .watcher import Watcher

__all__ = ["Interrupted", "RunOptions", "build_containerizer", "log_progress", "run_app"]

log = logging.getLogger(__name__)

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A signal arrived before the task started: the launch is abandoned."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@attrs.frozen
class RunOptions:
    """The options of ``mesos-secrets run``."""

    work_dir: Path | None = None
    runtime_dir: Path | None = None
    isolation: str | None = None
    grace_period: float = 10.0
    principal: str | None = None
    acls: Path | None = None
    #: Whether the tasks' output has their values replaced (None: as configured; a
    #: task's label ``mesos-secrets/redact-output`` says otherwise).
    redact_output: bool | None = None


def run_app(
    app: App | Pod | Group | AppList, config: Config, options: RunOptions | None = None
) -> int:
    """Run an app (one task), a pod (a task per container), or a group or an array of
    apps (a task per app) to completion.

    Returns the task's exit status; for several tasks, 0 when every one succeeds, else
    the status of the first to fail (the others are then stopped, as Mesos' default
    executor stops a task group). A group's apps start in dependency order, each once
    the apps it depends on have started: not once they are healthy or ready, as
    Marathon's deployments wait.
    """
    options = options or RunOptions()
    if options.redact_output is None:
        options = attrs.evolve(options, redact_output=configured_redaction(config))
    tasks, sandboxes, kind, group = _tasks(app)
    for task in tasks:
        if task.container is not None and task.container.type is ContainerType.DOCKER:
            which = f"task '{printable(task.name)}': " if len(tasks) > 1 else ""
            raise LaunchError(
                f"{which}container.type DOCKER needs Docker's containerizer, which has no "
                "secrets support (Mesos: 'Secrets are only supported for Mesos "
                'containerizer\'); use "MESOS"'
            )
    runtime_dir = options.runtime_dir or (
        Path(config.runtime_dir) if config.runtime_dir else default_runtime_dir()
    )
    acls_file = options.acls or config.acls
    acls = None
    if acls_file:
        from .acls import ACLs  # noqa: PLC0415

        acls = ACLs.load(acls_file)
    with get_resolver(config=config) as resolver:
        containerizer = build_containerizer(
            config,
            resolver,
            runtime_dir,
            isolation=options.isolation,
            progress=_terminal_progress() if sys.stderr.isatty() else log_progress,
            authorize=acls.authorizer(resolver.audit) if acls is not None else None,
        )
        containerizer.recover()
        claim = None
        if options.work_dir is None:
            # A directory of ours (0711: a task may pass through, not rename or list it)
            # with the sandbox in it under a name no other task can guess; claimed, so
            # that recover removes it if we die.
            base = Path(tempfile.mkdtemp(prefix="mesos-secrets-sandbox-"))
            try:
                base.chmod(0o711)
                claim = containerizer.claim_sandbox(base)
            except BaseException:
                nofollow.remove_tree(base)
                raise
            root = base / os.urandom(8).hex()  # secrets.token_hex, without its imports
            root.mkdir()
        else:
            root = options.work_dir
            root.mkdir(parents=True, exist_ok=True)
        try:
            with keeping_the_terminal(), _Signals(options.grace_period) as signals:
                status = _run_tasks(
                    containerizer,
                    tasks,
                    [root / name if name else root for name in sandboxes],
                    signals,
                    options,
                    kind=kind,
                    resolver=resolver,
                    group=group,
                )
        finally:
            if claim is not None:
                containerizer.release_sandbox(claim)
    return status


def _tasks(
    spec: App | Pod | Group | AppList,
) -> tuple[tuple[TaskInfo, ...], list[str], str, ContainerGroup | None]:
    """The tasks to launch, in order, each's sandbox (a name under the run's directory,
    or ``""``: that directory), what they make up (``app``, ``pod``, ``group``), and for
    a pod the group its containers are (its executor: the network they share)."""
    if isinstance(spec, App):
        return (spec.to_task_info(),), [""], "app", None
    if _is_pod(spec):
        executor, task_group = spec.to_launch_group()
        tasks = task_group.tasks
        pod = ContainerGroup.of_executor(executor.executor_id, executor)
        return tasks, [task.name for task in tasks], "pod", pod
    from .groups import AppList, Group  # noqa: PLC0415 (loaded already: the spec is one)

    assert isinstance(spec, Group | AppList)
    what = f"the group '{spec.id}'" if isinstance(spec, Group) else "the array"
    apps = spec.apps_in_order()
    if not apps:
        raise LaunchError(f"{what} has no apps to run")
    for owner, dependency in spec.unknown_dependencies():
        log.warning(
            "'%s' depends on '%s', which is not in %s: not waited for", owner, dependency, what
        )
    # Each app's own sandbox, named as Marathon names its files (``safePath``): ids have
    # no '_', so no two apps share one, where task names (``/a/b.c``, ``/a/c/b``) might.
    sandboxes = ["_".join(one.path) for one in apps]
    return tuple(one.to_task_info() for one in apps), sandboxes, "group", None


def _is_pod(spec: object) -> TypeGuard[Pod]:
    """Whether ``spec`` is a pod, without loading the pods module (no Pod exists before
    it is loaded)."""
    pods = sys.modules.get("mesos_secrets.pods")
    return pods is not None and isinstance(spec, pods.Pod)


def _run_tasks(
    containerizer: Containerizer,
    tasks: tuple[TaskInfo, ...],
    sandboxes: list[Path],
    signals: _Signals,
    options: RunOptions,
    *,
    kind: str,
    resolver: SecretResolver | None = None,
    group: ContainerGroup | None = None,
) -> int:
    slots: list[_Slot] = []
    stopped: dict[str, str] = {}  # task id: why it was stopped (revoked, stale)
    watching = (
        _watch(resolver, containerizer, slots, stopped, options) if resolver is not None else None
    )
    try:
        for task, sandbox in zip(tasks, sandboxes, strict=True):
            if signals.stopping():  # a signal came while an earlier task was launched
                break
            sandbox.mkdir(parents=True, exist_ok=True)
            slot = _Slot(
                containerizer,
                task,
                sandbox,
                options=options,
                resolver=resolver,
                stopped=stopped,
                group=group,
            )
            # Known before it is launched: destroyed whatever happens from here on, and
            # a signal once it has started is passed on to it, not taken as an interruption.
            slots.append(slot)
            signals.forward_to(slot)
            try:
                slot.launch()
            except LaunchCancelled:
                if not signals.stopping():
                    raise
                break  # stopped by a signal before it started: the others are waited for
            if task.task_id in stopped:  # revoked while it was being launched
                slot.kill(signal.SIGKILL)
            ports = _host_ports(task)
            if ports:
                log.info("task %s has host ports %s", task.task_id, ", ".join(map(str, ports)))
        return _wait_all([slot for slot in slots if slot.started], signals, kind, stopped)
    finally:
        if watching is not None:
            watcher, rotator = watching
            rotator.join()  # a restart under way says how it went
            watcher.stop()
        for slot in slots:
            slot.destroy()


def _watch(
    resolver: SecretResolver,
    containerizer: Containerizer,
    slots: list[_Slot],
    stopped: dict[str, str],
    options: RunOptions,
) -> tuple[Watcher, Rotator] | None:
    """With a resolver that is told of what happens to the tasks' secrets (the node
    agent's): a watcher that kills a task whose secrets are revoked, at once, and acts on
    new versions as each task's labels say (:mod:`.rotation`); started, and registered
    with the agent, before any task asks for its secrets."""
    if not resolver.watches:
        return None
    from .rotation import Rotator  # noqa: PLC0415
    from .watcher import Watcher  # noqa: PLC0415

    def find(task_id: str) -> _Slot | None:
        return next((s for s in list(slots) if s.task.task_id == task_id and s.running()), None)

    def kill(context: Mapping[str, str], reason: str) -> None:
        task_id = context.get("task_id")
        if task_id is None:
            return
        stopped[task_id] = f"its secrets were revoked on this node ({reason})"
        slot = find(task_id)
        if slot is not None:
            log.warning("task %s: its secrets were revoked: killing it now", task_id)
            slot.kill(signal.SIGKILL)

    def held() -> list[tuple[TaskInfo, ResolveContext]]:
        return [(s.task, _context(s.task, options)) for s in list(slots) if s.running()]

    rotator = Rotator(resolver, containerizer.isolators, find)
    watcher = Watcher(
        resolver,
        revoked=kill,
        changed=rotator.changed,
        stale=rotator.stale,
        resync=rotator.resync,
        held=held,
    ).start()
    watcher.watching.wait(timeout=5)
    return watcher, rotator


def _context(task: TaskInfo, options: RunOptions) -> ResolveContext:
    """What a task asks for its secrets with."""
    return ResolveContext(task_id=task.task_id, principal=options.principal)


def _host_ports(task: TaskInfo) -> list[int]:
    """The host ports the task was given (its ``ports`` resources)."""
    return [
        port
        for resource in task.extra.get("resources", [])
        if resource.get("name") == "ports"
        for r in resource.get("ranges", {}).get("range", [])
        for port in range(r["begin"], r["end"] + 1)
    ]


def _start_checks(
    task: TaskInfo,
    container: Container,
    grace_period: float,
    health: Callable[[bool], None] | None = None,
) -> TaskChecks | None:
    """The task's health check and check, run as the executor runs them; a task that
    stays unhealthy is killed (SIGTERM, then SIGKILL after the grace period). None for a
    task that has neither. ``health`` is told each health check's verdict."""
    if task.extra.get("health_check") is None and task.extra.get("check") is None:
        return None
    from .checks import TaskChecks, parse_checks  # noqa: PLC0415

    health_check, check = parse_checks(task)

    def update(healthy: bool | None, status: dict[str, Any] | None, reason: str) -> None:
        if healthy is not None and health is not None:
            health(healthy)
        if status is not None:
            log.info("task %s check: %s", task.task_id, json.dumps(status, sort_keys=True))

    def kill() -> None:
        _terminate(container, grace_period)

    checks = TaskChecks(
        task.task_id, health_check, check, container=container, update=update, kill=kill
    )
    checks.start()
    return checks


def _terminate(container: Container, grace_period: float) -> None:
    """SIGTERM now, SIGKILL to the whole container if it still runs after the grace
    period (without waiting for it)."""
    container.kill(signal.SIGTERM)
    timer = threading.Timer(grace_period, _kill_if_running, (container,))
    timer.daemon = True
    timer.start()


def _kill_if_running(container: Container) -> None:
    if container.poll() is None:
        container.kill(signal.SIGKILL)


def _destroy_quietly(container: Container) -> None:
    """Clean up a container; a failure is logged (the next front end's recover tries
    again)."""
    try:
        container.destroy()
    except (MesosSecretsError, OSError) as error:
        log.error("could not clean up container %s: %s", container.id, error)


def _wait_all(slots: list[_Slot], signals: _Signals, kind: str, stopped: Mapping[str, str]) -> int:
    """Wait for every task; the first failure stops the rest and gives the status."""
    if len(slots) == 1:
        termination = slots[0].wait()
        _report(slots[0].task.task_id, termination, stopped)
        return termination.status
    done: queue.Queue[tuple[_Slot, Termination]] = queue.Queue()
    for slot in slots:
        threading.Thread(target=lambda c=slot: done.put((c, c.wait())), daemon=True).start()
    first_failure: int | None = None
    for _ in slots:
        slot, termination = done.get()
        _report(slot.task.task_id, termination, stopped)
        if termination.status != 0 and first_failure is None:
            first_failure = termination.status
            log.warning("task %s failed: stopping the %s's other tasks", slot.task.task_id, kind)
            signals.stop_all(signal.SIGTERM)
    return first_failure or 0


def build_containerizer(
    config: Config,
    resolver: SecretResolver,
    runtime_dir: Path,
    *,
    isolation: str | None = None,
    progress: Progress | None = None,
    authorize: Authorizer | None = None,
) -> Containerizer:
    """The pipeline every front end runs: isolators from the configuration, the posix
    launcher for tasks on the host, the image provisioner and runc for tasks in images,
    the fetcher (``[fetcher]``) for their URIs.

    Tasks on the host never see the runtime directory, the image store, the fetcher
    cache, the configuration file or the resolver's own files
    (:meth:`SecretResolver.private_paths`).
    """
    runtime = RuntimeDir(runtime_dir)  # checked, and its real path from here on
    runtime_dir = runtime.path
    chain = create_isolators(isolation or config.isolation, resolver, runtime_dir, config.isolators)
    images = dict(config.images or {})
    store = Path(images.get("store") or default_store_dir())

    def make_provisioner() -> Provisioner:
        from .images import Provisioner, RegistryOptions  # noqa: PLC0415

        options = RegistryOptions.from_config(images)
        return Provisioner(resolver, store, runtime_dir, options, progress=progress)

    def make_fetcher() -> Fetcher:
        from .fetcher import Fetcher  # noqa: PLC0415

        return Fetcher.from_config(config.fetcher, progress=progress)

    provisioner = _OnDemandProvisioner(make_provisioner, store, runtime_dir)
    fetcher = _OnDemandFetcher(make_fetcher)
    # A configured [images] or [fetcher] table is checked now, as it always was: a wrong
    # setting fails the start, not the first task that has an image or URIs.
    if images:
        provisioner.load()
    if config.fetcher:
        fetcher.load()
    mask = [runtime_dir, store, fetcher.cache_dir, *resolver.private_paths()]
    if config.source:
        mask.append(Path(config.source))
    launcher = PosixLauncher(mask=mask, **_container_options(config))
    return Containerizer(
        chain,
        launcher,
        runtime,
        provisioner=provisioner,
        image_launcher=RuncLauncher(runtime_dir),
        authorize=authorize,
        fetcher=fetcher,
        ended=resolver.task_ended,
    )


class _OnDemandProvisioner:
    """The image provisioner (:mod:`.images`: python-dxf, requests), loaded and made the
    first time a task has an image, or when a dead front end left something of its to
    clean up. Until then, tasks on the host do not pay for it."""

    def __init__(self, make: Callable[[], Provisioner], store: Path, runtime_dir: Path) -> None:
        self._make = make
        self._store = store
        self._runtime_dir = runtime_dir
        self._provisioner: Provisioner | None = None
        self._lock = threading.Lock()

    def load(self) -> Provisioner:
        with self._lock:
            if self._provisioner is None:
                self._provisioner = self._make()
            return self._provisioner

    def provision(self, task: TaskInfo, config: ContainerConfig) -> Rootfs | None:
        mesos = task.container.mesos if task.container else None
        if self._provisioner is None and (mesos is None or mesos.image is None):
            return None  # the host's filesystem, as the provisioner would answer
        return self.load().provision(task, config)

    def destroy(self, container_id: str) -> None:
        # An orphan's, from a front end that pulled, is there without it being loaded.
        kept = container_part(self._runtime_dir, container_id, "provisioner")
        if self._provisioner is not None or os.path.lexists(kept):
            self.load().destroy(container_id)

    def recover(self) -> None:
        if self._provisioner is not None or _has_entries(pulls_under_way(self._store)):
            self.load().recover()


class _OnDemandFetcher:
    """The fetcher (:mod:`.fetcher`: urllib3, ssl, archives), loaded and made the first
    time a task has URIs, or when a fetch that died left a partial download to remove."""

    def __init__(self, make: Callable[[], Fetcher]) -> None:
        self._make = make
        self._fetcher: Fetcher | None = None
        self._cache_dir: Path | None = None
        self._lock = threading.Lock()

    def load(self) -> Fetcher:
        with self._lock:
            if self._fetcher is None:
                fetcher = self._make()
                # Asked now, which fixes it: a fetcher recovers the cache it has used.
                self._cache_dir = fetcher.cache_dir
                self._fetcher = fetcher
            return self._fetcher

    @property
    def cache_dir(self) -> Path:
        """Where the fetcher caches; without a [fetcher] table (which loads the fetcher
        at once), its default."""
        return self._cache_dir or default_fetcher_cache_dir()

    def fetch(
        self,
        uris: Iterable[CommandURI],
        sandbox: Path | str,
        *,
        user: TaskUser | str | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.load().fetch(uris, sandbox, user=user, cancelled=cancelled)

    def recover(self) -> None:
        if self._fetcher is not None or _may_hold_partials(self.cache_dir):
            self.load().recover()


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _has_entries(directory: Path) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(True for _ in entries)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True  # let the provisioner's recover say what is wrong


def _may_hold_partials(cache: Path) -> bool:
    """Whether the fetcher cache may hold a partial download, ``<uid>/<key>.part-<token>``
    (see :meth:`.fetcher.Fetcher.recover`, which decides): True when in doubt."""
    try:
        root = os.open(cache, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True  # the fetcher's recover logs why it cannot clean it
    try:
        for name in os.listdir(root):
            if not name.isdigit():
                continue
            try:
                user = os.open(name, _DIR_FLAGS, dir_fd=root)
            except OSError:
                continue
            try:
                if any(".part-" in entry for entry in os.listdir(user)):
                    return True
            except OSError:
                return True
            finally:
                os.close(user)
        return False
    finally:
        os.close(root)


#: The [containers] settings and their defaults (besides ``capabilities``).
CONTAINER_FLAGS = {"read_only_host": True, "no_new_privileges": True}
#: The [containers] setting that is the front ends', not the launcher's.
REDACT_OUTPUT = "redact_output"


def configured_redaction(config: Config) -> bool:
    """``[containers] redact_output``: whether tasks' output is redacted by default."""
    value = (config.containers or {}).get(REDACT_OUTPUT, False)
    if not isinstance(value, bool):
        where = f"configuration file '{config.source}': [containers]"
        raise ConfigError(f"{where} {REDACT_OUTPUT} must be true or false")
    return value


def _container_options(config: Config) -> dict[str, Any]:
    """The ``[containers]`` table: ``capabilities`` (what a root task keeps; None: all),
    ``read_only_host`` and ``no_new_privileges`` (see :class:`PosixLauncher`)."""
    table = dict(config.containers or {})
    where = f"configuration file '{config.source}': [containers]"
    unknown = sorted(set(table) - {"capabilities", REDACT_OUTPUT, *CONTAINER_FLAGS})
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting {', '.join(map(repr, unknown))} (known: capabilities, "
            f"{', '.join(CONTAINER_FLAGS)}, {REDACT_OUTPUT})"
        )
    options: dict[str, Any] = {}
    for name, default in CONTAINER_FLAGS.items():
        value = table.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{where} {name} must be true or false")
        options[name] = value
    if "capabilities" in table:
        chosen = caps.parse(table["capabilities"], f"{where} capabilities")
        options["capabilities"] = None if chosen == caps.ALL else chosen
    return options


def _megabytes(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB"


def log_progress(event: str, detail: str, done: int, total: int) -> None:
    """Image pulls and fetches, in the log (``-v``): a line per image, blob and URI."""
    if event == "pull":
        log.info("pulling %s (%s)", detail, _megabytes(total))
    elif event == "blob":
        log.info("  %s… %s of %s", detail[:19], _megabytes(done), _megabytes(total))
    elif event == "done":
        log.info("pulled %s", detail)
    elif event == "fetch":
        log.info("fetching %s", detail)
    elif event == "fetched":
        log.info("fetched %s (%s)", detail, _megabytes(total))


def _terminal_progress() -> Progress:
    """One status line on stderr, rewritten as bytes arrive: a pulled image stays said,
    a fetched URI's line goes (a fetch quicker than a quarter second never shows one)."""
    state = {"what": "", "shown": False}

    def show(event: str, detail: str, done: int, total: int) -> None:
        if event == "fetch":
            state["what"] = f"fetching {detail}"
            return
        if event == "pull":
            state["what"] = f"pulling {detail}"
        if event == "done":
            sys.stderr.write(f"\r\033[Kpulled {detail} ({_megabytes(total)})\n")
            state["shown"] = False
        elif event == "fetched":
            if state["shown"]:
                sys.stderr.write("\r\033[K")
            state["shown"] = False
        else:
            of = f" / {_megabytes(total)}" if total else ""
            sys.stderr.write(f"\r\033[K{state['what']}: {_megabytes(done)}{of}")
            state["shown"] = True
        sys.stderr.flush()

    return show


def _report(task_id: str, termination: Termination, stopped: Mapping[str, str]) -> None:
    why = stopped.get(task_id)
    if why is not None:
        print(
            f"mesos-secrets: task {task_id} {_ended(termination)}: {printable(why)}",
            file=sys.stderr,
        )
    elif termination.signal is not None:
        print(f"mesos-secrets: task {task_id} was {termination.describe()}", file=sys.stderr)
    else:
        log.info("task %s %s", task_id, termination.describe())


def _ended(termination: Termination) -> str:
    if termination.signal is not None:
        return f"was {termination.describe()}"
    return termination.describe()


class _Slot:
    """A task of ``run`` and its container: a new one after each restart for a new
    version of its secrets (:mod:`.rotation`). What the front end waits for, signals and
    kills."""

    def __init__(
        self,
        containerizer: Containerizer,
        task: TaskInfo,
        sandbox: Path,
        *,
        options: RunOptions,
        resolver: SecretResolver | None,
        stopped: dict[str, str],
        group: ContainerGroup | None = None,
    ) -> None:
        self.containerizer = containerizer
        self.task = task
        self.group = group
        self.sandbox = sandbox
        self.options = options
        self.resolver = resolver
        self._stopped = stopped
        self.container: Container | None = None
        self.checks: TaskChecks | None = None
        self._health: bool | None = None  # its last health check's verdict
        self._changing = threading.Condition()
        #: Why it is being restarted (None: it is not), and whether it was launched
        #: again (None: not yet).
        self._restarting: str | None = None
        self._relaunched: bool | None = None
        self._ending = threading.Event()  # stopped for good: no restart

    @property
    def started(self) -> bool:
        """Whether its first container was launched."""
        return self.container is not None

    @property
    def container_id(self) -> str:
        assert self.container is not None
        return self.container.id

    def launch(self) -> None:
        """Launch the task (again): its container, its checks."""
        from .rotation import ask_for_new_versions  # noqa: PLC0415 (loaded: labels checked)

        task, context = self.task, _context(self.task, self.options)
        if self.resolver is not None:
            ask_for_new_versions(self.resolver, task, context)
        # Kept by the slot in the very line that gets it: a signal's exception comes
        # before the call returns (and the pipeline cleans up) or after the slot has it.
        redact = label_redacts(labels_of(task), bool(self.options.redact_output))
        self.container = container = self.containerizer.launch(
            task,
            self.sandbox,
            context=context,
            cancelled=self._ending.is_set,
            group=self.group,
            redact=redact,
        )
        if self._ending.is_set():  # killed (or failed) while it was launched again
            container.kill(signal.SIGKILL)
        log.info("task %s is running (container %s)", task.task_id, container.id)
        self._health = None
        self.checks = _start_checks(task, container, self.options.grace_period, self._told)

    def _told(self, healthy: bool) -> None:
        self._health = healthy

    def running(self) -> bool:
        """Whether the task runs, or is being restarted (what it hears then still
        counts: a revocation, a version newer than the restart read)."""
        container = self.container
        if container is None or self._ending.is_set():
            return False
        return self._restarting is not None or container.poll() is None

    def poll(self) -> Termination | None:
        container = self.container
        if self._restarting is not None or container is None:
            return None
        return container.poll()

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Pass ``sig`` on to the task, which is ending (no restart after)."""
        self._ending.set()
        self.signal(sig)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the task (for a new version of its secrets)."""
        container = self.container
        if container is not None:
            container.kill(signum)

    def fail(self, why: str) -> None:
        """Stop the task (SIGTERM, SIGKILL after the grace period): it failed, for ``why``."""
        self._stopped[self.task.task_id] = why
        self._ending.set()
        container = self.container
        if container is not None:
            _terminate(container, self.options.grace_period)

    def wait(self) -> Termination:
        """The task's end: that of its last container. A restart is not an end: the
        task is launched again here, by the thread that waits for it, which lives as
        long as the task does (a task's init dies with the thread that started it:
        ``PR_SET_PDEATHSIG``)."""
        while True:
            container = self.container
            assert container is not None
            termination = container.wait()
            with self._changing:
                why = self._restarting
            if why is None:
                return termination
            launched = self._relaunch(container, why)
            with self._changing:
                self._restarting = None
                self._relaunched = launched
                self._changing.notify_all()
            if not launched:
                return termination

    def restart(self, why: str, timeout: float) -> bool | None:
        """Stop the task and have it launched again (by :meth:`wait`); True once it is
        healthy again within ``timeout`` seconds (its health checks pass; without any,
        it keeps running for :data:`~.rotation.RUNNING_IS_HEALTHY_S`); None if it was
        not restarted, having ended or being stopped."""
        from .rotation import stop_container, wait_healthy  # noqa: PLC0415

        with self._changing:
            old = self.container
            if self._ending.is_set() or old is None or old.poll() is not None:
                return None
            self._restarting, self._relaunched = why, None
        log.info("task %s: restarting it (%s)", self.task.task_id, why)
        if self.checks is not None:
            self.checks.stop()
            self.checks = None
        stop_container(old, self.options.grace_period)
        with self._changing:
            self._changing.wait_for(lambda: self._relaunched is not None)
            launched = bool(self._relaunched)
        if not launched:
            return None if self._ending.is_set() else False
        container = self.container
        assert container is not None
        checked = self.task.extra.get("health_check") is not None
        return wait_healthy(container, lambda: self._health, checked, timeout)

    def _relaunch(self, old: Container, why: str) -> bool:
        """Clean up after the stopped container, and launch the task again (backing
        off after a failure); whether it runs again."""
        from .rotation import RELAUNCH_BACKOFF_S  # noqa: PLC0415

        _destroy_quietly(old)
        for pause in (0.0, *RELAUNCH_BACKOFF_S):
            if self._ending.is_set():
                return False
            time.sleep(pause)
            try:
                self.launch()
            except LaunchCancelled:
                return False
            except MesosSecretsError as error:
                log.warning("task %s: launching it again failed: %s", self.task.task_id, error)
            else:
                return True
        self._stopped[self.task.task_id] = f"it could not be launched again ({why})"
        return False

    def destroy(self) -> None:
        self._ending.set()
        if self.checks is not None:
            self.checks.stop()
        if self.container is not None:
            _destroy_quietly(self.container)


class _Signals:
    """Signal handling around a run: abort before the tasks start, pass on once they run."""

    def __init__(self, grace_period: float) -> None:
        self.grace_period = grace_period
        self.containers: list[_Slot] = []
        self.timer: threading.Timer | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        for signum in FORWARDED:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def forward_to(self, container: _Slot) -> None:
        """Pass signals on to ``container`` once it has started; a signal before any
        task has started interrupts the launch instead."""
        self.containers.append(container)

    def stopping(self) -> bool:
        """Whether a signal (or a failed task) is stopping the run's tasks."""
        return self.timer is not None

    def stop_all(self, signum: int) -> None:
        """Pass ``signum`` to every task; kill what still runs after the grace period."""
        for container in self.containers:
            container.kill(signum)
        if self.timer is None:
            self.timer = threading.Timer(self.grace_period, self._kill_all)
            self.timer.daemon = True
            self.timer.start()

    def _kill_all(self) -> None:
        for container in self.containers:
            if container.poll() is None:
                container.kill(signal.SIGKILL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not any(slot.started for slot in self.containers):
            raise Interrupted(signum)
        if self.timer is not None:  # a second signal: no more waiting
            log.warning("killing the task(s) now")
            self._kill_all()
            return
        log.warning(
            "passing %s to the task(s); killed if still running in %gs",
            signal.Signals(signum).name,
            self.grace_period,
        )
        self.stop_all(signum)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
