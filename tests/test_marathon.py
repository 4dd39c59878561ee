"""Marathon app specs: validation as Marathon does it, and conversion to Mesos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets import Secret, TaskInfo
from mesos_secrets.marathon import SpecError, load_spec, parse_app
from mesos_secrets.mesos import ContainerType, VariableType, VolumeMode

CORPUS = Path(__file__).parent.parent.parent / "shared" / "conformance" / "marathon"
EXPECT = json.loads((CORPUS / "expect.json").read_text()) if CORPUS.exists() else {}


SPECS = sorted(EXPECT)


def test_corpus_is_there() -> None:
    """The conformance corpus from ../shared is found (else the next tests would not run)."""
    assert len(SPECS) >= 40


@pytest.mark.parametrize("name", SPECS)
def test_conformance(name: str) -> None:
    """Each app of the corpus gets Marathon's verdict, path and message."""
    expected = EXPECT[name]
    text = (CORPUS / name).read_bytes()
    if expected["valid"]:
        load_spec(text)
        return
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    body = caught.value.to_json()
    found = [(d["path"], e) for d in body["details"] for e in d["errors"]]
    if expected.get("message") in ("Invalid JSON", "Object is not valid"):
        assert body["message"] == expected["message"]
    elif "message" in expected:
        assert expected["message"] in [e for _, e in found], found
        if "path" in expected:
            assert (expected["path"], expected["message"]) in found


APP: dict[str, Any] = {
    "id": "/group/web",
    "cmd": "./serve",
    "user": "nobody",
    "cpus": 0.5,
    "mem": 64,
    "env": {"PLAIN": "x", "DB_PW": {"secret": "db"}, "TOKEN": {"secret": "token"}},
    "secrets": {"db": {"source": "/myapp/db@password"}, "token": {"source": "tokens/api"}},
    "container": {
        "type": "MESOS",
        "volumes": [{"containerPath": "secrets/pw", "secret": "db"}],
        "docker": {"image": "registry.local/app:1", "pullConfig": {"secret": "token"}},
    },
}


class TestConversion:
    def task(self, **changes: Any) -> TaskInfo:
        return parse_app({**APP, **changes}).to_task_info(task_id="t1")

    def test_env(self) -> None:
        """Env secrets become SECRET variables referencing the source; path@key splits."""
        variables = {v.name: v for v in self.task().command.environment.variables}  # type: ignore[union-attr]
        assert variables["PLAIN"].type is VariableType.VALUE
        assert variables["DB_PW"].secret == Secret.for_reference("/myapp/db", "password")
        assert variables["TOKEN"].secret == Secret.for_reference("tokens/api")

    def test_volume(self) -> None:
        """A file secret is a read-only SECRET volume at containerPath."""
        (volume,) = self.task().container.volumes  # type: ignore[union-attr]
        assert volume.container_path == "secrets/pw"
        assert volume.mode is VolumeMode.RO
        assert volume.secret == Secret.for_reference("/myapp/db", "password")

    def test_pull_config(self) -> None:
        """pullConfig becomes Image.Docker.config, named by the secret's source (DC/OS)."""
        container = self.task().container
        assert container is not None
        assert container.type is ContainerType.MESOS
        assert container.image_pull_secret() == Secret.for_reference("tokens/api")
        assert container.mesos.image.docker.name == "registry.local/app:1"  # type: ignore[union-attr]

    def test_command_user_resources(self) -> None:
        """cmd is a shell command; user and resources carry over; names follow Marathon."""
        task = self.task()
        assert task.command is not None
        assert (task.command.value, task.command.shell, task.command.user) == (
            "./serve",
            True,
            "nobody",
        )
        assert task.name == "web.group"
        resources = task.to_json()["resources"]
        assert resources[:2] == [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 64.0}},
        ]
        # Host networking without portDefinitions: one dynamic port named "default".
        assert [r["name"] for r in resources[2:]] == ["ports"]

    def test_args(self) -> None:
        """args run without a shell, argv[0] first."""
        task = parse_app({"id": "/a", "args": ["/bin/echo", "hi"]}).to_task_info()
        assert task.command is not None
        assert (task.command.shell, task.command.value, task.command.arguments) == (
            False,
            "/bin/echo",
            ("/bin/echo", "hi"),
        )
        assert task.task_id.startswith("a.instance-")

    def test_round_trip_through_mesos_json(self) -> None:
        """The TaskInfo's Mesos JSON reads back into the same model."""
        task = self.task()
        assert TaskInfo.from_json(json.dumps(task.to_json())) == task

    def test_only_references_in_task_info(self) -> None:
        """A spec's secrets are all references: no value travels with the task."""
        secrets = self.task().secrets()
        assert len(secrets) == 4
        assert all(secret.is_reference for secret in secrets)

    def test_host_volume(self) -> None:
        """Host volumes are Mesos host_path volumes."""
        volume = {"containerPath": "data", "hostPath": "/srv", "mode": "rw"}
        task = self.task(container={"type": "MESOS", "volumes": [volume]})
        (converted,) = task.container.volumes  # type: ignore[union-attr]
        assert (converted.host_path, converted.mode) == ("/srv", VolumeMode.RW)

    def test_bad_container_path_is_refused(self) -> None:
        """A path that escapes the sandbox is refused when the TaskInfo is built."""
        volume = {"containerPath": "../../etc/passwd", "secret": "db"}
        with pytest.raises(Exception, match="must not contain '..'"):
            self.task(container={"type": "MESOS", "volumes": [volume]})


class TestValidation:
    def violations(self, spec: Any) -> tuple[str, list[tuple[str, str]]]:
        with pytest.raises(SpecError) as caught:
            parse_app(spec)
        body = caught.value.to_json()
        return body["message"], [(d["path"], e) for d in body["details"] for e in d["errors"]]

    @pytest.mark.parametrize(
        ("change", "path", "code"),
        [
            ({"id": None}, "/id", "'id' is undefined on object: {"),
            ({"id": 5}, "/id", "error.expected.jsstring"),
            ({"id": ""}, "/id", "error.minLength"),
            ({"env": {"X": 5}}, "/env/X", "error.expected.jsstring"),
            ({"env": {"X": {}}}, "/env/X/secret", "error.path.missing"),
            ({"secrets": {"s": {}}}, "/secrets/s/source", "error.path.missing"),
            ({"secrets": {"s": {"source": ""}}}, "/secrets/s/source", "error.minLength"),
            ({"container": {"type": "LXC"}}, "/container/type", "error.expected.validenumvalue"),
            (
                {"container": {"type": "MESOS", "volumes": [{"secret": "s"}]}},
                "/container/volumes(0)/containerPath",
                "error.path.missing",
            ),
            ({"args": "echo"}, "/args", "error.expected.jsarray"),
        ],
    )
    def test_structure(self, change: dict[str, Any], path: str, code: str) -> None:
        """Structural errors are Marathon's `Invalid JSON` with the field's path."""
        spec = {"id": "/a", "cmd": "true", **change}
        spec = {k: v for k, v in spec.items() if v is not None}
        message, found = self.violations(spec)
        assert message == "Invalid JSON"
        assert any(p == path and e.startswith(code) for p, e in found), found

    def test_all_violations_are_reported(self) -> None:
        """Every broken rule is listed, not just the first."""
        spec = {
            "id": "/a",
            "cmd": "true",
            "env": {"A": {"secret": "x"}, "B": {"secret": "y"}},
            "container": {"type": "MESOS", "volumes": [{"containerPath": "p", "secret": "z"}]},
        }
        message, found = self.violations(spec)
        assert message == "Object is not valid"
        assert found == [
            ("/env/A/secret", "references an undefined secret"),
            ("/env/B/secret", "references an undefined secret"),
            ("/container/volumes(0)", "volume.secret must refer to an existing secret"),
        ]

    def test_command_required(self) -> None:
        assert self.violations({"id": "/a"})[1] == [
            ("/", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.")
        ]

    def test_enums_are_case_insensitive(self) -> None:
        """`mesos` is MESOS, as Marathon reads enums."""
        app = parse_app({"id": "/a", "cmd": "x", "container": {"type": "mesos"}})
        assert app.container is not None
        assert app.container.type is ContainerType.MESOS

    def test_unknown_fields_are_ignored(self) -> None:
        parse_app({"id": "/a", "cmd": "x", "healthChecks": [], "whatever": {"deep": 1}})

    def test_not_an_object(self) -> None:
        assert self.violations([]) == ("Invalid JSON", [("/", "error.expected.jsobject")])

    def test_unparseable_text(self) -> None:
        with pytest.raises(SpecError, match="Invalid JSON") as caught:
            load_spec('{"id": ')
        assert caught.value.to_json()["details"][0]["path"] == "/"


@pytest.mark.parametrize("bad", ["/a b", "/UPPER/x", "/a#$%^&*b", "/-start", "/end-"])
def test_app_id_pattern(bad: str) -> None:
    """The RAML reader's PathId pattern, checked as the id is read: Invalid JSON."""
    with pytest.raises(SpecError) as caught:
        parse_app({"id": bad, "cmd": "x"})
    assert caught.value.message == "Invalid JSON"
    assert caught.value.details[0] == ("/id", "error.pattern")


@pytest.mark.parametrize("good", ["/a", "a/b.c", "/my-app/v1.2", "/x/../y"])
def test_app_id_ok(good: str) -> None:
    parse_app({"id": good, "cmd": "x"})
