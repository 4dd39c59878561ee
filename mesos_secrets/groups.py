"""Marathon groups (``POST /v2/groups`` bodies) and arrays of apps (``PUT /v2/apps``).

A group holds apps and further groups, and may say what it depends on::

    {"id": "/shop",
     "apps": [{"id": "db", "cmd": "./db"}],
     "groups": [{"id": "web",
                 "dependencies": ["/shop/db"],
                 "apps": [{"id": "front", "cmd": "./serve"}]}]}

Ids are read as Marathon reads them (``PathId.canonicalPath``): a relative id is
relative to the group that holds it (``front`` above is ``/shop/web/front``), ``..``
goes up (a ``.`` segment is not an id Marathon's reader takes), and ``dependencies``
are read the same way. Every app is validated as a
standalone app is (:func:`~mesos_secrets.marathon.parse_app`, after its id is made
absolute); its errors are located in the document, ``/groups(0)/apps(1)/cmd``, as
Marathon's reader locates its JSON errors (Marathon reports an app's rule violations at
the app's own paths; here every error names the place in the whole body).

What is Marathon's, from its source (``GroupUpdate`` in ``types/group.raml``,
``GroupsResource``, ``Group.validNestedGroupUpdateWithBase``, ``Group.validGroup``,
``AppValidation.validNestedApp``, ``RootGroup``):

- the reader: ``id`` is optional (a body without one is the root group, ``/``),
  ``apps`` are apps, ``groups`` are groups, ``dependencies`` are ids; a group has no
  ``pods`` (Marathon ignores them; ``strict`` refuses them);
- an app's id must name a direct child of its group (``Identifier is not child of
  '/g'``), a group's must too (``Group has to be child of groups with parent id``);
- ``version`` and ``scaleBy`` ask Marathon to roll back or scale a group that exists:
  with anything else they are refused (``not allowed in conjunction with other
  properties.``), alone they are not a spec at all;
- ``enforceRole`` only on a top-level group;
- an app's ``dependencies`` name apps or groups, a group's name groups; a group depends
  on the whole of another group, and a dependency on something the spec does not hold
  is ignored (it may exist elsewhere in Marathon), or refused with ``strict``;
- a dependency cycle is refused (``Dependency graph has cyclic dependencies.``).

Where Marathon is silent or fails, this module refuses with a clear message: a group
inside a group without an id (Marathon's normalization fails on it, a server error),
and two different apps, or groups, with one id in one group (Marathon keeps one of
them, whichever its set yields first). The same app written twice is read once, as
Marathon reads it.

An array of apps is the body of ``PUT /v2/apps``: each item is an app with an absolute
(or root-relative) id, read like a standalone app; errors are at ``/(0)/cmd`` (Marathon
writes ``(0)/cmd`` for its JSON errors and reports an item's rule violations at the
app's own paths; here every path starts at the body, with ``/``).

A partial update (``PATCH /v2/apps/{id}``, ``PUT /v2/apps/{id}``, a group's ``version``
or ``scaleBy``) changes an app or group that Marathon already has: alone, it is not a
spec, and :func:`partial_update` says so instead of listing what an app would lack.

Limits keep hostile input cheap: at most :data:`MAX_APPS` apps and :data:`MAX_GROUPS`
groups in one spec, and the first :data:`MAX_REPORTED` violations reported. How deep
groups nest is bounded by the JSON reader's own depth limit.
"""

from __future__ import annotations

import datetime
import heapq
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from .errors import SecretValidationError, printable
from .marathon import COMMAND_FIELDS, PATH_ID, App, id_violations, parse_app
from .mesos import TaskInfo
from .spec_reader import INVALID_JSON, NOT_VALID, SpecError

__all__ = [
    "MAX_APPS",
    "MAX_GROUPS",
    "MAX_REPORTED",
    "AppList",
    "Group",
    "is_group",
    "parse_app_list",
    "parse_group",
    "partial_update",
]

#: The most apps one spec (a group and its groups, or an array) may hold.
MAX_APPS = 10_000
#: The most groups one spec may hold.
MAX_GROUPS = 10_000
#: The most violations one error reports; a last line says how many more there were.
MAX_REPORTED = 100

RESERVED = ("restart", "tasks", "versions", ".", "..")
NOT_ALONE = "not allowed in conjunction with other properties."
CYCLE = "Dependency graph has cyclic dependencies."
APP_AND_GROUP = "Groups and Applications may not have the same identifier."
GROUP_NOT_CHILD = "Group has to be child of groups with parent id"
NO_APP_UPDATE_ID = "App Update must have app id set"
#: Fields a group body can have (``GroupUpdate``); what counts towards ``NOT_ALONE``.
GROUP_FIELDS = ("id", "apps", "groups", "dependencies", "scaleBy", "version", "enforceRole")

Path = tuple[str, ...]
T = TypeVar("T", App, "Group")


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _text(path: Path) -> str:
    return "/" + "/".join(path)


def _segments(text: str) -> Path:
    """``PathId(text)``: its segments, empty ones dropped."""
    return tuple(part for part in text.split("/") if part)


def canonical(text: str, base: Path = ()) -> Path:
    """Marathon's ``PathId(text).canonicalPath(base)``: relative to ``base`` unless
    absolute, with ``.`` dropped and ``..`` going up (never above the root)."""
    parts = _segments(text) if text.startswith("/") else base + _segments(text)
    result: list[str] = []
    for part in parts:
        if part == "..":
            if result:
                result.pop()
        elif part != ".":
            result.append(part)
    return tuple(result)


def _path_id_violations(text: str, where: str) -> list[tuple[str, str]]:
    """Marathon's ``PathId.pathIdValidator``: segment pattern, reserved last segment,
    and an absolute id whose ``..`` would leave its parent."""
    found = [(where, message) for _, message in id_violations(text)]
    parts = _segments(text)
    if parts and parts[-1] in RESERVED:
        keywords = ", ".join(RESERVED)
        found.append(
            (where, f"must not end with any of the following reserved keywords: {keywords}")
        )
    if text.startswith("/") and canonical(text)[:-1] != parts[:-1]:
        found.append((where, f"Identifier is not child of '{_text(parts[:-1])}'"))
    return found


def _undefined(field: str, obj: Mapping[str, Any]) -> str:
    """Play JSON's words for a missing field, the object shown by its keys only: its
    values may be anything, a password in ``env`` included."""
    keys = ",".join(f"{json.dumps(key, ensure_ascii=False)}:…" for key in obj)
    return printable(f"'{field}' is undefined on object: {{{keys}}}", limit=300)


# --- the models ----------------------------------------------------------------------


@attrs.frozen
class Group:
    """A validated Marathon group: its apps, its groups, what it depends on.

    Every id is absolute and canonical. ``app_dependencies`` maps each of the group's
    own apps to its ``dependencies``, absolute; ``app_paths`` is where each app is in
    the document (``/groups(0)/apps(1)``), for errors found later.
    """

    id: str
    apps: tuple[App, ...] = ()
    groups: tuple[Group, ...] = ()
    dependencies: tuple[str, ...] = ()
    app_dependencies: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict, converter=_frozen)
    app_paths: tuple[str, ...] = ()

    def transitive_apps(self) -> tuple[App, ...]:
        """Every app: the group's own, then each group's, depth first."""
        return tuple(app for app, _, _ in self._members())

    def located_apps(self) -> tuple[tuple[str, App], ...]:
        """Every app with its place in the document, in :meth:`transitive_apps` order."""
        return tuple((path, app) for app, path, _ in self._members())

    def apps_in_order(self) -> tuple[App, ...]:
        """Every app, each after what it depends on (Marathon's ``dependencies``, of the
        app and of the groups that hold it); otherwise in :meth:`transitive_apps` order:
        at each step, the first app whose dependencies are all placed."""
        members = list(self._members())
        groups = {g.id: g.dependencies for g in self._groups()}
        return _in_order([app for app, _, _ in members], [deps for _, _, deps in members], groups)

    def to_task_infos(self) -> tuple[TaskInfo, ...]:
        """The TaskInfo of each app, in :meth:`apps_in_order`."""
        return tuple(app.to_task_info() for app in self.apps_in_order())

    def unknown_dependencies(self) -> tuple[tuple[str, str], ...]:
        """``(app or group id, dependency)`` for each dependency on something this spec
        does not hold: Marathon looks for it among what it already runs, or ignores it."""
        known_apps = {app.id for app in self.transitive_apps()}
        group_ids = [group.id for group in self._groups()]
        known_groups = _ancestors([*known_apps, *group_ids]) | set(group_ids)
        found = [
            (group.id, dependency)
            for group in self._groups()
            for dependency in group.dependencies
            if dependency not in known_groups and dependency not in known_apps
        ]
        found += [
            (app.id, dependency)
            for app, _, dependencies in self._members()
            for dependency in dependencies
            if dependency not in known_apps and dependency not in known_groups
        ]
        return tuple(found)

    def group_dependencies_on_apps(self) -> tuple[tuple[str, str], ...]:
        """``(group id, app id)`` for each group that depends on an app: Marathon orders
        a group only after groups, so it ignores these."""
        known_apps = {app.id for app in self.transitive_apps()}
        return tuple(
            (group.id, dependency)
            for group in self._groups()
            for dependency in group.dependencies
            if dependency in known_apps
        )

    def _groups(self) -> Iterator[Group]:
        yield self
        for group in self.groups:
            yield from group._groups()

    def _members(self) -> Iterator[tuple[App, str, tuple[str, ...]]]:
        for group in self._groups():
            for app, path in zip(group.apps, group.app_paths, strict=True):
                yield app, path, group.app_dependencies.get(app.id, ())


@attrs.frozen
class AppList:
    """A validated array of apps, the body of ``PUT /v2/apps``."""

    apps: tuple[App, ...] = ()
    app_dependencies: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict, converter=_frozen)
    app_paths: tuple[str, ...] = ()

    def located_apps(self) -> tuple[tuple[str, App], ...]:
        return tuple(zip(self.app_paths, self.apps, strict=True))

    def apps_in_order(self) -> tuple[App, ...]:
        """Every app after the apps it depends on, else in the array's order. Each app
        is put into its own group (``/a/b`` into ``/a``), so a dependency may name one."""
        dependencies = [self.app_dependencies.get(app.id, ()) for app in self.apps]
        return _in_order(list(self.apps), dependencies, {})

    def to_task_infos(self) -> tuple[TaskInfo, ...]:
        return tuple(app.to_task_info() for app in self.apps_in_order())

    def unknown_dependencies(self) -> tuple[tuple[str, str], ...]:
        known_apps = {app.id for app in self.apps}
        known_groups = _ancestors(known_apps)
        return tuple(
            (app.id, dependency)
            for app in self.apps
            for dependency in self.app_dependencies.get(app.id, ())
            if dependency not in known_apps and dependency not in known_groups
        )


def _ancestors(ids: Iterable[str]) -> set[str]:
    """The groups that ids imply: every proper ancestor of each, ``/`` included."""
    found = {"/"}
    for text in ids:
        parts = _segments(text)
        found.update(_text(parts[:end]) for end in range(len(parts)))
    return found


# --- dependency order --------------------------------------------------------------


def _in_order(
    apps: list[App], dependencies: list[tuple[str, ...]], groups: dict[str, tuple[str, ...]]
) -> tuple[App, ...]:
    """:func:`_dependency_order`, a cycle being Marathon's error."""
    order, cycle = _dependency_order(apps, dependencies, groups)
    if cycle:
        raise SpecError(NOT_VALID, [("/", f"{CYCLE} ({' -> '.join(cycle)})")])
    return order


def _dependency_order(
    apps: Sequence[App],
    app_dependencies: Sequence[tuple[str, ...]],
    group_dependencies: Mapping[str, tuple[str, ...]],
) -> tuple[tuple[App, ...], list[str]]:
    """Apps sorted so that each comes after what it depends on, else in the given
    order; or, if there is none, the ids of a cycle (Kahn's algorithm, the ready app
    that comes first taken first)."""
    count = len(apps)
    requires = _graph(apps, app_dependencies, group_dependencies)
    waiting = [len(needs) for needs in requires]
    dependents: list[list[int]] = [[] for _ in requires]
    for node, needs in enumerate(requires):
        for need in needs:
            dependents[need].append(node)
    # Group nodes first (-1): they place no app; then apps in the given order.
    ready = [(-1 if node >= count else node, node) for node, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order: list[App] = []
    while ready:
        _, node = heapq.heappop(ready)
        if node < count:
            order.append(apps[node])
        for dependent in dependents[node]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, (-1 if dependent >= count else dependent, dependent))
    if len(order) == count:
        return tuple(order), []
    return (), _cycle(apps, requires, waiting)


def _graph(
    apps: Sequence[App],
    app_dependencies: Sequence[tuple[str, ...]],
    group_dependencies: Mapping[str, tuple[str, ...]],
) -> list[set[int]]:
    """What each node waits for: apps are nodes ``0..len(apps)-1``, then each group
    (``group_dependencies`` names the spec's groups; the apps' ancestors are groups
    too) twice: ``start(G)``, what every app under G waits for, and ``done(G)``, every
    app under G placed.

    Marathon's graph (``RootGroup.applicationDependencies``) has an edge from each app
    to each app of a group that its group, or an ancestor of it, depends on: quadratic
    in large groups. This one orders the same and is linear in the spec. A dependency
    on nothing in the spec is ignored, as is a group's dependency on an app.
    """
    app_ids = {app.id: i for i, app in enumerate(apps)}
    groups = sorted(_ancestors([*app_ids, *group_dependencies]) | set(group_dependencies))
    start = {g: len(apps) + 2 * i for i, g in enumerate(groups)}
    done = {g: len(apps) + 2 * i + 1 for i, g in enumerate(groups)}
    requires: list[set[int]] = [set() for _ in range(len(apps) + 2 * len(groups))]

    def parent(text: str) -> str:
        return _text(_segments(text)[:-1])

    for i, app in enumerate(apps):
        requires[i].add(start[parent(app.id)])
        requires[done[parent(app.id)]].add(i)
        requires[i].update(
            app_ids[d] if d in app_ids else done[d]
            for d in app_dependencies[i]
            if d in app_ids or d in done
        )
    for group in groups:
        if group != "/":
            requires[start[group]].add(start[parent(group)])
            requires[done[parent(group)]].add(done[group])
        requires[start[group]].update(
            done[d] for d in group_dependencies.get(group, ()) if d in done
        )
    return requires


def _cycle(apps: Sequence[App], requires: list[set[int]], waiting: list[int]) -> list[str]:
    """The apps of one cycle, first one repeated last. Each node left waiting waits for
    another one left waiting: following those leads around a cycle."""
    node = next(i for i in range(len(apps)) if waiting[i])
    seen: dict[int, int] = {}
    walk: list[int] = []
    while node not in seen:
        seen[node] = len(walk)
        walk.append(node)
        node = min(n for n in requires[node] if waiting[n])
    loop = [apps[n].id for n in walk[seen[node] :] if n < len(apps)]
    return [*loop, loop[0]]


# --- reading ------------------------------------------------------------------------


def is_group(obj: Any) -> bool:
    """A group body: an object with ``apps`` or ``groups`` and nothing of an app's
    command or a pod's containers (an app may carry unknown fields, ``apps`` too)."""
    return (
        isinstance(obj, dict)
        and (obj.get("apps") is not None or obj.get("groups") is not None)
        and all(obj.get(field) is None for field in (*COMMAND_FIELDS, "containers"))
    )


def _rollback(obj: Mapping[str, Any], where: str) -> tuple[str, str] | None:
    """A group body of only ``version`` or ``scaleBy``: a request about a group that
    exists (roll it back, scale it), not a group."""
    present = sorted(key for key, value in obj.items() if value is not None)
    if present not in (["version"], ["scaleBy"]):
        return None
    return (
        where or "/",
        f"only '{present[0]}': a request to roll back or scale a group Marathon already "
        "runs (PUT /v2/groups/{id}), not a spec",
    )


def partial_update(obj: Any, where: str = "") -> tuple[str, str] | None:
    """The violation ``(path, message)`` when ``obj`` is a partial update, not a spec.

    Marathon merges such a body into what it already runs (``PATCH`` or ``PUT
    /v2/apps/{id}``, a group's ``version`` or ``scaleBy``); with nothing to merge
    into, there is nothing to validate or run. ``where`` is an item's place in an
    array. ``None`` for anything else, a lone ``{}`` included (an app without its id).
    """
    if not isinstance(obj, dict) or "containers" in obj or not (obj or where):
        return None
    found = _rollback(obj, where)
    if found is not None:
        return found
    app_id = obj.get("id")
    if app_id is None:
        if where:  # an item of PUT /v2/apps: Marathon's own words
            return f"{where}/id", NO_APP_UPDATE_ID
        return "/id", "no 'id': a partial update (PUT or PATCH /v2/apps/{id}), not an app spec"
    if any(obj.get(field) is not None for field in COMMAND_FIELDS):
        return None
    name = f"'{printable(app_id, limit=100)}'" if isinstance(app_id, str) else "an app"
    if all(value is None for key, value in obj.items() if key != "id"):
        message = (
            f"only an 'id': an empty group (POST /v2/groups) or a partial update of {name}, "
            "not a spec; an app needs 'cmd', 'args' or 'container', a group 'apps' or 'groups'"
        )
    else:
        message = (
            f"no 'cmd', 'args' or 'container': a partial update of {name} (PATCH "
            "/v2/apps/{id}), not an app spec"
        )
    return where or "/", message


class _Reader:
    """Reads a group or an array, collecting Marathon's two kinds of errors."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.json_errors: list[tuple[str, str]] = []
        self.rule_errors: list[tuple[str, str]] = []
        self.apps = 0
        self.groups = 0

    def raise_errors(self) -> None:
        for message, errors in ((INVALID_JSON, self.json_errors), (NOT_VALID, self.rule_errors)):
            if errors:
                shown = errors[:MAX_REPORTED]
                if len(errors) > MAX_REPORTED:
                    more = len(errors) - MAX_REPORTED
                    shown.append(("/", f"and {more} more violation{'s' if more > 1 else ''}"))
                raise SpecError(message, shown)

    def count(self, kind: str, where: str) -> None:
        """One more app or group; past the limit, the spec is refused at once."""
        if kind == "app":
            self.apps += 1
            over = self.apps > MAX_APPS
            limit = MAX_APPS
        else:
            self.groups += 1
            over = self.groups > MAX_GROUPS
            limit = MAX_GROUPS
        if over:
            raise SpecError(NOT_VALID, [(where, f"more than {limit} {kind}s in one spec")])

    def array(self, obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
        value = obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.json_errors.append((f"{where}/{key}", "error.expected.jsarray"))
            return []
        return value

    def path_id(self, value: Any, where: str) -> str | None:
        """A ``strings.PathId`` as Marathon's reader checks it; None (reported) if not."""
        if not isinstance(value, str):
            self.json_errors.append((where, "error.expected.jsstring"))
        elif value == "":
            self.json_errors.append((where, "error.minLength"))
        elif not PATH_ID.match(value):  # Marathon's strings.PathId, read as apps' ids are
            self.json_errors.append((where, "error.pattern"))
        else:
            return value
        return None

    def dependencies(self, obj: Mapping[str, Any], where: str, base: Path) -> list[tuple[int, str]]:
        """``(index, absolute id)`` of each dependency, relative ones taken relative to
        ``base``; each id once (a set, in Marathon)."""
        found: dict[str, int] = {}
        for i, value in enumerate(self.array(obj, "dependencies", where)):
            text = self.path_id(value, f"{where}/dependencies({i})")
            if text is not None:
                found.setdefault(_text(canonical(text, base)), i)
        return [(i, text) for text, i in found.items()]

    def app(
        self, raw: Any, where: str, base: Path, *, nested: bool
    ) -> tuple[App, tuple[str, ...]] | None:
        """An app at ``where`` in the group ``base`` (for an array, the root): its id
        and dependencies made absolute, then read as a standalone app is."""
        self.count("app", where)
        if not isinstance(raw, dict):
            self.json_errors.append((where, "error.expected.jsobject"))
            return None
        app_id = None
        if "id" not in raw:
            self.json_errors.append((f"{where}/id", _undefined("id", raw)))
        else:
            app_id = self.path_id(raw["id"], f"{where}/id")
        path = canonical(app_id, base) if app_id is not None else None
        if path == ():
            self.rule_errors.append((f"{where}/id", "Path must contain at least one path element"))
        elif path is not None and nested and path[:-1] != base:
            self.rule_errors.append((f"{where}/id", f"Identifier is not child of '{_text(base)}'"))
        # Relative dependencies are relative to the app's group (withCanonizedIds).
        dependencies = self.dependencies(raw, where, base)
        for i, dependency in dependencies:
            self.rule_errors.extend(_path_id_violations(dependency, f"{where}/dependencies({i})"))
        # Without a usable id, the rest of the app is still read, under a stand-in id.
        placeholder = not path
        spec = dict(raw, id="/placeholder" if not path else _text(path))
        try:
            app = parse_app(spec, strict=self.strict)
        except SpecError as error:
            into = self.json_errors if error.message == INVALID_JSON else self.rule_errors
            for inner, message in error.details:
                if not (placeholder and inner == "/id"):
                    into.append((where + ("" if inner == "/" else inner), message))
            return None
        except SecretValidationError as error:
            self.rule_errors.append((where + error.path, error.message))
            return None
        if placeholder:
            return None
        return app, tuple(dependency for _, dependency in dependencies)

    def group(self, raw: Any, where: str, base: Path, *, nested: bool) -> Group | None:
        """A group at ``where`` (``""``: the body) inside the group ``base``."""
        self.count("group", where or "/")
        if not isinstance(raw, dict):
            self.json_errors.append((where or "/", "error.expected.jsobject"))
            return None
        path = self.group_id(raw, where, base, nested=nested)
        self.group_fields(raw, where, path, nested=nested)
        if self.strict and raw.get("pods") is not None:
            reason = "a group has no pods: Marathon ignores them (post each to /v2/pods)"
            self.rule_errors.append((f"{where}/pods", reason))
        dependencies = tuple(d for _, d in self.dependencies(raw, where, path))
        read_apps = []
        for i, item in enumerate(self.array(raw, "apps", where)):
            at = f"{where}/apps({i})"
            if read := self.app(item, at, path, nested=True):
                read_apps.append((read, at, item))
        read_groups = []
        for i, item in enumerate(self.array(raw, "groups", where)):
            at = f"{where}/groups({i})"
            if group := self.group(item, at, path, nested=True):
                read_groups.append(((group, ()), at, item))
        apps = self.unique("app", read_apps)
        groups = self.unique("group", read_groups)
        if any(group_id in apps for group_id in groups):
            self.rule_errors.append((where or "/", APP_AND_GROUP))
        return Group(
            id=_text(path),
            apps=tuple(app for app, _, _ in apps.values()),
            groups=tuple(group for group, _, _ in groups.values()),
            dependencies=dependencies,
            app_dependencies={app.id: deps for app, deps, _ in apps.values()},
            app_paths=tuple(at for _, _, at in apps.values()),
        )

    def group_id(self, raw: Mapping[str, Any], where: str, base: Path, *, nested: bool) -> Path:
        """The group's absolute id (``base`` when it has none), its errors reported."""
        if raw.get("id") is None:
            if nested:
                self.rule_errors.append((f"{where}/id", "a group inside a group must have an id"))
            return base
        text = self.path_id(raw["id"], f"{where}/id")
        if text is None:
            return base
        path = canonical(text, base)
        self.rule_errors.extend(_path_id_violations(text, f"{where}/id"))
        if nested and path[:-1] != base:
            self.rule_errors.append((f"{where}/id", GROUP_NOT_CHILD))
        return path

    def unique(
        self, kind: str, members: Iterable[tuple[tuple[T, tuple[str, ...]], str, Any]]
    ) -> dict[str, tuple[T, tuple[str, ...], str]]:
        """Members by id. The same one written twice is one, as in Marathon's sets; two
        different ones with one id are an error (Marathon would keep either)."""
        found: dict[str, tuple[T, tuple[str, ...], str]] = {}
        written: dict[str, Any] = {}
        for (member, dependencies), at, raw in members:
            if member.id not in found:
                found[member.id] = (member, dependencies, at)
                written[member.id] = raw
            elif written[member.id] != raw:
                where = found[member.id][2]
                self.rule_errors.append(
                    (f"{at}/id", f"the {kind} at {where} has the id '{member.id}' too")
                )
        return found

    def group_fields(self, raw: Mapping[str, Any], where: str, path: Path, *, nested: bool) -> None:
        """``version``, ``scaleBy`` and ``enforceRole``: read, and Marathon's rules."""
        version = raw.get("version")
        if version is not None and not _is_datetime(version):
            self.json_errors.append((f"{where}/version", "error.expected.date.isoformat"))
        scale = raw.get("scaleBy")
        if scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, int | float):
                self.json_errors.append((f"{where}/scaleBy", "error.expected.jsnumber"))
            elif scale < 0:
                self.json_errors.append((f"{where}/scaleBy", "error.min"))
        enforce = raw.get("enforceRole")
        if enforce is not None and not isinstance(enforce, bool):
            self.json_errors.append((f"{where}/enforceRole", "error.expected.jsboolean"))
        present = {field for field in GROUP_FIELDS if raw.get(field) is not None}
        if nested:  # Marathon's normalization has set it before the rules run
            present.add("enforceRole")
        for field in ("version", "scaleBy"):
            if field in present and len(present) > 1:
                self.rule_errors.append((f"{where}/{field}", NOT_ALONE))
        if enforce is True and len(path) != 1:
            self.rule_errors.append(
                (
                    f"{where}/enforceRole",
                    f"enforceRole can only be set for top-level groups, and {_text(path)} "
                    "is not top-level",
                )
            )


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _strict(reader: _Reader, spec: Group | AppList) -> None:
    """With ``strict``: every dependency is in the spec, and no group depends on an app."""
    for owner, dependency in spec.unknown_dependencies():
        reader.rule_errors.append(
            ("/", f"'{owner}' depends on '{dependency}', which this spec does not define")
        )
    if isinstance(spec, Group):
        for group, app in spec.group_dependencies_on_apps():
            reader.rule_errors.append(
                (
                    "/",
                    f"group '{group}' depends on app '{app}': Marathon orders a group only "
                    "after groups, and ignores this",
                )
            )


def parse_group(obj: Any, *, strict: bool = False) -> Group:
    """Validate a group body (a decoded JSON object) as ``POST /v2/groups`` does.

    Raises :class:`~mesos_secrets.marathon.SpecError`: ``Invalid JSON`` for structure,
    anywhere in the tree; else ``Object is not valid`` with every rule broken; else a
    dependency cycle. ``strict`` adds each app's strict rules, refuses ``pods``,
    dependencies on what the spec does not hold and groups' dependencies on apps.
    """
    found = _rollback(obj, "") if isinstance(obj, dict) else None
    if found is not None:
        raise SpecError(NOT_VALID, [found])
    reader = _Reader(strict)
    group = reader.group(obj, "", (), nested=False)
    reader.raise_errors()
    assert group is not None
    if strict:
        _strict(reader, group)
        reader.raise_errors()
    group.apps_in_order()  # a cycle is an error
    return group


def parse_app_list(obj: Any, *, strict: bool = False) -> AppList:
    """Validate an array of apps, the body of ``PUT /v2/apps``.

    Each item is an app, its id relative to the root; an item that is a partial
    update is refused as one, and so is an app whose id is another's group (Marathon
    puts ``/a/b`` into the group ``/a``). Errors are located ``/(0)/cmd``.
    """
    if not isinstance(obj, list):
        raise SpecError(INVALID_JSON, [("/", "error.expected.jsarray")])
    reader = _Reader(strict)
    items = []
    for i, item in enumerate(obj):
        at = f"/({i})"
        found = partial_update(item, at)
        if found is not None:
            reader.count("app", at)
            reader.rule_errors.append(found)
        elif read := reader.app(item, at, (), nested=False):
            items.append((read, at, item))
    apps = reader.unique("app", items)
    groups = _ancestors(apps)
    reader.rule_errors += [
        (f"{at}/id", APP_AND_GROUP) for i, (_, _, at) in apps.items() if i in groups
    ]
    reader.raise_errors()
    spec = AppList(
        apps=tuple(app for app, _, _ in apps.values()),
        app_dependencies={app.id: deps for app, deps, _ in apps.values()},
        app_paths=tuple(at for _, _, at in apps.values()),
    )
    if strict:
        _strict(reader, spec)
        reader.raise_errors()
    spec.apps_in_order()  # a cycle is an error
    return spec
