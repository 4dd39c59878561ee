"""The secret resolver protocol, after Mesos' ``SecretResolver``.

Mesos: ``Future<Secret::Value> SecretResolver::resolve(const Secret&)``. Here:
``resolver.resolve(secret, context=None) -> SecretBytes``, synchronous (front ends run
several resolutions at once in threads), with an optional :class:`ResolveContext`
saying who asks, for the store's policies and the audit trail.

Every resolver subclasses :class:`SecretResolver` and implements
:meth:`~SecretResolver.resolve_reference`. VALUE secrets never reach it: the base
class answers them in process, so an inline value is never sent to a backend.
"""

from __future__ import annotations

import abc
import inspect
import threading
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import attrs

from . import audit as _audit
from .errors import ConfigError, MesosSecretsError, ResolverError, SecretNotFoundError
from .secret import Reference, Secret, SecretType
from .secretbytes import SecretBytes

__all__ = ["ResolveContext", "SecretResolver", "resolve_all", "select_field"]

#: How many secrets of one container are fetched at once, unless the resolver says.
MAX_CONCURRENT_RESOLUTIONS = 8


@attrs.frozen
class ResolveContext:
    """Who is asking for a secret: the framework, task, executor, container, principal.

    Every field is optional; resolvers pass it to policies and to the audit trail.
    """

    framework_id: str | None = None
    executor_id: str | None = None
    task_id: str | None = None
    container_id: str | None = None
    principal: str | None = None


def _check_secret(secret: object) -> None:
    if not isinstance(secret, Secret):
        raise TypeError(f"resolve() takes a Secret, not {type(secret).__name__}")


class SecretResolver(abc.ABC):
    """Base class of every resolver, built-in or third-party.

    A resolver is built from keyword options (a config file section, a Mesos modules
    manifest's ``parameters``, or :func:`mesos_secrets.get_resolver` keywords). Options
    coming from text are converted to the types ``__init__`` annotates. Resolvers are
    context managers; :meth:`close` releases connections and tokens.
    """

    #: The name the resolver is registered under (set by the registry when loaded).
    name: ClassVar[str] = ""
    #: Where each resolution is recorded; set from the configuration's [audit] table.
    audit: _audit.AuditLog | None = None
    #: How many references :func:`resolve_all` resolves at once with this resolver.
    concurrency: int = MAX_CONCURRENT_RESOLUTIONS
    #: Whether :meth:`resolve_references` answers many references in one exchange (the
    #: node agent's client): :func:`resolve_all` then gives it all of them at once.
    batched: ClassVar[bool] = False

    def resolve(self, secret: Secret, context: ResolveContext | None = None) -> SecretBytes:
        """Return the value of ``secret``: inline for VALUE, from the store for REFERENCE.

        Raises :class:`~mesos_secrets.errors.ResolverError` (or a subclass) naming the
        reference, never the value.
        """
        _check_secret(secret)
        if secret.type is SecretType.VALUE:
            assert secret.value is not None  # guaranteed by Secret's validation
            if self.audit is not None:
                self._record(None, context, None, 0.0, {"inline": True})
            return secret.value.data
        assert secret.reference is not None
        if self.audit is None:
            return self.resolve_reference(secret.reference, context)
        token = _audit.start_notes()
        started = time.monotonic()
        error: BaseException | None = None
        try:
            return self.resolve_reference(secret.reference, context)
        except BaseException as caught:
            error = caught
            raise
        finally:
            notes = _audit.finish_notes(token)
            self._record(secret.reference, context, error, time.monotonic() - started, notes)

    def _record(
        self,
        reference: Reference | None,
        context: ResolveContext | None,
        error: BaseException | None,
        seconds: float,
        notes: Mapping[str, object],
    ) -> None:
        assert self.audit is not None
        context = context or ResolveContext()
        self.audit.write(
            "resolve",
            resolver=self.name,
            reference=reference.name if reference else None,
            key=reference.key if reference else None,
            framework_id=context.framework_id,
            task_id=context.task_id,
            executor_id=context.executor_id,
            container_id=context.container_id,
            principal=context.principal,
            outcome=_audit.outcome_of(error),
            # Our messages name references, never values; others are named by type only.
            error=(
                str(error)
                if isinstance(error, MesosSecretsError)
                else type(error).__name__
                if error is not None
                else None
            ),
            duration_ms=round(seconds * 1000, 3),
            **notes,
        )

    @abc.abstractmethod
    def resolve_reference(
        self, reference: Reference, context: ResolveContext | None = None
    ) -> SecretBytes:
        """Fetch the secret ``reference`` names from the backend."""

    def resolve_references(
        self, references: Sequence[Reference], context: ResolveContext | None = None
    ) -> list[SecretBytes | ResolverError]:
        """Resolve several references, results in order, a failure in its value's place.

        Called by :func:`resolve_all` when the resolver is :attr:`batched`; by default
        one :meth:`resolve_reference` after another.
        """
        results: list[SecretBytes | ResolverError] = []
        for reference in references:
            try:
                results.append(self.resolve_reference(reference, context))
            except ResolverError as error:
                results.append(error)
        return results

    def resolve_fields(
        self, name: str, context: ResolveContext | None = None
    ) -> Mapping[str, SecretBytes] | None:
        """Every field of secret ``name``, from one read, or None when the resolver reads
        key by key. The node agent caches a secret's fields together, so that the keys
        it serves of one secret always come from the same read (a dynamic secret's user
        name with its own password)."""
        return None

    def release(self, reference: Reference) -> bool:
        """Nothing needs ``reference`` any more: give up what was obtained for it alone
        (revoke its lease). True if something was given up, so a cached value of it is
        no longer good. By default there is nothing to give up."""
        return False

    def task_ended(self, context: ResolveContext) -> None:  # noqa: B027 (optional hook)
        """The task ``context`` names has ended, its container gone: what was obtained
        for it alone may go (the node agent's client tells the agent, which revokes the
        leases no other task holds). By default nothing is kept per task."""

    #: Whether :meth:`watch` says what happens to the secrets this client's tasks hold.
    watches: ClassVar[bool] = False

    def watch(self, after: int | None, wait: float) -> Mapping[str, Any]:
        """What happened to the secrets this client's tasks hold since event ``after``
        (a new version, a revocation), waiting up to ``wait`` seconds for something to
        happen: the node agent's answer (:mod:`mesos_secrets.agent.events`). Only for a
        resolver that :attr:`watches`."""
        raise NotImplementedError(f"resolver '{self.name}' is told of no changes")

    def stop_watching(self) -> None:  # noqa: B027 (optional hook)
        """End a :meth:`watch` under way in another thread, now, and every one after
        it (one that is about to start too)."""

    def rollout_begin(
        self, app: str, change: str, task_id: str, batch: int, timeout: float
    ) -> tuple[bool, str]:
        """May the task restart now for the new version ``change``? Waits for its turn
        (the node agent's :mod:`~mesos_secrets.agent.rollouts`): (True, "") or (False,
        why the rollout stopped). Without an agent to coordinate: at once."""
        return True, ""

    def rollout_end(  # noqa: B027 (optional hook)
        self, app: str, change: str, task_id: str, healthy: bool | None
    ) -> None:
        """The task restarted for ``change``, and is (or is not) healthy again; None: it
        was not restarted (it ended first), which frees its turn."""

    def uncache(self, name: str) -> None:  # noqa: B027 (optional hook)
        """Forget whatever the resolver keeps of ``name`` itself, so that its next read
        asks the store (the node agent refreshing it). By default nothing is kept."""

    def refresh_every(self, context: ResolveContext, seconds: float | None) -> None:  # noqa: B027
        """Have the secrets of the task ``context`` names read again every ``seconds``
        (about: with jitter), its holders told of a new version (:meth:`watch`); None:
        only when pushed. Only for a resolver that :attr:`watches`; by default nothing."""

    def lease_renewals(self) -> tuple[int, int]:
        """How many lease renewals the resolver has made, and how many of them failed
        (the node agent's metrics). By default it renews none."""
        return (0, 0)

    def answers_at_once(self, reference: Reference) -> bool:
        """Whether resolving ``reference`` now would wait on nothing: no network, no
        other thread (a fresh cache entry, an in-process store). :func:`resolve_all`
        answers those in the calling thread and keeps its threads for the rest.

        False unless a resolver says otherwise; a wrong True only costs concurrency.
        """
        return False

    def check(self) -> None:  # noqa: B027 (optional hook)
        """Check, at start-up, that the backend can be used; raise ResolverError if not."""

    def private_paths(self) -> tuple[Path, ...]:
        """Files and directories on this machine that hold the store or its credentials
        (an embedded store, a client key). Launchers hide them from every task."""
        return ()

    def endpoints(self) -> tuple[str, ...]:
        """Where the store is reached over the network, ``HOST:PORT`` each (``[HOST]:PORT``
        for IPv6), HOST an address or a name: what the network isolator keeps tasks from
        reaching unless configured otherwise. None for a store on this machine's disk."""
        return ()

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what the resolver holds (connections, tokens). Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @classmethod
    def from_options(cls, **options: Any) -> Self:
        """Build from options, converting text to the annotated types.

        An unknown option is a :class:`ConfigError` listing the known ones.
        """
        return cls(**convert_options(cls, f"resolver '{cls.name}'", options))


def convert_options(cls: type, owner: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``options`` against ``cls.__init__`` and convert text to the annotated types."""
    known = option_types(cls)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            f" for {owner} (known: {', '.join(sorted(known)) or 'none'})"
        )
    return {name: coerce_option(owner, name, value, known[name]) for name, value in options.items()}


def option_types(cls: type) -> dict[str, Any]:
    """The keyword options ``cls.__init__`` takes, with their annotated types.

    Isolators also take a resolver and a runtime directory; those are not options.
    """
    init = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(init)
    hints = typing.get_type_hints(init)
    return {
        name: hints.get(name, Any)
        for name, parameter in signature.parameters.items()
        if name not in ("self", "resolver", "runtime_dir")
        and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    }


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce_option(owner: str, name: str, value: Any, hint: Any) -> Any:  # noqa: PLR0911
    """Convert an option given as text (modules manifest, environment) to ``hint``.

    ``owner`` names what the option is for in messages ("resolver 'local'").
    """
    if not isinstance(value, str):
        return value
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    target = args[0] if args and len(args) == 1 else hint
    if target in (str, Any) or isinstance(target, typing.TypeVar):
        return value
    if target is bool and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    try:
        if target is bool:
            raise ValueError(value)  # noqa: TRY301
        if target is int:
            return int(value)
        if target is float:
            return float(value)
        if target is Path:
            return Path(value)
    except ValueError:
        raise ConfigError(
            f"option '{name}' of {owner} must be {getattr(target, '__name__', target)}"
        ) from None
    return value


def select_field(
    reference: Reference, fields: Mapping[str, SecretBytes], *, resolver: str, where: str = ""
) -> SecretBytes:
    """Pick the value a reference asks for among a secret's fields.

    With ``key``: that field. Without: the only field, or an error listing the field
    names when there are several. ``where`` names the store (a path, an address).
    """
    suffix = f" in {where}" if where else ""
    context = {"reference": reference.name, "key": reference.key, "resolver": resolver}
    if reference.key is not None:
        try:
            return fields[reference.key]
        except KeyError:
            known = ", ".join(sorted(fields)) or "none"
            raise SecretNotFoundError(
                f"secret '{reference.name}' has no key '{reference.key}'{suffix} "
                f"(its keys: {known})",
                **context,
            ) from None
    if len(fields) == 1:
        return next(iter(fields.values()))
    if not fields:
        raise SecretNotFoundError(f"secret '{reference.name}' has no keys{suffix}", **context)
    raise ResolverError(
        f"secret '{reference.name}' has {len(fields)} keys ({', '.join(sorted(fields))}); "
        f"the reference must name one with 'key' (Marathon: '{reference.name}@<key>')",
        **context,
    )


def resolve_all(
    resolver: SecretResolver,
    secrets: Sequence[Secret],
    context: ResolveContext | None = None,
) -> list[SecretBytes | ResolverError]:
    """Resolve several secrets at once; results in the order given.

    A failure does not stop the others; it takes the place of its value in the result,
    so the caller can say which variable or volume it belonged to.

    Threads only where they pay: inline values and what the resolver
    :meth:`~SecretResolver.answers_at_once` are answered in the calling thread. Of the
    rest, one reference per secret name is resolved first, several at a time when
    there are several; the other keys of the same secrets follow (from the resolver's
    cache, where it has one), so no secret is read twice by one call.
    """

    def one(secret: Secret) -> SecretBytes | ResolverError:
        try:
            return resolver.resolve(secret, context)
        except ResolverError as error:
            return error

    if resolver.batched:
        return _resolve_batch(resolver, secrets, context, one)
    results: list[SecretBytes | ResolverError | None] = [None] * len(secrets)
    first: dict[str, int] = {}  # a secret name: the index resolved first for it
    later: list[int] = []
    for index, secret in enumerate(secrets):
        reference = secret.reference
        if reference is None or resolver.answers_at_once(reference):
            results[index] = one(secret)
        elif reference.name in first:
            later.append(index)
        else:
            first[reference.name] = index
    leaders = list(first.values())

    def lead(index: int) -> None:
        results[index] = one(secrets[index])

    _each_in_threads(lead, leaders, min(max(resolver.concurrency, 1), len(leaders)))
    for index in later:
        results[index] = one(secrets[index])
    done = [result for result in results if result is not None]
    assert len(done) == len(secrets)
    return done


def _resolve_batch(
    resolver: SecretResolver,
    secrets: Sequence[Secret],
    context: ResolveContext | None,
    one: Callable[[Secret], SecretBytes | ResolverError],
) -> list[SecretBytes | ResolverError]:
    """Inline values here, every reference in one :meth:`~SecretResolver.resolve_references`
    call, each recorded in the audit trail as :meth:`~SecretResolver.resolve` would."""
    for secret in secrets:
        _check_secret(secret)
    results: list[SecretBytes | ResolverError | None] = [
        None if secret.reference is not None else one(secret) for secret in secrets
    ]
    wanted = [i for i, secret in enumerate(secrets) if secret.reference is not None]
    references = [secrets[i].reference for i in wanted]
    started = time.monotonic()
    answers = resolver.resolve_references(references, context)  # type: ignore[arg-type]
    if len(answers) != len(wanted):
        raise RuntimeError(f"resolver '{resolver.name}' answered {len(answers)} of {len(wanted)}")
    seconds = time.monotonic() - started
    for index, answer in zip(wanted, answers, strict=True):
        results[index] = answer
        if resolver.audit is not None:
            error = answer if isinstance(answer, ResolverError) else None
            resolver._record(
                secrets[index].reference, context, error, seconds, {"batch": len(wanted)}
            )
    done = [result for result in results if result is not None]
    assert len(done) == len(secrets)
    return done


def _each_in_threads(work: Callable[[int], None], items: Sequence[int], threads: int) -> None:
    """``work(item)`` for every item, ``threads`` at a time: the calling thread is one of
    them (a thread started costs more than a cached answer). An exception in any is
    raised here, once all have stopped."""
    pending = iter(items)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def drain() -> None:
        while not failures:
            with lock:
                item = next(pending, None)
            if item is None:
                return
            try:
                work(item)
            except BaseException as error:  # noqa: BLE001 (handed to the caller)
                failures.append(error)

    helpers = [
        threading.Thread(target=drain, name=f"resolve-{n}", daemon=True) for n in range(threads - 1)
    ]
    for helper in helpers:
        helper.start()
    drain()
    for helper in helpers:
        helper.join()
    if failures:
        raise failures[0]
