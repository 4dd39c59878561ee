"""Pods: validation as Marathon's PodsValidation, conversion to a TaskGroupInfo, runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesos_secrets import Secret, TaskGroupInfo, TaskInfo
from mesos_secrets.groups import AppList, Group
from mesos_secrets.marathon import App, SpecError, load_spec, parse_app
from mesos_secrets.mesos import SourceType, VariableType, VolumeMode
from mesos_secrets.pods import Pod, parse_pod

from .conftest import requires_root
from .test_run import Runner, sha

POD: dict[str, Any] = {
    "id": "/shop/pod",
    "user": "nobody",
    "environment": {"DB_PW": {"secret": "db"}, "MODE": "pod"},
    "secrets": {
        "db": {"source": "/shop/db@password"},
        "api": {"source": "shop/api"},
        "pull": {"source": "/registry/pull@config"},
    },
    "volumes": [{"name": "creds", "secret": "db"}, {"name": "scratch"}],
    "containers": [
        {
            "name": "web",
            "resources": {"cpus": 0.5, "mem": 64},
            "exec": {"command": {"shell": "./serve"}},
            "environment": {"MODE": "web", "API": {"secret": "api"}},
            "volumeMounts": [
                {"name": "creds", "mountPath": "secrets/db"},
                {"name": "scratch", "mountPath": "tmp"},
            ],
        },
        {
            "name": "worker",
            "resources": {"cpus": 0.1, "mem": 32},
            "exec": {"command": {"argv": ["/bin/work", "--once"]}},
            "image": {
                "kind": "docker",
                "id": "registry.local/worker:1",
                "forcePull": True,
                "pullConfig": {"secret": "pull"},
            },
            "volumeMounts": [{"name": "creds", "mountPath": ".//etc/db"}],
        },
    ],
}


def violations(spec: Any, **kwargs: Any) -> tuple[str, list[tuple[str, str]]]:
    with pytest.raises(SpecError) as caught:
        (parse_pod if isinstance(spec, dict) and "containers" in spec else parse_app)(
            spec, **kwargs
        )
    body = caught.value.to_json()
    return body["message"], [(d["path"], e) for d in body["details"] for e in d["errors"]]


class TestConversion:
    def group(self) -> TaskGroupInfo:
        return parse_pod(POD).to_task_group(instance="shop_pod.instance-1")

    def test_a_task_per_container(self) -> None:
        group = self.group()
        assert [(t.name, t.task_id) for t in group.tasks] == [
            ("web", "shop_pod.instance-1.web"),
            ("worker", "shop_pod.instance-1.worker"),
        ]

    def test_environment_merge(self) -> None:
        """The pod's variables, then the container's own on top (TaskGroupBuilder's order)."""
        web = self.group().tasks[0]
        variables = {v.name: v for v in web.command.environment.variables}  # type: ignore[union-attr]
        assert variables["MODE"].value == "web"
        assert variables["DB_PW"].type is VariableType.SECRET
        assert variables["DB_PW"].secret == Secret.for_reference("/shop/db", "password")
        assert variables["API"].secret == Secret.for_reference("shop/api")
        worker = self.group().tasks[1]
        assert {v.name: v.value for v in worker.command.environment.variables}["MODE"] == "pod"  # type: ignore[union-attr]

    def test_volumes_where_mounted(self) -> None:
        """A secret volume is a read-only SECRET volume in each task that mounts it."""
        web, worker = self.group().tasks
        assert web.container is not None
        assert worker.container is not None
        secret, scratch = web.container.volumes
        assert (secret.container_path, secret.mode, secret.secret) == (
            "secrets/db",
            VolumeMode.RO,
            Secret.for_reference("/shop/db", "password"),
        )
        assert scratch.source is not None
        assert scratch.source.type is SourceType.SANDBOX_PATH
        assert [v.container_path for v in worker.container.volumes] == ["etc/db"]  # .//etc/db

    def test_command_user_image(self) -> None:
        web, worker = self.group().tasks
        assert web.command is not None
        assert worker.command is not None
        assert (web.command.value, web.command.shell, web.command.user) == (
            "./serve",
            True,
            "nobody",
        )
        assert (worker.command.shell, worker.command.arguments) == (False, ("/bin/work", "--once"))
        assert worker.container is not None
        image = worker.container.mesos.image  # type: ignore[union-attr]
        assert image.docker.config == Secret.for_reference("/registry/pull", "config")  # type: ignore[union-attr]
        assert image.cached is False  # forcePull

    def test_round_trip(self) -> None:
        group = self.group()
        assert TaskGroupInfo.from_json(json.dumps(group.to_json())) == group


class TestRules:
    """PodsValidation, rule by rule (reference/marathon.md §2.4)."""

    def pod(self, **changes: Any) -> dict[str, Any]:
        return {**json.loads(json.dumps(POD)), **changes}

    def test_relative_id(self) -> None:
        assert ("/id", "Path needs to be absolute") in violations(self.pod(id="shop/pod"))[1]

    def test_undefined_env_secrets(self) -> None:
        pod = self.pod(environment={"A": {"secret": "nope"}})
        pod["containers"][0]["environment"] = {"B": {"secret": "nope2"}}
        found = violations(pod)[1]
        assert ("/environment/A/secret", "references an undefined secret") in found
        assert ("/containers(0)/environment/B/secret", "references an undefined secret") in found

    def test_env_name_pattern(self) -> None:
        pod = self.pod()
        pod["containers"][0]["environment"] = {"bad name": "x"}
        assert violations(pod) == (
            "Invalid JSON",
            [("/containers(0)/environment/bad name", "error.pattern")],
        )

    def test_volume_undefined_secret(self) -> None:
        pod = self.pod(volumes=[{"name": "creds", "secret": "missing"}, {"name": "scratch"}])
        assert ("/volumes(0)", "volume.secret must refer to an existing secret") in violations(pod)[
            1
        ]

    def test_unmounted_volume(self) -> None:
        pod = self.pod(volumes=[*POD["volumes"], {"name": "lonely"}])
        assert ("/volumes(2)", "volume must be referenced by at least one container") in violations(
            pod
        )[1]

    def test_unique_volume_names(self) -> None:
        pod = self.pod(volumes=[*POD["volumes"], {"name": "creds", "secret": "db"}])
        assert ("/volumes", "volume names must be unique") in violations(pod)[1]

    def test_mount_of_missing_volume(self) -> None:
        pod = self.pod()
        pod["containers"][1]["volumeMounts"] = [{"name": "ghost", "mountPath": "x"}]
        assert (
            "/containers(1)/volumeMounts(0)/name",
            "Referenced Volume in VolumeMount should exist",
        ) in violations(pod)[1]

    def test_pull_config_undefined(self) -> None:
        pod = self.pod()
        pod["containers"][1]["image"]["pullConfig"] = {"secret": "nope"}
        assert (
            "/containers(1)/image/pullConfig",
            "pullConfig.secret must refer to an existing secret",
        ) in violations(pod)[1]

    def test_resources_required(self) -> None:
        pod = self.pod()
        del pod["containers"][0]["resources"]
        assert violations(pod) == (
            "Invalid JSON",
            [("/containers(0)/resources", "error.path.missing")],
        )

    @pytest.mark.parametrize(
        ("change", "path", "code"),
        [
            (
                {"volumes": [{"name": "Bad_Name", "secret": "db"}]},
                "/volumes(0)/name",
                "error.pattern",
            ),
            ({"secrets": {"s": {"source": ""}}}, "/secrets/s/source", "error.minLength"),
            ({"containers": "x"}, "/containers", "error.expected.jsarray"),
        ],
    )
    def test_structure(self, change: dict[str, Any], path: str, code: str) -> None:
        assert (path, code) in violations(self.pod(**change))[1]

    def test_empty_secret_volume_is_ephemeral(self) -> None:
        """Marathon reads {"name": "v", "secret": ""} as an ephemeral volume, silently."""
        pod = parse_pod(self.pod(volumes=[{"name": "creds", "secret": ""}, {"name": "scratch"}]))
        assert pod.volumes[0].kind == "ephemeral"

    def test_our_stricter_path_rule(self) -> None:
        """Marathon lets a mount escape with '..'; we refuse it, saying where."""
        pod = self.pod()
        pod["containers"][0]["volumeMounts"][0]["mountPath"] = "../../escape"
        message, found = violations(pod)
        assert message == "Object is not valid"
        assert found == [
            (
                "/containers(0)/volumeMounts(0)/mountPath",
                "container_path '../../escape' must not contain '..'",
            )
        ]


class TestStrict:
    def test_unused_secret(self) -> None:
        spec = {
            "id": "/a",
            "cmd": "x",
            "env": {"A": {"secret": "used"}},
            "secrets": {"used": {"source": "/u"}, "unused": {"source": "/v"}},
        }
        parse_app(spec)  # Marathon allows it
        assert violations(spec, strict=True)[1] == [
            (
                "/secrets",
                "The following secrets are defined, but not referenced: unused. Please remove them from the secrets field.",
            )
        ]

    def test_file_secrets_only_with_ucr(self) -> None:
        spec = {
            "id": "/a",
            "cmd": "x",
            "secrets": {"s": {"source": "/s"}},
            "container": {
                "type": "DOCKER",
                "docker": {"image": "i"},
                "volumes": [{"containerPath": "p", "secret": "s"}],
            },
        }
        parse_app(spec)
        assert ("/container/volumes", "File based secrets are only supported by UCR") in violations(
            spec, strict=True
        )[1]

    def test_pod_unused_secret(self) -> None:
        pod = {**POD, "secrets": {**POD["secrets"], "spare": {"source": "/x"}}}
        assert violations(pod, strict=True)[1][0][1].startswith(
            "The following secrets are defined, but not referenced: spare."
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
names = st.sampled_from(["a", "b", "db", "", "x y"])
env_values = st.one_of(
    st.text(max_size=5), st.builds(lambda s: {"secret": s}, names), st.integers(), st.just({})
)
env = st.dictionaries(st.sampled_from(["A", "B", "bad name", "", "X=Y"]), env_values, max_size=3)
secrets = st.dictionaries(
    names,
    st.one_of(
        st.builds(lambda s: {"source": s}, st.sampled_from(["/a", "b@k", "", "/c/d@"])), st.just({})
    ),
    max_size=3,
)
paths = st.sampled_from(["p", "/etc/x", "../x", ".//y", "", "a//b"])
apps = st.fixed_dictionaries(
    {"id": st.sampled_from(["/app", "app", ""]), "cmd": st.text(min_size=1, max_size=5)},
    optional={
        "env": env,
        "secrets": secrets,
        "args": st.lists(st.text(max_size=3), max_size=2),
        "container": st.fixed_dictionaries(
            {"type": st.sampled_from(["MESOS", "mesos", "DOCKER", "LXC"])},
            optional={
                "volumes": st.lists(
                    st.fixed_dictionaries({"containerPath": paths, "secret": names}), max_size=2
                ),
                "docker": st.fixed_dictionaries(
                    {"image": st.sampled_from(["r/i:1", ""])},
                    optional={"pullConfig": st.builds(lambda s: {"secret": s}, names)},
                ),
            },
        ),
    },
)
pods = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["/pod", "pod"]),
        "containers": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["c1", "c2", "Bad"]),
                    "resources": st.just({"cpus": 0.1, "mem": 16}),
                },
                optional={
                    "environment": env,
                    "exec": st.just({"command": {"shell": "true"}}),
                    "volumeMounts": st.lists(
                        st.fixed_dictionaries(
                            {"name": st.sampled_from(["v1", "v2"]), "mountPath": paths}
                        ),
                        max_size=2,
                    ),
                },
            ),
            max_size=3,
        ),
    },
    optional={
        "environment": env,
        "secrets": secrets,
        "volumes": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["v1", "v2"])}, optional={"secret": names}
            ),
            max_size=2,
        ),
    },
)


def answer(spec: Any) -> App | Pod | Group | AppList | SpecError:
    try:
        return load_spec(json.dumps(spec))
    except SpecError as error:
        return error


@given(st.one_of(json_values, apps, pods))
@settings(max_examples=300)
def test_any_input_gets_a_typed_answer(spec: Any) -> None:
    """Whatever the input: valid (and convertible, round-tripping), or errors with paths."""
    result = answer(spec)
    if isinstance(result, SpecError):
        assert result.message in ("Invalid JSON", "Object is not valid")
        assert result.details
        for path, message in result.details:
            assert path.startswith("/")
            assert message
        return
    if isinstance(result, App):
        task = result.to_task_info()
        assert TaskInfo.from_json(json.dumps(task.to_json())) == task
    elif isinstance(result, Group | AppList):
        for task in result.to_task_infos():
            assert TaskInfo.from_json(json.dumps(task.to_json())) == task
    else:
        assert isinstance(result, Pod)
        group = result.to_task_group()
        assert TaskGroupInfo.from_json(json.dumps(group.to_json())) == group


@requires_root
class TestRunPods:
    def spec(self, web: str, worker: str) -> dict[str, Any]:
        return {
            "id": "/pod",
            "environment": {"DB": {"secret": "db"}, "MODE": "pod"},
            "secrets": {"db": {"source": "/pod/db@password"}},
            "volumes": [{"name": "creds", "secret": "db"}],
            "containers": [
                {
                    "name": "web",
                    "resources": {"cpus": 0.1, "mem": 16},
                    "exec": {"command": {"shell": web}},
                    "environment": {"MODE": "web"},
                    "volumeMounts": [{"name": "creds", "mountPath": "secrets/db"}],
                },
                {
                    "name": "worker",
                    "resources": {"cpus": 0.1, "mem": 16},
                    "exec": {"command": {"shell": worker}},
                    "volumeMounts": [{"name": "creds", "mountPath": "db"}],
                },
            ],
        }

    def test_env_and_files(self, tmp_path: Path, home: Path) -> None:
        runner = Runner(tmp_path, home)
        runner.store.put("/pod/db", {"password": "pod-pw"})
        digest = sha("pod-pw")
        web = f'test "$MODE" = web && test "$(printf %s "$DB" | sha256sum | cut -c1-64)" = {digest} && test "$(sha256sum < secrets/db | cut -c1-64)" = {digest}'
        worker = f'test "$MODE" = pod && test "$(sha256sum < db | cut -c1-64)" = {digest}'
        result = runner.run(self.spec(web, worker))
        assert result.returncode == 0, result.stderr.decode()
        runner.assert_no_residue()

    def test_first_failure_gives_the_status(self, tmp_path: Path, home: Path) -> None:
        """One container fails: the others are stopped, run exits with the failure's status."""
        runner = Runner(tmp_path, home)
        runner.store.put("/pod/db", {"password": "pod-pw"})
        result = runner.run(self.spec("sleep 30", "exit 4"), "--grace-period", "1")
        assert result.returncode == 4, result.stderr.decode()
        assert b"stopping the pod's other tasks" in result.stderr
        runner.assert_no_residue()
