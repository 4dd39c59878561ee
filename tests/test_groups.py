"""Marathon groups and arrays of apps: read, ordered and refused as Marathon does."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesos_secrets import Secret, TaskInfo, cli
from mesos_secrets.groups import (
    MAX_APPS,
    MAX_GROUPS,
    MAX_REPORTED,
    AppList,
    Group,
    parse_app_list,
    parse_group,
)
from mesos_secrets.marathon import App, SpecError, load_spec
from mesos_secrets.pods import Pod

from .conftest import requires_root
from .strategies import hostile_json
from .test_run import Runner, sha
from .wild_facts import differences, task_facts

WILD = Path(__file__).parent.parent.parent / "shared" / "conformance" / "marathon-wild"
EXPECT: dict[str, Any] = json.loads((WILD / "expect.json").read_text()) if WILD.exists() else {}
KINDS = ("group", "array", "update")
CORPUS = sorted(name for name, facts in EXPECT.items() if facts["kind"] in KINDS)

#: Where Marathon's source and ``expect.json`` disagree, and why the source wins.
#: ``034`` is Marathon's documentation example, a ``GET /v2/groups`` answer: every group
#: in it, the root included, has a ``version``, and ``Group.validNestedGroupUpdateWithBase``
#: (``state/Group.scala``) checks ``group.version is theOnlyDefinedOptionIn(group)`` (a
#: version asks for a rollback, alone) on every group of a ``POST`` or ``PUT /v2/groups``;
#: ``GroupNormalization.updateNormalization`` leaves an update with a version as it is.
#: So Marathon refuses it with this message at each group's ``version``. ``expect.json``
#: says valid: its verdicts come from a model of the source (``INDEX.md``) that misses
#: this rule.
DISAGREE = {
    "034_mar_docs_group.json": ("/version", "not allowed in conjunction with other properties.")
}


def violations(spec: Any, *, strict: bool = False) -> tuple[str, list[tuple[str, str]]]:
    with pytest.raises(SpecError) as caught:
        load_spec(json.dumps(spec), strict=strict)
    body = caught.value.to_json()
    return body["message"], [(d["path"], e) for d in body["details"] for e in d["errors"]]


def group(*apps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": "/g", "apps": list(apps), **fields}


def app(app_id: str, *dependencies: str, **fields: Any) -> dict[str, Any]:
    spec = {"id": app_id, "cmd": "true", **fields}
    if dependencies:
        spec["dependencies"] = list(dependencies)
    return spec


def ids(spec: Group | AppList) -> list[str]:
    return [one.id for one in spec.apps_in_order()]


class TestCorpus:
    def test_corpus_is_there(self) -> None:
        """marathon-wild has 12 groups, 2 arrays and 3 updates."""
        kinds = [EXPECT[name]["kind"] for name in CORPUS]
        assert (kinds.count("group"), kinds.count("array"), kinds.count("update")) == (12, 2, 3)

    @pytest.mark.parametrize("name", CORPUS)
    def test_verdict(self, name: str) -> None:
        """Each file gets Marathon's verdict: valid, or the expected path and message; a
        file whose verdict depends on the endpoint is read or refused in one line each."""
        expected = EXPECT[name]
        text = (WILD / name).read_bytes()
        if name in DISAGREE:
            expected = {"valid": False, "path": DISAGREE[name][0], "message": DISAGREE[name][1]}
        if expected.get("certain") is False:
            result = answer(text)
            if isinstance(result, SpecError):
                assert all("\n" not in m and m for _, m in result.details)
            return
        if expected["valid"]:
            spec = load_spec(text)
            assert isinstance(spec, Group if expected["kind"] == "group" else AppList)
            return
        with pytest.raises(SpecError) as caught:
            load_spec(text)
        body = caught.value.to_json()
        found = [(d["path"], e) for d in body["details"] for e in d["errors"]]
        if "path" in expected:
            assert any(p == expected["path"] and expected["message"] in e for p, e in found), found
        else:
            assert expected["message"] in body["message"] or any(
                expected["message"] in e for _, e in found
            )

    @pytest.mark.parametrize(
        "name",
        [n for n in CORPUS if "conversion" in EXPECT[n] and n not in DISAGREE],
    )
    def test_facts(self, name: str) -> None:
        """Every app Marathon would launch, found by its task name (``/a/b/c`` is
        ``c.b.a``), with every fact of the TaskInfo Marathon builds for it."""
        spec = load_spec((WILD / name).read_bytes())
        assert isinstance(spec, Group)
        expected = EXPECT[name]["conversion"]["apps"]
        tasks = {task.name: task.to_json() for task in spec.to_task_infos()}
        names = {".".join(reversed(i.strip("/").split("/"))): i for i in expected}
        assert sorted(tasks) == sorted(names)
        wrong = [
            f"{app_id}: {line}"
            for task_name, app_id in names.items()
            for line in differences(expected[app_id], task_facts(tasks[task_name], "app"))
        ]
        assert wrong == []

    def test_dependencies_of_the_corpus(self) -> None:
        """Group-1: an app's dependencies, across groups; Group-2: a group's dependency
        on another group; an array: a dependency on an absent app is ignored."""
        assert ids(load_spec((WILD / "036_mar_old_Group-1.json").read_bytes())) == [  # type: ignore[arg-type]
            "/department-a/service-common",
            "/department-a/product-a/service-a",
            "/department-a/product-a/service-b",
        ]
        two = load_spec((WILD / "037_mar_old_Group-2.json").read_bytes())
        assert isinstance(two, Group)
        assert two.groups[1].dependencies == ("/department-1/database",)
        assert ids(two)[0] == "/department-1/database/mesos-docker"
        array = load_spec((WILD / "033_mar_docs_apps_create.json").read_bytes())
        assert isinstance(array, AppList)
        assert ids(array) == ["/test/sleep120", "/test/sleep60"]
        assert array.unknown_dependencies() == (("/test/sleep60", "/other/namespace/or/app"),)


class TestIds:
    def test_relative_ids_are_relative_to_their_group(self) -> None:
        """``sleep1`` in ``moregroups`` in ``moregroups`` in ``/test-group``."""
        spec = parse_group(
            {
                "id": "/test-group",
                "apps": [app("top")],
                "groups": [
                    {"id": "more", "groups": [{"id": "more", "apps": [app("sleep1")]}]},
                    {"id": "/test-group/abs", "apps": [app("/test-group/abs/a")]},
                ],
            }
        )
        assert [one.id for one in spec.transitive_apps()] == [
            "/test-group/top",
            "/test-group/more/more/sleep1",
            "/test-group/abs/a",
        ]
        assert spec.groups[0].groups[0].id == "/test-group/more/more"

    def test_dots_are_resolved(self) -> None:
        """``..`` goes up; ``.`` is not an id Marathon's reader accepts."""
        spec = parse_group(group(app("../g/b"), app("c/../d"), app("/g/x/../e")))
        assert [one.id for one in spec.apps] == ["/g/b", "/g/d", "/g/e"]
        assert violations(group(app("./a")))[1] == [("/apps(0)/id", "error.pattern")]

    def test_no_id_is_the_root_group(self) -> None:
        """``PUT /v2/groups`` of ``{"apps": [...]}``: the apps are at the root."""
        spec = load_spec(json.dumps({"apps": [app("updated")]}))
        assert isinstance(spec, Group)
        assert spec.id == "/"
        assert ids(spec) == ["/updated"]

    def test_relative_group_id_is_under_the_root(self) -> None:
        spec = parse_group({"id": "shop", "apps": [app("web")]})
        assert (spec.id, spec.apps[0].id) == ("/shop", "/shop/web")

    def test_task_names_are_marathons(self) -> None:
        """``/a/b/c`` runs as ``c.b.a``."""
        spec = parse_group({"id": "/a", "groups": [{"id": "b", "apps": [app("c")]}]})
        assert [task.name for task in spec.to_task_infos()] == ["c.b.a"]

    @pytest.mark.parametrize(
        ("spec", "path", "message"),
        [
            (group(app("/other/a")), "/apps(0)/id", "Identifier is not child of '/g'"),
            (group(app("x/a")), "/apps(0)/id", "Identifier is not child of '/g'"),
            ({"id": "/g", "groups": [{"id": "x/y"}]}, "/groups(0)/id", "Group has to be child"),
            ({"id": "/g", "groups": [{"id": "/h"}]}, "/groups(0)/id", "Group has to be child"),
            (
                {"id": "/g", "groups": [{"apps": [app("a")]}]},
                "/groups(0)/id",
                "a group inside a group must have an id",
            ),
            ({"id": "/g/tasks", "apps": []}, "/id", "reserved keywords: restart, tasks"),
            (group(app("a", "/x/versions")), "/apps(0)/dependencies(0)", "reserved keywords"),
        ],
    )
    def test_rules(self, spec: dict[str, Any], path: str, message: str) -> None:
        found = violations(spec)
        assert found[0] == "Object is not valid"
        assert any(p == path and message in m for p, m in found[1]), found

    @pytest.mark.parametrize(
        ("spec", "path", "code"),
        [
            ({"id": "pingPongGroup", "groups": []}, "/id", "error.pattern"),
            ({"id": "", "apps": []}, "/id", "error.minLength"),
            ({"id": 5, "apps": []}, "/id", "error.expected.jsstring"),
            (group(app("Bad")), "/apps(0)/id", "error.pattern"),
            (group({"cmd": "x"}), "/apps(0)/id", "'id' is undefined on object: {\"cmd\":…}"),
            (group({}), "/apps(0)/id", "'id' is undefined on object: {}"),
            (group(app("a", "UP")), "/apps(0)/dependencies(0)", "error.pattern"),
            (group(app("a"), dependencies="/x"), "/dependencies", "error.expected.jsarray"),
            ({"id": "/g", "apps": {}}, "/apps", "error.expected.jsarray"),
            ({"id": "/g", "groups": [1]}, "/groups(0)", "error.expected.jsobject"),
            (group(app("a", cpus="1")), "/apps(0)/cpus", "error.expected.jsnumber"),
            (
                {"id": "/g", "apps": [], "enforceRole": "yes"},
                "/enforceRole",
                "error.expected.jsboolean",
            ),
        ],
    )
    def test_structure(self, spec: dict[str, Any], path: str, code: str) -> None:
        message, found = violations(spec)
        assert message == "Invalid JSON"
        assert any(p == path and code in m for p, m in found), found

    def test_a_missing_id_shows_keys_not_values(self) -> None:
        """Marathon quotes the whole object; a value (a password in ``env``) stays out."""
        _, found = violations(group({"cmd": "x", "env": {"PW": "hunter2"}}))
        assert found == [("/apps(0)/id", '\'id\' is undefined on object: {"cmd":…,"env":…}')]

    def test_json_errors_from_every_app(self) -> None:
        """The reader reports every structural error of the tree at once."""
        spec = {"id": "/g", "apps": [{}], "groups": [{"id": "h", "apps": [app("a", mem="x")]}]}
        assert violations(spec)[1] == [
            ("/apps(0)/id", "'id' is undefined on object: {}"),
            ("/groups(0)/apps(0)/mem", "error.expected.jsnumber"),
        ]

    def test_app_rules_are_located_in_the_group(self) -> None:
        spec = {
            "id": "/g",
            "groups": [{"id": "h", "apps": [app("a"), app("b", env={"X": {"secret": "nope"}})]}],
        }
        assert violations(spec) == (
            "Object is not valid",
            [("/groups(0)/apps(1)/env/X/secret", "references an undefined secret")],
        )
        assert violations(group({"id": "a"}))[1] == [
            (
                "/apps(0)",
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
            )
        ]

    def test_the_same_app_twice_is_one(self) -> None:
        """Marathon reads ``apps`` into a set: the same app written twice is one."""
        assert ids(parse_group(group(app("a"), app("a")))) == ["/g/a"]

    def test_two_apps_with_one_id(self) -> None:
        """Marathon would keep either; here it is an error, at the second one."""
        assert violations(group(app("a"), app("/g/a", cmd="false")))[1] == [
            ("/apps(1)/id", "the app at /apps(0) has the id '/g/a' too")
        ]

    def test_two_groups_with_one_id(self) -> None:
        spec = {"id": "/g", "groups": [{"id": "h", "apps": [app("a")]}, {"id": "h"}]}
        assert violations(spec)[1] == [
            ("/groups(1)/id", "the group at /groups(0) has the id '/g/h' too")
        ]

    def test_app_and_group_with_one_id(self) -> None:
        spec = group(app("a"), groups=[{"id": "a", "apps": [app("b")]}])
        assert violations(spec)[1] == [
            ("/", "Groups and Applications may not have the same identifier.")
        ]

    def test_version_and_scale_only_alone(self) -> None:
        """They ask Marathon to roll back or scale a group: with more, refused; alone,
        not a spec."""
        assert violations(group(app("a"), version="2015-09-17T10:38:20.875Z"))[1] == [
            ("/version", "not allowed in conjunction with other properties.")
        ]
        assert violations(group(app("a"), scaleBy=2))[1] == [
            ("/scaleBy", "not allowed in conjunction with other properties.")
        ]
        nested = {"id": "/g", "groups": [{"version": "2015-09-17T10:38:20.875Z"}]}
        assert ("/groups(0)/version", "not allowed in conjunction with other properties.") in (
            violations(nested)[1]
        )
        for alone in ({"scaleBy": 2}, {"version": "2015-09-17T10:38:20.875Z"}):
            _, found = violations(alone)
            assert "a request to roll back or scale a group" in found[0][1]
            with pytest.raises(SpecError, match="roll back or scale"):
                parse_group(alone)

    def test_enforce_role_only_top_level(self) -> None:
        spec = {"id": "/g", "enforceRole": True, "groups": [{"id": "h", "enforceRole": True}]}
        assert violations(spec)[1] == [
            (
                "/groups(0)/enforceRole",
                "enforceRole can only be set for top-level groups, and /g/h is not top-level",
            )
        ]

    def test_pods_are_ignored_or_refused(self) -> None:
        """A group update has no pods: Marathon ignores them; ``strict`` says so."""
        spec = group(app("a"), pods=[{"id": "p", "containers": []}])
        assert ids(parse_group(spec)) == ["/g/a"]
        assert violations(spec, strict=True)[1] == [
            ("/pods", "a group has no pods: Marathon ignores them (post each to /v2/pods)")
        ]

    def test_strict_app_rules_apply_to_each_app(self) -> None:
        spec = group(app("a", secrets={"s": {"source": "/x"}}))
        parse_group(spec)
        found = violations(spec, strict=True)[1]
        assert found[0][0] == "/apps(0)/secrets"


class TestDependencies:
    def test_dependencies_first_else_in_order(self) -> None:
        """At each step, the first app whose dependencies have all been placed."""
        spec = parse_group(group(app("a", "c"), app("b"), app("c"), app("d", "a")))
        assert ids(spec) == ["/g/b", "/g/c", "/g/a", "/g/d"]

    def test_relative_dependencies_are_relative_to_the_group(self) -> None:
        """Not to the app (Marathon's ``GroupUpdateTest``): ``a`` in ``/g`` is ``/g/a``."""
        spec = parse_group(group(app("b", "a", "../g/c"), app("a"), app("c")))
        assert spec.app_dependencies["/g/b"] == ("/g/a", "/g/c")
        assert ids(spec) == ["/g/a", "/g/c", "/g/b"]

    def test_a_dependency_on_a_group_is_on_all_its_apps(self) -> None:
        spec = parse_group(
            {
                "id": "/g",
                "apps": [app("web", "db")],
                "groups": [{"id": "db", "apps": [app("primary"), app("replica")]}],
            }
        )
        assert ids(spec) == ["/g/db/primary", "/g/db/replica", "/g/web"]

    def test_a_group_depends_for_all_its_apps(self) -> None:
        """Marathon: every app under a group waits for every app of the groups it
        depends on, nested apps too."""
        spec = parse_group(
            {
                "id": "/g",
                "groups": [
                    {
                        "id": "web",
                        "dependencies": ["/g/db"],
                        "groups": [{"id": "x", "apps": [app("w")]}],
                    },
                    {"id": "db", "dependencies": ["../base"], "apps": [app("d")]},
                    {"id": "base", "apps": [app("b")]},
                ],
            }
        )
        assert ids(spec) == ["/g/base/b", "/g/db/d", "/g/web/x/w"]

    def test_a_group_dependency_on_an_app_is_ignored(self) -> None:
        """As in Marathon, which orders a group only after groups; ``strict`` says so."""
        spec = {
            "id": "/g",
            "apps": [app("a")],
            "groups": [{"id": "h", "dependencies": ["/g/a"], "apps": [app("b")]}],
        }
        parsed = parse_group(spec)
        assert ids(parsed) == ["/g/a", "/g/h/b"]  # document order, not a dependency
        assert parsed.group_dependencies_on_apps() == (("/g/h", "/g/a"),)
        assert violations(spec, strict=True)[1] == [
            (
                "/",
                "group '/g/h' depends on app '/g/a': Marathon orders a group only after groups, and ignores this",
            )
        ]

    def test_unknown_dependencies_are_ignored_unless_strict(self) -> None:
        """Marathon looks for them among what it runs already; the spec alone cannot."""
        spec = group(app("a", "/elsewhere/db"), dependencies=["/nowhere"])
        parsed = parse_group(spec)
        assert ids(parsed) == ["/g/a"]
        assert parsed.unknown_dependencies() == (("/g", "/nowhere"), ("/g/a", "/elsewhere/db"))
        assert violations(spec, strict=True)[1] == [
            ("/", "'/g' depends on '/nowhere', which this spec does not define"),
            ("/", "'/g/a' depends on '/elsewhere/db', which this spec does not define"),
        ]

    def test_ancestors_of_the_group_are_groups(self) -> None:
        """``/x`` exists once ``/x/y`` is put: a dependency on it is known (a cycle)."""
        spec = {"id": "/x/y", "apps": [app("a", "/x")]}
        assert violations(spec)[1] == [
            ("/", "Dependency graph has cyclic dependencies. (/x/y/a -> /x/y/a)")
        ]

    @pytest.mark.parametrize(
        ("spec", "cycle"),
        [
            (group(app("a", "b"), app("b", "a")), "/g/a -> /g/b -> /g/a"),
            (group(app("a", "a")), "/g/a -> /g/a"),
            (group(app("a", "c"), app("b", "a"), app("c", "b")), "/g/a -> /g/c -> /g/b -> /g/a"),
            (group(app("a", "/g")), "/g/a -> /g/a"),
            (
                {
                    "id": "/g",
                    "groups": [
                        {"id": "h", "dependencies": ["/g/k"], "apps": [app("a")]},
                        {"id": "k", "dependencies": ["/g/h"], "apps": [app("b")]},
                    ],
                },
                "/g/h/a -> /g/k/b -> /g/h/a",
            ),
        ],
    )
    def test_cycles(self, spec: dict[str, Any], cycle: str) -> None:
        """Marathon's message, and the apps of one cycle."""
        assert violations(spec) == (
            "Object is not valid",
            [("/", f"Dependency graph has cyclic dependencies. ({cycle})")],
        )

    def test_large_groups_are_ordered_fast(self) -> None:
        """A group of 3000 apps depending on a group of 3000: 9 million edges in
        Marathon's graph, a few thousand here."""
        spec = {
            "id": "/g",
            "groups": [
                {
                    "id": "web",
                    "dependencies": ["/g/db"],
                    "apps": [app(f"w{i}") for i in range(3000)],
                },
                {"id": "db", "apps": [app(f"d{i}") for i in range(3000)]},
            ],
        }
        order = ids(parse_group(spec))
        assert order[:3000] == [f"/g/db/d{i}" for i in range(3000)]


class TestArrays:
    def test_array_of_apps(self) -> None:
        spec = load_spec(json.dumps([app("/a/web", "/a/db"), app("a/db")]))
        assert isinstance(spec, AppList)
        assert ids(spec) == ["/a/db", "/a/web"]
        assert spec.located_apps()[0][0] == "/(0)"

    def test_a_dependency_on_an_implied_group(self) -> None:
        """``/a/x`` is put into the group ``/a``, which a dependency may name."""
        spec = parse_app_list([app("/web", "/a"), app("/a/x"), app("/a/y")])
        assert ids(spec) == ["/a/x", "/a/y", "/web"]

    def test_errors_are_located_by_index(self) -> None:
        assert violations([app("/a"), {"id": "/b", "cmd": 1}, 2])[1] == [
            ("/(1)/cmd", "error.expected.jsstring"),
            ("/(2)", "error.expected.jsobject"),
        ]
        assert violations([app("/a", env={"X": {"secret": "s"}})])[1] == [
            ("/(0)/env/X/secret", "references an undefined secret")
        ]

    def test_items_without_id(self) -> None:
        """Marathon's own words for an item of ``PUT /v2/apps`` without an id."""
        assert violations([app("/a"), {"cmd": "x"}, {}])[1] == [
            ("/(1)/id", "App Update must have app id set"),
            ("/(2)/id", "App Update must have app id set"),
        ]

    def test_partial_updates_in_an_array(self) -> None:
        """``PATCH /v2/apps``: each item changes an app Marathon runs already."""
        found = violations([{"id": "/test/sleep60", "cpus": 0.3}])[1]
        assert found == [
            (
                "/(0)",
                "no 'cmd', 'args' or 'container': a partial update of '/test/sleep60' "
                "(PATCH /v2/apps/{id}), not an app spec",
            )
        ]

    def test_an_app_that_is_another_apps_group(self) -> None:
        assert violations([app("/a"), app("/a/b")])[1] == [
            ("/(0)/id", "Groups and Applications may not have the same identifier.")
        ]

    def test_two_apps_with_one_id(self) -> None:
        assert ids(parse_app_list([app("/a"), app("/a")])) == ["/a"]
        assert violations([app("/a"), app("a", cmd="false")])[1] == [
            ("/(1)/id", "the app at /(0) has the id '/a' too")
        ]

    def test_empty_array(self) -> None:
        assert load_spec("[]") == AppList()

    def test_cycle(self) -> None:
        assert violations([app("/a", "/b"), app("/b", "/a")])[1] == [
            ("/", "Dependency graph has cyclic dependencies. (/a -> /b -> /a)")
        ]


class TestPartialUpdates:
    """A body that changes what Marathon runs already is not a spec: one clear line."""

    @pytest.mark.parametrize(
        ("spec", "path", "message"),
        [
            (
                {"cpus": 1, "mem": 20, "cmd": "sleep 100"},
                "/id",
                "no 'id': a partial update (PUT or PATCH /v2/apps/{id}), not an app spec",
            ),
            (
                {"id": "/foo", "instances": 2},
                "/",
                "no 'cmd', 'args' or 'container': a partial update of '/foo' (PATCH "
                "/v2/apps/{id}), not an app spec",
            ),
            (
                {"id": "/x/y"},
                "/",
                "only an 'id': an empty group (POST /v2/groups) or a partial update of "
                "'/x/y', not a spec; an app needs 'cmd', 'args' or 'container', a group "
                "'apps' or 'groups'",
            ),
            (
                {"enforceRole": True},
                "/id",
                "no 'id': a partial update (PUT or PATCH /v2/apps/{id}), not an app spec",
            ),
        ],
    )
    def test_partial_update(self, spec: dict[str, Any], path: str, message: str) -> None:
        assert violations(spec) == ("Object is not valid", [(path, message)])

    def test_what_is_not_a_partial_update(self) -> None:
        """An app, a pod, ``{}`` (an app without its id) keep their own answers."""
        assert isinstance(load_spec(json.dumps(app("/a"))), App)
        assert isinstance(
            load_spec(
                json.dumps(
                    {
                        "id": "/p",
                        "containers": [
                            {
                                "name": "c",
                                "resources": {"cpus": 0.1, "mem": 16},
                                "exec": {"command": {"shell": "true"}},
                            }
                        ],
                    }
                )
            ),
            Pod,
        )
        assert violations({})[1] == [("/id", "'id' is undefined on object: {}")]
        found = violations({"id": "/a", "container": {"type": "DOCKER"}})[1]
        assert ("/container/docker", "not defined") in found

    def test_an_app_with_apps_is_an_app(self) -> None:
        """Unknown fields of an app are ignored, ``apps`` too."""
        assert isinstance(load_spec(json.dumps(app("/a", apps=[]))), App)


SHOP = {
    "id": "/shop",
    "apps": [app("web", "db", env={"PW": {"secret": "pw"}}, secrets={"pw": {"source": "/ops/db"}})],
    "groups": [{"id": "db", "apps": [app("primary")]}],
}


class TestCommandLine:
    """``validate`` and ``task-info`` take groups and arrays."""

    def cli(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: Any, *args: str
    ) -> tuple[int, str, str]:
        path = tmp_path / "spec.json"
        path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
        status = cli.main([*args[:1], str(path), *args[1:]])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return status, out, err.replace(str(path), "spec.json")

    def test_validate_group(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        assert self.cli(capsys, tmp_path, SHOP, "validate") == (
            0,
            "",
            "spec.json: valid group '/shop' (2 apps)\n",
        )

    def test_validate_array(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        status, _, err = self.cli(capsys, tmp_path, [app("/a")], "validate")
        assert (status, err) == (0, "spec.json: valid array of 1 app\n")

    def test_validate_json(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """Marathon's error body, as dcos-core-cli's test expects it from Marathon."""
        text = (WILD / "059_dcoscli_groups_complicated_bad.json").read_text()
        status, out, _ = self.cli(capsys, tmp_path, text, "validate", "--json")
        assert status == 1
        assert json.loads(out) == {
            "message": "Invalid JSON",
            "details": [
                {"path": "/groups(0)/apps(0)/id", "errors": ["'id' is undefined on object: {}"]}
            ],
        }

    def test_validate_text(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        spec = group(app("a", "b"), app("b", "a"))
        assert self.cli(capsys, tmp_path, spec, "validate") == (
            1,
            "",
            "spec.json: Object is not valid\n"
            "  /: Dependency graph has cyclic dependencies. (/g/a -> /g/b -> /g/a)\n",
        )

    def test_validate_with_acls(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """A secret the principal may not use is named where it is in the group."""
        acls = tmp_path / "acls.json"
        rules = {
            "permissive": False,
            "access_secrets": [
                {"principals": {"values": ["ops"]}, "secrets": {"values": ["/ops/**"]}}
            ],
        }
        acls.write_text(json.dumps(rules))
        status, _, _ = self.cli(
            capsys, tmp_path, SHOP, "validate", "--acls", str(acls), "--principal", "ops"
        )
        assert status == 0
        status, out, _ = self.cli(
            capsys, tmp_path, SHOP, "validate", "--json", "--acls", str(acls), "--principal", "dev"
        )
        assert status == 1
        assert json.loads(out)["details"] == [
            {
                "path": "/apps(0)/secrets/pw/source",
                "errors": ["Secret /ops/db is not accessible to principal 'dev'"],
            }
        ]

    def test_task_info(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """Every app's TaskInfo, dependencies first, named as Marathon names tasks."""
        status, out, _ = self.cli(capsys, tmp_path, SHOP, "task-info")
        assert status == 0
        tasks = [TaskInfo.from_json(one) for one in json.loads(out)]
        assert [task.name for task in tasks] == ["primary.db.shop", "web.shop"]
        assert tasks[1].secrets() == (Secret.for_reference("/ops/db"),)

    def test_task_info_of_an_array(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        status, out, _ = self.cli(capsys, tmp_path, [app("/b", "/a"), app("/a")], "task-info")
        assert status == 0
        assert [one["name"] for one in json.loads(out)] == ["a", "b"]

    @pytest.mark.parametrize("command", ["validate", "task-info", "run"])
    def test_partial_update(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
    ) -> None:
        """One line that says what the body is; not a missing command."""
        status, out, err = self.cli(capsys, tmp_path, {"id": "/foo", "instances": 2}, command)
        assert (status, out) == (1, "")
        assert err == (
            "spec.json: Object is not valid\n"
            "  /: no 'cmd', 'args' or 'container': a partial update of '/foo' "
            "(PATCH /v2/apps/{id}), not an app spec\n"
        )


@requires_root
class TestRun:
    """``run`` of a group: every app, dependencies first, each in its own sandbox; the
    first failure stops the others."""

    def spec(self, db: str, web: str) -> dict[str, Any]:
        return {
            "id": "/duo",
            "apps": [
                app(
                    "web",
                    "db",
                    cmd=web,
                    env={"PW": {"secret": "pw"}},
                    secrets={"pw": {"source": "/duo/db@password"}},
                ),
                app("db", cmd=db, env={"ROLE": "db"}),
            ],
        }

    def test_every_app_runs_dependencies_first(self, tmp_path: Path, home: Path) -> None:
        runner = Runner(tmp_path, home)
        runner.store.put("/duo/db", {"password": "pw"})
        web = f'test "$(printf %s "$PW" | sha256sum | cut -c1-64)" = {sha("pw")}'
        result = runner.run(self.spec('test "$ROLE" = db && echo db > done', web))
        err = result.stderr.decode()
        assert result.returncode == 0, err
        assert err.index("task duo_db.") < err.index("task duo_web.")  # started in order
        assert (runner.work / "duo_db" / "done").read_text() == "db\n"
        assert not (runner.work / "duo_web" / "done").exists()
        runner.assert_no_residue()

    def test_first_failure_stops_the_others(self, tmp_path: Path, home: Path) -> None:
        runner = Runner(tmp_path, home)
        runner.store.put("/duo/db", {"password": "pw"})
        started = time.monotonic()
        result = runner.run(self.spec("exit 3", "sleep 60"), "--grace-period", "1")
        assert result.returncode == 3, result.stderr.decode()
        assert b"stopping the group's other tasks" in result.stderr
        assert time.monotonic() - started < 30
        runner.assert_no_residue()

    def test_an_array_runs_too(self, tmp_path: Path, home: Path) -> None:
        runner = Runner(tmp_path, home)
        path = tmp_path / "array.json"
        path.write_text(json.dumps([app("/a/one", "/a/two"), app("/a/two", cmd="exit 5")]))
        command = runner.command({})
        command[command.index(str(runner.tmp / "app.json"))] = str(path)
        result = subprocess.run(command, capture_output=True, timeout=120, check=False)
        assert result.returncode == 5, result.stderr.decode()
        runner.assert_no_residue()

    def test_unknown_dependencies_are_named(self, tmp_path: Path, home: Path) -> None:
        """Nothing in the spec to wait for: run says so, and goes on."""
        runner = Runner(tmp_path, home)
        result = runner.run(group(app("a", "/elsewhere")))
        assert result.returncode == 0, result.stderr.decode()
        assert b"'/g/a' depends on '/elsewhere', which is not in the group '/g'" in result.stderr

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ({"id": "/empty", "apps": []}, "the group '/empty' has no apps to run"),
            (
                group(app("a"), app("b", container={"type": "DOCKER", "docker": {"image": "x"}})),
                "task 'b.g': container.type DOCKER needs Docker's containerizer",
            ),
        ],
    )
    def test_refused(self, tmp_path: Path, home: Path, spec: dict[str, Any], message: str) -> None:
        runner = Runner(tmp_path, home)
        command = [part for part in runner.command(spec) if part != "-vv"]
        result = subprocess.run(command, capture_output=True, timeout=120, check=False)
        assert result.returncode == 1
        (line,) = result.stderr.decode().splitlines()
        assert line.startswith("mesos-secrets: error: ")
        assert message in line
        runner.assert_no_residue()


class TestHostile:
    """Big or deep input: one clear error, quickly, never a traceback."""

    def test_deep_groups(self) -> None:
        spec: dict[str, Any] = {"id": "x", "apps": [app("a")]}
        for _ in range(60):
            spec = {"id": "x", "groups": [spec]}
        assert violations(spec)[1] == [("/groups", "nested deeper than 100 levels")]

    def test_deep_groups_within_the_limit(self) -> None:
        spec: dict[str, Any] = {"id": "x", "apps": [app("a")]}
        for _ in range(48):
            spec = {"id": "x", "groups": [spec]}
        assert ids(parse_group(spec)) == ["/x" * 49 + "/a"]

    def test_huge_array(self) -> None:
        text = "[" + ",".join(["{}"] * 200_000) + "]"
        with pytest.raises(SpecError) as caught:
            load_spec(text)
        assert caught.value.details == (
            (f"/({MAX_APPS})", f"more than {MAX_APPS} apps in one spec"),
        )

    def test_many_groups(self) -> None:
        spec = {"id": "/g", "groups": [{"id": f"g{i}"} for i in range(MAX_GROUPS + 5)]}
        found = violations(spec)[1]
        assert found == [
            (f"/groups({MAX_GROUPS - 1})", f"more than {MAX_GROUPS} groups in one spec")
        ]

    def test_many_violations_are_cut(self) -> None:
        _, found = violations([{"cmd": "x"}] * 500)
        assert len(found) == MAX_REPORTED + 1
        assert found[-1] == ("/", f"and {500 - MAX_REPORTED} more violations")

    def test_long_ids(self) -> None:
        for text in ("a" * 300_000 + "!", "a." * 300_000 + "-", "a-" * 300_000 + "!"):
            assert violations({"id": "/" + text, "apps": []})[1] == [("/id", "error.pattern")]


names = st.sampled_from(["a", "b", "c", "d", "e"])
odd_ids = st.sampled_from(["/g/a", "..", "../x", "./c", "/", "", "B", "a/b", "/x"])
group_ids = st.one_of(names, names, names, names, names, odd_ids)
apps_in_groups = st.fixed_dictionaries(
    {"id": group_ids, "cmd": st.sampled_from(["true"] * 9 + [""])},
    optional={"dependencies": st.lists(st.one_of(names, odd_ids, st.just("..")), max_size=3)},
)
groups = st.recursive(
    st.fixed_dictionaries(
        {"id": group_ids}, optional={"apps": st.lists(apps_in_groups, max_size=3)}
    ),
    lambda inner: st.fixed_dictionaries(
        {"id": group_ids},
        optional={
            "apps": st.lists(apps_in_groups, max_size=3),
            "groups": st.lists(inner, max_size=3),
            "dependencies": st.lists(st.one_of(names, odd_ids), max_size=2),
        },
    ),
    max_leaves=10,
)
bodies = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["/g", "g", "/", "/x/y"]),
        "apps": st.lists(apps_in_groups, min_size=1, max_size=4),
    },
    optional={"groups": st.lists(groups, min_size=1, max_size=3), "dependencies": st.lists(names)},
)


def answer(text: str | bytes) -> App | Pod | Group | AppList | SpecError:
    try:
        return load_spec(text)
    except SpecError as error:
        return error


def all_dependencies(spec: Group | AppList) -> dict[str, tuple[str, ...]]:
    """Each app's own dependencies, whichever group holds it."""
    if isinstance(spec, AppList):
        return dict(spec.app_dependencies)
    found = dict(spec.app_dependencies)
    for inner in spec.groups:
        found |= all_dependencies(inner)
    return found


@given(st.one_of(bodies, st.lists(apps_in_groups, max_size=4), hostile_json))
@settings(max_examples=300)
def test_any_group_gets_a_typed_answer(spec: Any) -> None:
    """A group or an array, valid and ordered (each app after the apps it depends on),
    or errors with paths; never another exception."""
    result = answer(json.dumps(spec))
    if isinstance(result, SpecError):
        assert result.message in ("Invalid JSON", "Object is not valid")
        assert all(path.startswith("/") and message for path, message in result.details)
        return
    if not isinstance(result, Group | AppList):
        return
    order = result.apps_in_order()
    dependencies = all_dependencies(result)
    every = {one.id for one in order}
    placed: set[str] = set()
    for one in order:
        assert all(d in placed for d in dependencies[one.id] if d in every), one.id
        placed.add(one.id)
    assert len(result.to_task_infos()) == len(every)
