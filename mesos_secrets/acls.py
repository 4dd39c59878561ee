"""Who may use which secret: ACLs in Mesos' style, checked before anything is resolved.

::

    {"permissive": false,
     "access_secrets": [
       {"principals": {"values": ["ops"]}, "secrets": {"values": ["/ops/**", "/shared/*"]}},
       {"principals": {"type": "ANY"}, "secrets": {"type": "NONE"}}]}

Rules are tried in order; the first whose ``principals`` match the caller decides: the
secret is accessible if that rule's ``secrets`` match it. When no rule's principals
match, ``permissive`` decides (default false: deny). An entity is ``{"values": [...]}``
or ``{"type": "ANY"}`` / ``{"type": "NONE"}``. In secret patterns ``*`` matches within one
path segment and ``**`` across segments; names compare with a leading ``/``
(``developer/db`` is ``/developer/db``). A caller without a principal is matched only
by ``ANY``.

A denial is the error DC/OS gives, "Secret /x is not accessible", naming the principal,
and goes to the audit trail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._codec import loads
from .audit import AuditLog
from .errors import ConfigError, SecretAccessDeniedError, SecretValidationError
from .mesos import TaskInfo
from .resolver import ResolveContext

__all__ = ["ACLs", "Entity", "Rule", "SecretPattern", "secret_pattern"]


@attrs.frozen
class Entity:
    """``{"values": [...]}``, ``{"type": "ANY"}`` or ``{"type": "NONE"}``."""

    kind: str = "SOME"  # SOME, ANY or NONE
    values: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Any, where: str) -> Entity:
        if not isinstance(raw, dict):
            raise ConfigError("expected an object with 'values' or 'type'", where)
        kind = raw.get("type")
        if kind is not None:
            if kind not in ("ANY", "NONE"):
                raise ConfigError("'type' must be ANY or NONE", f"{where}/type")
            if "values" in raw:
                raise ConfigError("give 'type' or 'values', not both", where)
            return cls(kind=kind)
        values = raw.get("values")
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ConfigError("'values' must be a list of non-empty strings", f"{where}/values")
        return cls(values=tuple(values))


class SecretPattern:
    """A secret name glob: ``*`` within a segment, ``**`` across segments, everything else
    literal. Matched in time linear in the name for each token of the glob, whatever the
    glob: the name is the caller's choice, and a regular expression of several ``*``
    backtracks exponentially on a name that almost matches."""

    __slots__ = ("_tokens", "glob")

    _ONE, _ANY = "*", "**"  # tokens; every other token is one literal character

    def __init__(self, glob: str) -> None:
        self.glob = glob
        tokens: list[str] = []
        for part in re.split(r"(\*\*|\*)", "/" + glob.lstrip("/")):
            if part in (self._ONE, self._ANY):
                if tokens and tokens[-1] in (self._ONE, self._ANY):  # a run of stars:
                    if part == self._ANY:  # the widest of them
                        tokens[-1] = self._ANY
                    continue
                tokens.append(part)
            else:
                tokens.extend(part)
        self._tokens = tuple(tokens)

    def __repr__(self) -> str:
        return f"SecretPattern({self.glob!r})"

    def fullmatch(self, name: str) -> bool:
        """Whether ``name`` as a whole matches (the states of an NFA, advanced together)."""
        tokens = self._tokens
        states = self._closure({0})
        for char in name:
            following = set()
            for state in states:
                if state == len(tokens):
                    continue
                token = tokens[state]
                if token == self._ANY or (token == self._ONE and char != "/"):
                    following.add(state)  # a star takes the character and stays
                elif token == char:
                    following.add(state + 1)
            if not following:
                return False
            states = self._closure(following)
        return len(tokens) in states

    def _closure(self, states: set[int]) -> set[int]:
        """And every state reached by a star taking nothing."""
        out = set(states)
        for start in states:
            at = start
            while at < len(self._tokens) and self._tokens[at] in (self._ONE, self._ANY):
                at += 1
                out.add(at)
        return out


def secret_pattern(glob: str) -> SecretPattern:
    """The :class:`SecretPattern` of ``glob``."""
    return SecretPattern(glob)


@attrs.frozen
class Rule:
    principals: Entity
    secrets: Entity
    _patterns: tuple[SecretPattern, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_patterns", tuple(secret_pattern(v) for v in self.secrets.values))

    def covers(self, principal: str | None) -> bool:
        if self.principals.kind == "ANY":
            return True
        if self.principals.kind == "NONE" or principal is None:
            return False
        return principal in self.principals.values

    def allows(self, secret: str) -> bool:
        if self.secrets.kind == "ANY":
            return True
        if self.secrets.kind == "NONE":
            return False
        name = "/" + secret.lstrip("/")
        return any(p.fullmatch(name) for p in self._patterns)


@attrs.frozen
class ACLs:
    """The ``access_secrets`` rules and the ``permissive`` default."""

    rules: tuple[Rule, ...] = ()
    permissive: bool = False
    source: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> ACLs:
        file = Path(path)
        try:
            document = loads(file.read_bytes(), "the ACL file")
        except OSError as error:
            raise ConfigError(f"cannot read the ACL file '{file}': {error.strerror}") from None
        except SecretValidationError as error:
            raise ConfigError(f"the ACL file '{file}': {error}") from None
        try:
            return cls.from_json(document, source=str(file))
        except ConfigError as error:
            raise ConfigError(f"ACL file '{file}': {error.message}", error.path) from None

    @classmethod
    def from_json(cls, document: Any, source: str | None = None) -> ACLs:
        if not isinstance(document, dict):
            raise ConfigError("expected an object")
        unknown = sorted(set(document) - {"permissive", "access_secrets"})
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(map(repr, unknown))} "
                "(known: access_secrets, permissive)"
            )
        permissive = document.get("permissive", False)
        if not isinstance(permissive, bool):
            raise ConfigError("'permissive' must be true or false", "/permissive")
        raw_rules = document.get("access_secrets", [])
        if not isinstance(raw_rules, list):
            raise ConfigError("'access_secrets' must be a list", "/access_secrets")
        rules = []
        for i, raw in enumerate(raw_rules):
            where = f"/access_secrets/{i}"
            if not isinstance(raw, dict) or set(raw) != {"principals", "secrets"}:
                raise ConfigError("a rule has exactly 'principals' and 'secrets'", where)
            rules.append(
                Rule(
                    Entity.parse(raw["principals"], f"{where}/principals"),
                    Entity.parse(raw["secrets"], f"{where}/secrets"),
                )
            )
        return cls(rules=tuple(rules), permissive=permissive, source=source)

    def allows(self, principal: str | None, secret: str) -> bool:
        for rule in self.rules:
            if rule.covers(principal):
                return rule.allows(secret)
        return self.permissive

    def check(self, principal: str | None, secrets: Iterable[str]) -> None:
        """Raise for the first secret ``principal`` may not use."""
        for secret in secrets:
            if not self.allows(principal, secret):
                who = f"principal '{principal}'" if principal else "a caller without a principal"
                raise SecretAccessDeniedError(
                    f"Secret {secret} is not accessible to {who}", reference=secret
                )

    def authorizer(self, audit: AuditLog | None = None) -> Any:
        """The containerizer's authorize hook: every secret of the task, before any is used."""

        def authorize(task: TaskInfo, context: ResolveContext | None) -> None:
            principal = context.principal if context else None
            names: Sequence[str] = task.references()
            try:
                self.check(principal, names)
            except SecretAccessDeniedError as error:
                if audit is not None:
                    audit.write(
                        "authorize",
                        reference=error.reference,
                        task_id=task.task_id,
                        framework_id=context.framework_id if context else None,
                        principal=principal,
                        outcome="denied",
                        error=str(error),
                    )
                raise
            if audit is not None:
                for name in dict.fromkeys(names):
                    audit.write(
                        "authorize",
                        reference=name,
                        task_id=task.task_id,
                        principal=principal,
                        outcome="ok",
                    )

        return authorize
